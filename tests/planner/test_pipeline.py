"""planner.pipeline: the stage logic on the real demo database, the real sandboxed executor and the real
checkpoint pools.

Pipeline-logic tests use two small backends defined here (a generator that returns the SQL listed in its
spec's options, a discriminator that scores by a rule in its options) so every branch (dedup, guard
rejection, execution errors, policies, cascades, deadlines) is exercised deterministically; the last test
runs the real embedded model end to end.
"""

from __future__ import annotations

import time

import pytest

from core.model import ErrorKind, Question, Score
from discriminators.base import DISCRIMINATORS
from generators.base import GENERATORS, GenerationResult
from planner.config import config_from_dict
from planner.pipeline import STAGES, DeadlineExceeded, Planner, PlanRequestError

GOOD = "SELECT count(*) FROM singer WHERE age > 30"


@GENERATORS.register("test-scripted")
class ScriptedGenerator:
    """Returns options.sqls (cycled to n) after options.sleep_s; counts tokens as words."""

    def __init__(self, spec=None, **_):
        self.name = spec.name
        self.sqls = list(spec.options.get("sqls", []))
        self.sleep_s = float(spec.options.get("sleep_s", 0))

    def generate(self, request):
        time.sleep(self.sleep_s)
        n = request.params.n
        sqls = [self.sqls[i % len(self.sqls)] for i in range(n)] if self.sqls else [""] * n
        return GenerationResult(sqls=sqls, raw=sqls, model=self.name, prompt_tokens=len(request.schema.split()),
                                completion_tokens=sum(len(s.split()) for s in sqls))


@DISCRIMINATORS.register("test-rule")
class RuleDiscriminator:
    """Score = options.scores[substring] for the first listed substring found in the SQL, else 0.5."""

    calls = 0

    def __init__(self, spec=None, **_):
        self.name = spec.name
        self.rules = dict(spec.options.get("scores", {}))

    def score(self, request):
        type(self).calls += 1
        out = []
        for sql in request.sqls:
            s = next((v for k, v in self.rules.items() if k in sql), 0.5)
            out.append(Score(score=s, verdict=s >= 0.5, discriminator=self.name, checkpoint=self.name,
                             prompt_tokens=10, completion_tokens=3))
        return out


def make_planner(tmp_path, sqls, scores=None, *, pairs=None, extra_gens=None, router=None, sleep_s=0.0, **defaults):
    gens = {"g": {"backend": "test-scripted", "options": {"sqls": sqls, "sleep_s": sleep_s},
                  "cost_per_1k_input": 1.0, "cost_per_1k_output": 2.0}}
    gens.update(extra_gens or {})
    data = {
        "generators": gens,
        "discriminators": {"d": {"backend": "test-rule", "options": {"scores": scores or {}},
                                 "cost_per_1k_input": 0.5, "cost_per_1k_output": 1.0}},
        "pairs": pairs or {"p": {"generator": "g", "discriminator": "d"}},
        "defaults": {"n": len(sqls) or 2, **defaults},
        "store_url": f"sqlite:///{tmp_path / 'store.db'}",
    }
    if router:
        data["router"] = router
    return Planner(config_from_dict(data, env={}))


def q(text="How many singers are older than 30?"):
    return Question(text=text, db_id="demo")


