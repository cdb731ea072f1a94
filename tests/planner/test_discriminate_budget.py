"""The discriminate stage scaled to the disagreement and bounded in time (issue 31): one representative per result
cluster, no discriminator when a single executable cluster remains and the policy does not need it, a per-call
deadline from the plan's deadline and `limits.discriminate_s`, and a Plan that says all of it."""

from __future__ import annotations

import time

import pytest

from core.model import Plan, Question, Score
from discriminators.base import DISCRIMINATORS
from generators.base import GENERATORS, GenerationResult
from planner.config import config_from_dict
from planner.pipeline import Planner

GOOD = "SELECT count(*) FROM singer WHERE age > 30"
SAME = "SELECT count(*) FROM singer WHERE age > 30 AND 1 = 1"  # another SQL, the same result
OTHER = "SELECT count(*) FROM singer"


@GENERATORS.register("test31-scripted")
class Scripted:
    def __init__(self, spec=None, **_):
        self.name = spec.name
        self.sqls = list(spec.options.get("sqls", []))

    def generate(self, request):
        sqls = [self.sqls[i % len(self.sqls)] for i in range(request.params.n)]
        return GenerationResult(sqls=sqls, raw=sqls, model=self.name, prompt_tokens=1, completion_tokens=1)


@DISCRIMINATORS.register("test31-recording")
class Recording:
    """Scores 0.9 for SQL containing "age", else 0.2; records every request (its SQLs and deadline)."""

    seen: list = []

    def __init__(self, spec=None, **_):
        self.name = spec.name

    def score(self, request):
        type(self).seen.append((list(request.sqls), request.deadline, time.monotonic()))
        return [Score(score=0.9 if "age" in s else 0.2, verdict="age" in s, discriminator=self.name,
                      verdict_kind="natural", reasoning_tokens=3, completion_tokens=3) for s in request.sqls]


def planner(tmp_path, sqls, *, disc=None, limits=None, **defaults):
    data = {"generators": {"g": {"backend": "test31-scripted", "options": {"sqls": sqls}}},
            "discriminators": {"d": disc or {"backend": "test31-recording"}},
            "pairs": {"p": {"generator": "g", "discriminator": "d"}},
            "defaults": {"n": len(sqls), **defaults}, "limits": limits or {},
            "store_url": f"sqlite:///{tmp_path / 'store.db'}"}
    return Planner(config_from_dict(data, env={}))


def q():
    return Question(text="How many singers are older than 30?", db_id="demo")


def test_one_representative_per_result_cluster(tmp_path):
    Recording.seen.clear()
    plan = planner(tmp_path, [GOOD, SAME, OTHER]).plan(q())
    assert [sqls for sqls, _, _ in Recording.seen] == [[GOOD, OTHER]]  # SAME shares GOOD's result
    (step,) = plan.discrimination
    assert (step.targets, step.scored, step.clusters, step.per_cluster) == (3, 2, 2, True)
    assert step.skipped is None and step.verdicts == {"natural": 2} and step.reasoning_tokens == 6
    good, same, other = plan.candidates
    assert good.scores[-1].represented_by is None and other.scores[-1].represented_by is None
    assert same.scores[-1].represented_by == 0 and same.scores[-1].score == good.scores[-1].score
    assert plan.chosen_sql == GOOD
    assert Plan.model_validate_json(plan.model_dump_json()) == plan  # the new fields round-trip


def test_every_sql_when_per_cluster_is_off(tmp_path):
    Recording.seen.clear()
    plan = planner(tmp_path, [GOOD, SAME, OTHER], score_per_cluster=False).plan(q())
    assert [sqls for sqls, _, _ in Recording.seen] == [[GOOD, SAME, OTHER]]
    assert plan.discrimination[0].scored == 3 and not plan.discrimination[0].per_cluster


@pytest.mark.parametrize("policy, runs", [("check-rerank", False), ("hybrid", False), ("rerank", True)])
def test_a_single_executable_cluster_skips_the_discriminator_when_the_policy_allows(tmp_path, policy, runs):
    Recording.seen.clear()
    plan = planner(tmp_path, [GOOD, SAME, "SELECT nope FROM singer"]).plan(q(), policy=policy)
    (step,) = plan.discrimination
    assert bool(Recording.seen) == runs
    if runs:  # rerank may still choose the failing candidate by score: it declares that it needs scores
        assert step.skipped is None and step.scored == 2
    else:
        assert step.scored == 0 and "share one result" in step.skipped and policy in step.skipped
        assert not any(sc.scores for sc in plan.candidates)
        assert plan.status == "ok" and plan.chosen_sql == GOOD


