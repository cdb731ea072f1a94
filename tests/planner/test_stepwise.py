"""planner.stepwise: TRIM's step loop through the real pipeline, the real demo database and the real sandboxed
executor (the process reward's execution part runs there).

The loop's branches (hand-off, token accounting, fallback) run on a scripted step generator defined here (it
writes the listed steps and records every prefix it was asked to continue) and the rule discriminator of
tests/planner/test_pipeline.py's kind, so they are deterministic; the last test runs the real embedded model."""

from __future__ import annotations

import pytest

from core.model import Question, Score
from discriminators.base import DISCRIMINATORS
from generators.base import GENERATORS, GenerationResult, StepResult
from planner.config import config_from_dict
from planner.pipeline import Planner
from sqlbox.steps import prefix_for

STEP1 = "-- every singer\nWITH s1 AS (SELECT * FROM singer)"
BAD2 = "-- how many there are\nSELECT count(*) FROM no_such_table"
GOOD2 = "-- how many there are\nSELECT count(*) FROM s1"


@GENERATORS.register("test-steps")
class StepScriptedGenerator:
    """continue_step writes options.steps[k] for the k-th step of a chain (k = steps already in the prefix);
    every prefix it receives is recorded in `prefixes` (class-wide, by generator name). Tokens = words."""

    prefixes: dict[str, list[str]] = {}

    def __init__(self, spec=None, **_):
        self.name = spec.name
        self.steps = list(spec.options.get("steps", []))
        self.whole = spec.options.get("whole", "SELECT count(*) FROM singer")
        type(self).prefixes[self.name] = []

    def generate(self, request):
        sqls = [self.whole] * request.params.n
        return GenerationResult(sqls=sqls, raw=sqls, model=self.name, prompt_tokens=7, completion_tokens=5 * len(sqls))

    def continue_step(self, request):
        type(self).prefixes[self.name].append(request.prefix)
        k = sum(1 for line in request.prefix.split("\n") if line.startswith("--")) - 1
        text = self.steps[min(k, len(self.steps) - 1)]
        final = not text.rstrip().endswith(",") and "AS (" not in text.split("\n", 1)[1][:40]
        return StepResult(text=text, raw=text[2:], boundary="end" if final else "step", model=self.name,
                          prompt_tokens=100 + k, completion_tokens=len(text.split()))


@DISCRIMINATORS.register("test-step-rule")
class StepRuleDiscriminator:
    """P(correct) = 0.9 for every SQL (the execution part of the process reward tells good steps from bad)."""

    def __init__(self, spec=None, **_):
        self.name = spec.name

    def score(self, request):
        return [Score(score=0.9, verdict=True, discriminator=self.name, checkpoint=self.name, prompt_tokens=11,
                      completion_tokens=1) for _ in request.sqls]


def _planner(cheap_steps, strong_steps, *, k=0.5, whole="SELECT count(*) FROM singer", backend="test-steps",
             **router):
    cfg = config_from_dict({
        "generators": {"g-cheap": {"backend": backend, "options": {"steps": cheap_steps, "whole": whole},
                                   "cost_per_1k_output": 1.0},
                       "g-strong": {"backend": backend, "options": {"steps": strong_steps},
                                    "cost_per_1k_output": 10.0}},
        "discriminators": {"d": {"backend": "test-step-rule"}},
        "pairs": {"cheap": {"generator": "g-cheap", "discriminator": "d"},
                  "strong": {"generator": "g-strong", "discriminator": "d"}},
        "router": {"name": "trim", "params": {"k": k, **router}},
        "defaults": {"n": 1, "policy": "vote", "few_shot": 0},
    })
    return Planner(cfg)