def test_stages_dedup_rejection_errors_and_accounting(tmp_path):
    sqls = [GOOD, "select COUNT(*) from singer where age>30;", "DROP TABLE singer", "",
            "SELECT nope FROM singer", "SELECT name FROM singer"]
    planner = make_planner(tmp_path, sqls, {"age > 30": 0.9, "name": 0.6, "nope": 0.99})
    seen = []
    planner.on_plan.append(lambda plan, ctx: seen.append((plan.id, ctx.question.db_id)))
    plan = planner.plan(q(), execute=True)

    assert plan.status == "ok" and plan.policy == "check-rerank"
    cands = [sc.candidate for sc in plan.candidates]
    assert len(cands) == 5  # the two spellings of GOOD collapse
    assert cands[0].sql == GOOD and cands[0].duplicates == 2 and cands[0].normalized
    drop = plan.candidates[1]
    assert drop.candidate.rejected and "not allowed" in drop.candidate.rejected
    assert drop.execution.error_kind == ErrorKind.REJECTED and not drop.scores  # never run, never judged
    assert plan.candidates[2].candidate.rejected  # the empty extraction
    bad = plan.candidates[3]
    assert bad.execution.ok is False and bad.execution.error_kind == ErrorKind.BINDER
    assert not bad.scores  # check-rerank only judges executable candidates (the 0.99 never counts)
    assert plan.chosen == 0 and plan.chosen_sql == GOOD
    assert plan.candidates[0].execution.rows == [[plan.preview.rows[0][0]]]
    assert plan.preview is not None and plan.preview.ok and plan.preview.columns
    assert set(plan.timings_ms) == set(STAGES) and plan.timings_ms["total"] >= plan.timings_ms["execute"]

    use = {(u.model, u.role): u for u in plan.usage}
    gen, disc = use[("g", "generator")], use[("d", "discriminator")]
    assert gen.completion_tokens == sum(len(s.split()) for s in sqls) and gen.calls == 1
    assert gen.cost == pytest.approx((gen.prompt_tokens * 1.0 + gen.completion_tokens * 2.0) / 1000)
    assert disc.prompt_tokens == 20 and disc.completion_tokens == 6  # 2 executable candidates judged
    assert plan.total_cost == pytest.approx(gen.cost + disc.cost)
    assert plan.route.router == "fixed" and plan.route.pair == "p" and plan.route.steps == ["p"]
    assert seen == [(plan.id, "demo")]
    assert all(sc.scores[-1].checkpoint == "d" for sc in plan.candidates if sc.scores)


def test_no_executable_candidate_is_explicit(tmp_path):
    planner = make_planner(tmp_path, ["SELECT missing FROM singer", "DELETE FROM singer", "SELECT * FROM nowhere"])
    for policy in ("rerank", "check-rerank", "vote", "hybrid"):
        plan = planner.plan(q(), policy=policy)
        assert plan.status == "no_executable_candidate", policy
        assert plan.chosen is None and plan.chosen_sql is None
        assert len(plan.errors) == 3 and any("rejected" in e for e in plan.errors)
        assert all(sc.execution is not None and not sc.execution.ok for sc in plan.candidates)


def test_rerank_may_choose_a_failing_candidate_but_says_so(tmp_path):
    planner = make_planner(tmp_path, ["SELECT nope FROM singer", GOOD], {"nope": 0.95, "age": 0.2})
    plan = planner.plan(q(), policy="rerank")
    assert plan.status == "chosen_not_executable" and plan.chosen == 0
    assert "does not execute" in plan.reason and plan.errors
    plan = planner.plan(q(), policy="check-rerank")
    assert plan.status == "ok" and plan.chosen_sql == GOOD


def test_vote_skips_the_discriminator_and_counts_duplicates(tmp_path):
    sqls = ["SELECT count(*) FROM singer", GOOD, "SELECT COUNT(*) FROM singer WHERE singer.age > 30",
            "select count(*) from singer where age > 30"]
    planner = make_planner(tmp_path, sqls)
    before = RuleDiscriminator.calls
    plan = planner.plan(q(), policy="vote")
    assert RuleDiscriminator.calls == before
    assert all(u.role == "generator" for u in plan.usage)
    assert plan.chosen_sql == GOOD  # 3 samples agree on its result vs 1
    assert "3 of 4" in plan.reason


@pytest.mark.parametrize("needs, exec_only, judged", [(False, False, []), (True, True, [0]), (True, False, [0, 1])])
def test_scoring_rule_comes_from_the_policy_metadata(tmp_path, monkeypatch, needs, exec_only, judged):
    """A newly registered policy is planned with no edit to the pipeline: which candidates the discriminator
    judges follows its needs_scores / executable_only; `first` (registered like any other) skips the check."""
    from planner.select import POLICIES, PolicyInfo, Selection

    monkeypatch.setitem(POLICIES._items, "test-best", lambda cs, ctx: Selection(max(range(len(cs)), key=lambda i: len(cs[i].scores)), "x"))
    monkeypatch.setitem(POLICIES._info, "test-best", PolicyInfo(summary="test", needs_scores=needs, executable_only=exec_only))
    planner = make_planner(tmp_path, [GOOD, "SELECT nope FROM singer", "DROP TABLE singer"])
    plan = planner.plan(q(), policy="test-best")
    assert [i for i, sc in enumerate(plan.candidates) if sc.scores] == judged
    plan = planner.plan(q(), policy="first")
    assert plan.chosen == 0 and plan.status == "ok" and not any(sc.scores for sc in plan.candidates)
    bad_first = make_planner(tmp_path, ["SELECT nope FROM singer", GOOD]).plan(q(), policy="first")
    assert bad_first.status == "chosen_not_executable" and bad_first.chosen == 0


