"""Cascade router: the escalation rule over pooled candidates executed for real (DuckDB sandbox on the
demo database): nothing executes / low soft score / small vote margin escalate; confident steps stop."""

from __future__ import annotations

import pytest

from core.model import Candidate, Plan, Question, Score, ScoredCandidate
from core.specs import ModelSpec, PairSpec
from routing.cascade import CascadeRouter, escalation_signals
from routing.router import ROUTERS, Escalation, RouteContext
from sqlbox.databases import registry_for
from sqlbox.executor import Executor

GOOD = "SELECT count(*) FROM singer WHERE age > 30"
GOOD2 = "select COUNT(*) from singer where age>30"
OTHER = "SELECT count(*) FROM singer"
BROKEN = "SELECT count(*) FROM no_such_table"
WRITE = "DELETE FROM singer"
LADDER = ["cheap", "strong"]


@pytest.fixture(scope="module")
def executor():
    ex = Executor(registry_for())
    yield ex
    ex.close()


def _cands(executor, sqls, scores=None):
    out = []
    for i, sql in enumerate(sqls):
        sc = [Score(score=scores[i])] if scores else []
        out.append(ScoredCandidate(candidate=Candidate(sql=sql, source="cheap-gen"), execution=executor.execute("demo", sql),
                                   scores=sc))
    return out


def _ctx() -> RouteContext:
    models = {
        "small": ModelSpec(name="small", role="generator", cost_per_1k_input=0.0001, cost_per_1k_output=0.0002),
        "big": ModelSpec(name="big", role="generator", cost_per_1k_input=0.01, cost_per_1k_output=0.03),
        "judge": ModelSpec(name="judge", role="discriminator"),
    }
    pairs = {"cheap": PairSpec(name="cheap", generator="small", discriminator="judge"),
             "strong": PairSpec(name="strong", generator="big", discriminator="judge")}
    return RouteContext(question=Question(text="How many singers are older than 30?", db_id="demo"), pairs=pairs,
                        models=models)


def _plan(router, cands):
    d = router.decide(_ctx())
    return Plan(question=_ctx().question, route=d, candidates=cands)


def test_decision_lists_the_ladder_with_expected_cost():
    r = ROUTERS.create("cascade", tau=0.6, vote_margin=0.3, escalation_rate=0.5, quality={"cheap": 0.7})
    d = r.decide(_ctx())
    assert d.router == "cascade" and d.pair == "cheap" and d.steps == ["cheap", "strong"]
    cheap = (1000 * 0.0001 + 200 * 0.0002) / 1000
    strong = (1000 * 0.01 + 200 * 0.03) / 1000
    assert d.predicted_cost == pytest.approx(cheap + 0.5 * strong)
    assert d.predicted_quality == 0.7
    assert CascadeRouter(ladder=["strong"]).decide(_ctx()).steps == ["strong"]
    with pytest.raises(ValueError, match="unknown pairs"):
        CascadeRouter(ladder=["cheap", "huge"]).decide(_ctx())
    with pytest.raises(ValueError):
        CascadeRouter(tau=2)


def test_escalates_when_nothing_executes(executor):
    r = CascadeRouter()
    plan = _plan(r, _cands(executor, [BROKEN, WRITE], [0.9, 0.9]))
    assert not escalation_signals(plan.candidates)["executes"]
    before = plan.model_dump()
    esc = r.should_escalate(plan, 0, ["cheap", "strong"])
    assert esc.escalate and "no candidate executes" in esc.reason
    assert esc.signals["executes"] is False and esc.signals["n_candidates"] == 2
    assert plan.model_dump() == before  # the router returns its signals; the pipeline records them


def test_escalates_on_low_soft_score(executor):
    r = CascadeRouter(tau=0.5, vote_margin=0.0)
    esc = r.should_escalate(_plan(r, _cands(executor, [GOOD, GOOD2], [0.3, 0.2])), 0, LADDER)
    assert esc.escalate and "tau" in esc.reason
    assert not r.should_escalate(_plan(r, _cands(executor, [GOOD, GOOD2], [0.8, 0.2])), 0, LADDER).escalate


def test_escalates_on_small_vote_margin(executor):
    r = CascadeRouter(tau=0.0, vote_margin=0.3)
    split = _cands(executor, [GOOD, OTHER, BROKEN])  # two executable, different results: margin 0
    sig = escalation_signals(split)
    assert sig["n_clusters"] == 2 and sig["margin"] == 0.0 and sig["top_score"] is None
    assert r.should_escalate(_plan(r, split), 0, LADDER).escalate
    agree = _cands(executor, [GOOD, GOOD2, OTHER])  # 2 of 3 agree: margin 1/3
    assert escalation_signals(agree)["margin"] == pytest.approx(1 / 3)
    esc = r.should_escalate(_plan(r, agree), 0, LADDER)
    assert not esc.escalate and "confident" in esc.reason and esc.signals["margin"] == pytest.approx(1 / 3)


def test_never_escalates_past_the_last_step(executor):
    r = CascadeRouter()
    plan = _plan(r, _cands(executor, [BROKEN]))
    assert r.should_escalate(plan, 1, LADDER) == Escalation(False, "last step of the cascade")
    assert r.should_escalate(plan, 0, ["cheap"]) == Escalation(False, "last step of the cascade")  # the ladder
    # is an argument: the plan's own route is not read for it