def test_a_hand_off_continues_the_same_prefix_byte_for_byte_and_the_tokens_add_up():
    p = _planner([STEP1, BAD2], [GOOD2])
    try:
        plan = p.plan(Question(text="How many singers are there?", db_id="demo"))
    finally:
        p.close()
    t = plan.route.details["trim"]
    assert [s["pair"] for s in t["steps"]] == ["cheap", "strong"]
    assert [s["handed_off"] for s in t["steps"]] == [False, True]
    # the strong pair was asked for step 2 only, from exactly the prefix the cheap pair's draft continued
    cheap_prefixes = StepScriptedGenerator.prefixes["g-cheap"]
    strong_prefixes = StepScriptedGenerator.prefixes["g-strong"]
    assert strong_prefixes == [prefix_for([STEP1])] == [cheap_prefixes[1]]
    assert strong_prefixes[0] == "```sql\n" + STEP1 + "\n--"
    # the discarded draft is recorded, with the process reward that sent it away (its execution failed)
    draft = t["steps"][1]["draft"]
    assert draft["text"] == BAD2 and draft["reward"]["ok"] is False and draft["reward"]["exec_score"] == 0.0
    # the chain is the cheap step then the strong step, and it is the plan's answer (it runs: 6 singers... any count)
    assert plan.status == "ok" and plan.candidates[plan.chosen].candidate.source == "trim:cheap+strong"
    assert plan.candidates[plan.chosen].candidate.sql == STEP1 + "\n" + GOOD2
    # tokens: the cheap generator is charged its kept step AND its discarded draft; the strong one its one step
    usage = {(u.model, u.role): u for u in plan.usage}
    w = lambda s: len(s.split())  # noqa: E731
    assert usage[("g-cheap", "generator")].completion_tokens == w(STEP1) + w(BAD2) == \
        t["usage"]["cheap"]["completion_tokens"]
    assert t["usage"]["cheap"]["discarded_tokens"] == w(BAD2)
    assert usage[("g-strong", "generator")].completion_tokens == w(GOOD2) == t["strong_tokens"]
    assert usage[("g-cheap", "generator")].calls == 2 and usage[("g-strong", "generator")].calls == 1
    # the process reward scored both cheap steps and the strong rewrite: 3 calls, priced as role "prm"
    assert usage[("d", "prm")].calls == t["prm"]["calls"] == 3
    assert plan.total_cost == pytest.approx(sum(u.cost for u in plan.usage))
    assert usage[("g-strong", "generator")].cost == pytest.approx(10.0 * w(GOOD2) / 1000)


def test_below_the_threshold_nothing_is_handed_off_and_k1_never_drafts():
    p = _planner([STEP1, GOOD2], ["-- all\nSELECT 1"], k=0.0)
    try:
        plan = p.plan(Question(text="How many singers are there?", db_id="demo"))
        assert [s["pair"] for s in plan.route.details["trim"]["steps"]] == ["cheap", "cheap"]
        assert plan.route.details["trim"]["prm"]["calls"] == 0  # cheap only needs no process reward
        assert StepScriptedGenerator.prefixes["g-strong"] == []
    finally:
        p.close()
    p = _planner([STEP1, GOOD2], ["-- all\nSELECT count(*) FROM singer"], k=1.0)
    try:
        plan = p.plan(Question(text="How many singers are there?", db_id="demo"))
        assert [s["pair"] for s in plan.route.details["trim"]["steps"]] == ["strong"]
        assert StepScriptedGenerator.prefixes["g-cheap"] == []  # strong only: the cheap pair drafts nothing
    finally:
        p.close()


def test_a_chain_that_does_not_parse_falls_back_to_the_whole_query_path_with_a_reason():
    p = _planner(["-- oops\nSELEC broken things FROM"], ["-- x\nSELECT 1"], k=0.0,
                 whole="SELECT count(*) FROM singer")
    try:
        plan = p.plan(Question(text="How many singers are there?", db_id="demo"))
    finally:
        p.close()
    t = plan.route.details["trim"]
    assert "does not parse" in t["fallback"]
    assert any("trim:" in w and "whole-query path" in w for w in plan.warnings)
    assert plan.status == "ok" and plan.chosen_sql and plan.candidates[plan.chosen].candidate.source == "g-cheap"


def test_a_hostile_step_is_guarded_as_part_of_the_whole_chain():
    hostile = "-- read a file\nSELECT * FROM s1 UNION SELECT readfile('/etc/passwd'), 1, 2, 3, 4, 5, 6"
    p = _planner([STEP1, hostile], ["-- x\nSELECT 1"], k=0.0)
    try:
        plan = p.plan(Question(text="How many singers are there?", db_id="demo"))
    finally:
        p.close()
    chain = [sc for sc in plan.candidates if sc.candidate.source.startswith("trim")]
    assert chain and chain[0].candidate.rejected  # the guard refused the chain: it never ran
    assert plan.chosen is None or not plan.candidates[plan.chosen].candidate.source.startswith("trim")