def test_request_errors(tmp_path):
    from sqlbox.databases import UnknownDatabase

    planner = make_planner(tmp_path, [GOOD])
    with pytest.raises(UnknownDatabase, match="demo"):
        planner.plan(Question(text="x", db_id="atlantis"))
    with pytest.raises(PlanRequestError, match="unknown policy"):
        planner.plan(q(), policy="best")
    with pytest.raises(PlanRequestError, match="unknown pair"):
        planner.plan(q(), pair="nope")
    with pytest.raises(PlanRequestError, match="n: must be between"):
        planner.plan(q(), n=10_000)
    with pytest.raises(PlanRequestError, match="unknown router"):
        planner.plan(q(), router="oracle")
    with pytest.raises(PlanRequestError, match="not usable"):
        planner.plan(q(), router="carrot")  # carrot without a trained artifact
    with pytest.raises(Exception, match="router.name"):
        make_planner(tmp_path, [GOOD], router={"name": "carrot"})  # fails at startup, not per request
    with pytest.raises(PlanRequestError, match="empty"):
        planner.plan(Question(text="  ", db_id="demo"))


def test_deadline_bounds_the_plan(tmp_path):
    planner = make_planner(tmp_path, [GOOD], sleep_s=0.3)
    t = time.monotonic()
    with pytest.raises(DeadlineExceeded) as ei:
        planner.plan(q(), deadline_s=0.1)
    assert ei.value.stage in ("normalize", "execute") and time.monotonic() - t < 2.0
    assert planner.plan(q(), deadline_s=10).status == "ok"


def test_cascade_pools_candidates_and_rescored_on_one_scale(tmp_path):
    pytest.importorskip("routing.cascade")
    import routing.registry_all  # noqa: F401

    gens = {"g2": {"backend": "test-scripted", "options": {"sqls": [GOOD]}}}
    pairs = {"cheap": {"generator": "g", "discriminator": "d"}, "strong": {"generator": "g2", "discriminator": "d"}}
    planner = make_planner(tmp_path, ["SELECT nope FROM singer", "SELECT * FROM nowhere"], {"age": 0.9},
                           pairs=pairs, extra_gens=gens, router={"name": "cascade", "params": {"tau": 0.5}})
    plan = planner.plan(q())
    assert plan.route.router == "cascade"
    assert plan.route.steps == ["cheap", "strong"] and plan.route.escalated and plan.route.pair == "strong"
    assert [sc.candidate.source for sc in plan.candidates] == ["g", "g", "g2"]  # cheap step kept
    assert plan.status == "ok" and plan.chosen == 2
    assert plan.route.details["escalations"]
    # a confident cheap step does not escalate
    planner2 = make_planner(tmp_path, [GOOD], {"age": 0.9}, pairs=pairs, extra_gens=gens,
                            router={"name": "cascade", "params": {"tau": 0.5, "vote_margin": 0.0}})
    plan2 = planner2.plan(q())
    assert plan2.route.steps == ["cheap"] and not plan2.route.escalated
    assert plan2.route.details["planned_steps"] == ["cheap", "strong"]


def test_forced_pair_and_feedback_reaches_router(tmp_path):
    pairs = {"a": {"generator": "g", "discriminator": "d"}, "b": {"generator": "g", "discriminator": "d"}}
    planner = make_planner(tmp_path, [GOOD], pairs=pairs)
    plan = planner.plan(q(), pair="b")
    assert plan.route.pair == "b" and plan.route.router == "fixed"
    got = []
    planner.on_feedback.append(lambda p, c, s: got.append((p.id, c, s)))
    planner.feedback(plan, True, None)
    assert got == [(plan.id, True, None)]