def test_vote_says_it_needs_no_scores(tmp_path):
    plan = planner(tmp_path, [GOOD, OTHER]).plan(q(), policy="vote")
    assert plan.discrimination[0].skipped == "policy 'vote' needs no scores"
    plan = planner(tmp_path, ["SELECT nope FROM singer"]).plan(q())  # check-rerank with nothing executable
    assert plan.discrimination[0].skipped == "no candidate to judge"


def test_each_call_gets_a_deadline_from_limits_and_the_plans_deadline(tmp_path):
    Recording.seen.clear()
    p = planner(tmp_path, [GOOD, OTHER], limits={"discriminate_s": 2.5})
    plan = p.plan(q(), deadline_s=60)
    (_, deadline, at), = Recording.seen
    assert deadline is not None and 2.0 < deadline - at <= 2.5
    assert plan.discrimination[0].time_budget_s == 2.5
    Recording.seen.clear()
    plan = p.plan(q(), deadline_s=3.0)  # less left of the plan than the stage's share: the deadline wins
    (_, deadline, at), = Recording.seen
    budget = plan.discrimination[0].time_budget_s
    assert budget < 2.0 and deadline - at <= budget + 1e-3  # the plan's remaining time less the reserve (1 s)


def test_the_real_model_runs_out_of_time_is_forced_and_the_plan_says_so(tmp_path):
    """The embedded SmolLM2-135M as the discriminator with a tiny time budget: every call stops after the prefill's
    token, its verdict is forced, and the Plan records it per candidate and per stage."""
    plan = planner(tmp_path, [GOOD, OTHER], disc={"backend": "embedded", "options": {"mode": "cot"}},
                   limits={"discriminate_s": 0.001, "deadline_s": 600, "max_deadline_s": 600}).plan(q())
    (step,) = plan.discrimination
    assert step.scored == 2 and step.ran_out_time == 2 and step.verdicts == {"forced": 2}
    assert step.time_budget_s == 0.001 and step.token_budget and step.reasoning_tokens == 2
    for sc in plan.candidates:
        s = sc.scores[-1]
        assert s.ran_out == "time" and s.verdict_kind == "forced" and s.reasoning_tokens == 1
        assert s.verdict is not None and 0.0 <= s.score <= 1.0
    assert plan.status == "ok"


def test_budgets_by_device():
    from planner.config import (
        CPU_DISCRIMINATE_S,
        CPU_REASONING_BUDGET,
        GPU_REASONING_BUDGET,
        discriminate_s_for,
        reasoning_budget_for,
    )

    cfg = config_from_dict({}, env={})
    emb = cfg.discriminators["embedded"]
    server = emb.model_copy(update={"backend": "openai-cot"})
    assert reasoning_budget_for(cfg, emb) == CPU_REASONING_BUDGET and discriminate_s_for(cfg, emb) == CPU_DISCRIMINATE_S
    assert reasoning_budget_for(cfg, server) == GPU_REASONING_BUDGET == 512 and discriminate_s_for(cfg, server) is None
    set_ = config_from_dict({"defaults": {"reasoning_budget": 96}, "limits": {"discriminate_s": 7}}, env={})
    assert reasoning_budget_for(set_, emb) == 96 and discriminate_s_for(set_, server) == 7.0


def test_generation_budget_by_device():
    from planner.config import CPU_GENERATE_S, generate_s_for

    cfg = config_from_dict({}, env={})
    emb = cfg.generators["embedded"]
    assert generate_s_for(cfg, emb) == CPU_GENERATE_S
    assert generate_s_for(cfg, emb.model_copy(update={"backend": "openai"})) is None  # a server: only the deadline
    assert generate_s_for(config_from_dict({"limits": {"generate_s": 9}}, env={}), emb) == 9.0


@pytest.mark.slow
def test_a_generation_that_runs_out_of_time_drops_its_samples_and_the_plan_says_so():
    """The real embedded generator with a budget too small to finish anything: no 5xx, no candidate, and the Plan
    records the budget, the dropped samples and why."""
    p = Planner(config_from_dict({"limits": {"generate_s": 0.001}, "defaults": {"n": 2}}, env={}))
    try:
        plan = p.plan(Question(text="How many singers are older than 30?", db_id="demo"))
    finally:
        p.close()
    (g,) = plan.route.details["generation"]
    assert g == {"generator": "embedded", "samples": 2, "time_budget_s": 0.001, "dropped": {"time": 2}}
    assert any("time budget" in n for n in plan.route.details["generation_notes"])
    (c,) = [sc.candidate for sc in plan.candidates]  # the two dropped samples: one candidate, saying why
    assert c.rejected.startswith("dropped: ") and "time budget" in c.rejected and c.duplicates == 2
    assert plan.chosen is None and plan.status != "ok"