@GENERATORS.register("test-prose-steps")
class ProseScriptedGenerator:
    """continue_step writes options.steps[k] for the k-th prose step (k = paragraphs already in the prefix); the
    prefixes it receives are recorded in `prefixes` (by generator name). Tokens = words."""

    prefixes: dict[str, list[str]] = {}

    def __init__(self, spec=None, **_):
        self.name = spec.name
        self.steps = list(spec.options.get("steps", []))
        type(self).prefixes[self.name] = []

    def generate(self, request):
        sqls = ["SELECT count(*) FROM singer"] * request.params.n
        return GenerationResult(sqls=sqls, raw=sqls, model=self.name, prompt_tokens=7, completion_tokens=5)

    def continue_step(self, request):
        assert request.kind == "prose"
        type(self).prefixes[self.name].append(request.prefix)
        k = request.prefix.count("\n\n")
        text = self.steps[min(k, len(self.steps) - 1)]
        return StepResult(text=text, raw=text, boundary="eos" if text.endswith("```") else "step", model=self.name,
                          prompt_tokens=100 + k, completion_tokens=len(text.split()))


def _prose_plan(cheap_steps, strong_steps, **router):
    """A plan of the trim router with prose steps, each tier writing its listed paragraphs."""
    p = _planner(cheap_steps, strong_steps, backend="test-prose-steps", step_kind="prose", **router)
    try:
        return p.plan(Question(text="How many singers are there?", db_id="demo"))
    finally:
        p.close()


def test_prose_steps_hand_off_the_paragraph_whose_sql_fails_and_keep_the_prefix():
    think = "First find every singer."
    bad = "```sql\nSELECT count(*) FROM no_such_table\n```"
    good = "```sql\nSELECT count(*) FROM singer\n```"
    plan = _prose_plan([think, bad], ["unused", good], k=0.5)
    t = plan.route.details["trim"]
    assert t["step_kind"] == "prose" and [s["pair"] for s in t["steps"]] == ["cheap", "strong"]
    # the paragraph runs nothing (verdict part only); the cheap SQL paragraph errors, so it is handed off
    assert t["steps"][0]["reward"]["parts"] == ["verdict"] and t["steps"][0]["reward"]["ok"] is None
    assert t["steps"][1]["draft"]["reward"]["ok"] is False
    assert ProseScriptedGenerator.prefixes["g-strong"] == [think + "\n\n"] == ProseScriptedGenerator.prefixes["g-cheap"][1:]
    assert t["answer"] == "SELECT count(*) FROM singer"
    assert plan.status == "ok" and plan.chosen_sql == "SELECT count(*) FROM singer"
    assert plan.candidates[plan.chosen].candidate.source == "trim:cheap+strong"


def test_a_prose_trace_without_sql_falls_back_to_the_whole_query_path():
    plan = _prose_plan(["There are six singers."], ["There are six singers."], k=0.0, max_steps=2)
    t = plan.route.details["trim"]
    assert "no ```sql block after 2 prose step(s)" in t["fallback"]
    assert plan.status == "ok" and plan.candidates[plan.chosen].candidate.source == "g-cheap"


@pytest.mark.slow
def test_trim_on_the_real_embedded_model_end_to_end():
    cfg = config_from_dict({
        "generators": {"zero": {"backend": "embedded", "options": {"constrained": False}},
                       "constrained": {"backend": "embedded", "options": {"constrained": True}}},
        "discriminators": {"embedded": {"backend": "embedded", "options": {"mode": "cot"}}},
        "pairs": {"cheap": {"generator": "zero", "discriminator": "embedded", "few_shot": 0},
                  "strong": {"generator": "constrained", "discriminator": "embedded"}},
        "router": {"name": "trim", "params": {"k": 0.5, "step_tokens": 64, "max_steps": 3}},
        "defaults": {"n": 1, "policy": "vote", "reasoning_budget": 16},
    })
    p = Planner(cfg)
    try:
        plan = p.plan(Question(text="How many singers are there?", db_id="demo"))
    finally:
        p.close()
    t = plan.route.details["trim"]
    assert t["steps"] and all(s["pair"] in ("cheap", "strong") for s in t["steps"])
    usage = {(u.model, u.role): u for u in plan.usage}
    cheap_tokens = sum(s["tokens"] for s in t["steps"] if s["pair"] == "cheap") + \
        sum(s["draft"]["tokens"] for s in t["steps"] if s.get("draft"))
    if t["fallback"] is None:
        assert usage[("zero", "generator")].completion_tokens == cheap_tokens
    strong = sum(s["tokens"] for s in t["steps"] if s["pair"] == "strong")
    assert t["strong_tokens"] == strong
    assert (("constrained", "generator") in usage) == (strong > 0)