def test_real_embedded_model_end_to_end(tmp_path):
    """The real tiny model for both roles on the demo database, with small budgets."""
    data = {"defaults": {"n": 2, "max_tokens": 48, "reasoning_budget": 32},
            "limits": {"deadline_s": 900, "max_deadline_s": 900},  # generous: CI machines may be busy
            "store_url": f"sqlite:///{tmp_path / 'store.db'}"}
    planner = Planner(config_from_dict(data, env={}))
    plan = planner.plan(q(), policy="rerank")
    assert plan.status in ("ok", "no_executable_candidate", "chosen_not_executable", "no_candidates")
    assert 1 <= len(plan.candidates) <= 2
    assert all(sc.execution is not None for sc in plan.candidates)
    gen = next(u for u in plan.usage if u.role == "generator")
    assert gen.prompt_tokens > 0 and gen.completion_tokens > 0 and gen.calls == 1
    for sc in plan.candidates:
        if not sc.candidate.rejected:
            s = sc.scores[-1]
            assert 0.0 <= s.score <= 1.0 and s.checkpoint
    if plan.status == "no_executable_candidate":
        assert plan.chosen is None and plan.errors


def test_progress_callback_reports_each_stage_and_never_fails_the_plan(tmp_path):
    planner = make_planner(tmp_path, [GOOD, "SELECT name FROM singer"], {"age > 30": 0.9})
    events = []
    plan = planner.plan(q(), progress=events.append)
    assert plan.status == "ok"
    done = [e["stage"] for e in events if e["state"] == "done"]
    assert done == ["route", "generate", "normalize", "execute", "discriminate", "select"]
    starts = [e["stage"] for e in events if e["state"] == "start"]
    assert starts == done  # every stage starts before it ends, in pipeline order
    for e in events:
        if e["state"] == "done":
            assert e["ms"] >= 0 and e["elapsed_ms"] >= e["ms"]
    gen_ms = next(e["ms"] for e in events if e["stage"] == "generate" and e["state"] == "done")
    assert gen_ms == pytest.approx(plan.timings_ms["generate"], abs=0.01)

    def broken(_ev):
        raise RuntimeError("listener bug")

    assert planner.plan(q(), progress=broken).status == "ok"

    events.clear()
    with pytest.raises(PlanRequestError):  # found by Planner.validate, before any stage starts
        planner.plan(q(), router="nope", progress=events.append)
    assert events == []


def test_schema_linking_modes_record_the_linked_subset(tmp_path):
    # auto on the small demo database: the whole schema fits the budget, no linking
    planner = make_planner(tmp_path, [GOOD])
    plan = planner.plan(q())
    assert plan.linking is None
    # on: the plan records the linked tables/columns and the generator saw only them
    planner = make_planner(tmp_path, [GOOD], schema_linking="on", linking_top_k=1)
    seen = []
    planner.on_plan.append(lambda plan, ctx: seen.append(ctx))
    plan = planner.plan(q())
    assert plan.status == "ok" and plan.linking is not None and plan.linking.mode == "on"
    assert plan.linking.tables and plan.linking.tables[0] == "singer"
    assert set(plan.linking.columns) == set(plan.linking.tables)
    assert 0 < plan.linking.prompt_tokens < plan.linking.full_tokens
    prompt = planner.schema_prompt("demo", q())
    assert "CREATE TABLE singer" in prompt and all(f"CREATE TABLE {t}" in prompt for t in plan.linking.tables)
    assert seen[0].schema_features["linked_tables"] == len(plan.linking.tables)
    assert planner.schema_prompt("demo") != prompt  # without a question: the whole schema


def test_start_sandbox_starts_a_worker_while_the_planner_starts(tmp_path):
    import time

    p = make_planner(tmp_path, ["SELECT count(*) FROM singer"])
    assert p.executor.pool.alive == 0  # by default the sandbox starts with the first call
    p.close()
    gens = {"g": {"backend": "test-scripted", "options": {"sqls": ["SELECT count(*) FROM singer"]}}}
    cfg = config_from_dict({"generators": gens, "discriminators": {"d": {"backend": "test-rule"}},
                            "pairs": {"p": {"generator": "g", "discriminator": "d"}},
                            "store_url": f"sqlite:///{tmp_path / 'store2.db'}"}, env={})
    p = Planner(cfg, start_sandbox=True)
    try:
        deadline = time.monotonic() + 60
        while p.executor.pool.alive < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.executor.pool.alive == 1  # up before any plan asked for it
        plan = p.plan(q(), n=1, policy="first")
        assert plan.status == "ok" and p.executor.pool.alive == 1
    finally:
        p.close()
