"""planner.plans (PlanStore on SQLite files) and planner.metrics (Prometheus text)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect

from core.model import (
    Candidate,
    ExecutionResult,
    Plan,
    Question,
    RouteDecision,
    Score,
    ScoredCandidate,
    TokenUsage,
)
from planner.metrics import Counter, Histogram, ServiceMetrics
from planner.plans import PlanStore, UnknownPlan


def make_plan(text: str = "How many singers?") -> Plan:
    sc = ScoredCandidate(
        candidate=Candidate(sql="SELECT count(*) FROM singer", source="g", duplicates=2),
        execution=ExecutionResult(ok=True, columns=["n"], rows=[[6]], row_count=1, fingerprint="f1"),
        scores=[Score(score=0.75, verdict=True, discriminator="d", checkpoint="d")],
    )
    return Plan(question=Question(text=text, db_id="demo"), chosen=0, chosen_sql=sc.candidate.sql,
                route=RouteDecision(pair="p", generator="g", discriminator="d", steps=["p"]), candidates=[sc],
                usage=[TokenUsage(model="g", role="generator", prompt_tokens=10, completion_tokens=5, cost=0.01)],
                total_cost=0.01, timings_ms={"total": 12.5, "generate": 10.0})


def test_save_get_roundtrip_and_columns(tmp_path):
    store = PlanStore(f"sqlite:///{tmp_path / 's.db'}")
    plan = make_plan()
    store.save(plan)
    assert store.get(plan.id) == plan
    assert store.exists(plan.id) and store.count() == 1
    cols = {c["name"] for c in inspect(store.engine).get_columns("plans")}
    assert {"id", "created_at", "db_id", "question", "status", "chosen_sql", "policy", "pair", "total_cost",
            "plan_json"} <= cols
    fcols = {c["name"] for c in inspect(store.engine).get_columns("feedback")}
    assert {"id", "plan_id", "correct", "corrected_sql", "created_at"} <= fcols


def test_a_plan_written_by_a_newer_version_is_still_read(tmp_path):
    """Rolling upgrade: a newer replica stored fields this version does not know (at the top and inside a
    candidate); this version reads the plan without them. Anything else invalid still fails."""
    import json

    from pydantic import ValidationError
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from planner.plans import PlanRow, load_plan

    store = PlanStore(f"sqlite:///{tmp_path / 's.db'}")
    plan = make_plan()
    store.save(plan)
    data = json.loads(plan.model_dump_json())
    data["from_the_future"] = {"x": 1}
    data["candidates"][0]["candidate"]["newer_field"] = 0.5
    with Session(store.engine) as s:
        s.execute(update(PlanRow).where(PlanRow.id == plan.id).values(plan_json=json.dumps(data)))
        s.commit()
    assert store.get(plan.id) == plan and store.recent()[0] == plan
    data["chosen"] = "not an index"
    with pytest.raises(ValidationError):
        load_plan(json.dumps(data))


def test_unknown_plan_and_feedback_validation(tmp_path):
    store = PlanStore(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(UnknownPlan, match="unknown plan id 'nope'"):
        store.get("nope")
    with pytest.raises(UnknownPlan):
        store.add_feedback("nope", correct=True)
    store.save(plan := make_plan())
    with pytest.raises(ValueError, match="correct"):
        store.add_feedback(plan.id)


def test_feedback_and_persistence_across_reopen(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = PlanStore(url)
    plan = make_plan()
    store.save(plan)
    f1 = store.add_feedback(plan.id, correct=False, corrected_sql="SELECT count(*) FROM singer WHERE age > 30")
    f2 = store.add_feedback(plan.id, correct=True)
    store.close()
    again = PlanStore(url)  # a "restart": new engine on the same file
    assert again.get(plan.id) == plan
    fb = again.feedback_for(plan.id)
    assert [f.id for f in fb] == [f1.id, f2.id]
    assert fb[0].correct is False and fb[0].corrected_sql.endswith("age > 30")
    assert fb[1].correct is True and fb[1].created_at.tzinfo is not None
    assert [p.id for p in again.recent(5)] == [plan.id]


def test_concurrent_saves(tmp_path):
    store = PlanStore(f"sqlite:///{tmp_path / 's.db'}")
    plans = [make_plan(f"q{i}") for i in range(24)]
    threads = [threading.Thread(target=store.save, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 24
    assert all(store.get(p.id).question.text == p.question.text for p in plans)


def test_metrics_text_format():
    c = Counter("x_total", "help x", ("a",))
    c.inc(a="1")
    c.inc(2, a='q"u')
    text = "\n".join(c.render())
    assert "# TYPE x_total counter" in text and 'x_total{a="1"} 1' in text and 'x_total{a="q\\"u"} 2' in text
    with pytest.raises(ValueError):
        c.inc(-1, a="1")
    h = Histogram("lat_seconds", "latency", ("stage",), buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        h.observe(v, stage="s")
    lines = h.render()
    assert 'lat_seconds_bucket{stage="s",le="0.1"} 1' in lines
    assert 'lat_seconds_bucket{stage="s",le="1"} 2' in lines
    assert 'lat_seconds_bucket{stage="s",le="+Inf"} 3' in lines
    assert 'lat_seconds_count{stage="s"} 3' in lines and 'lat_seconds_sum{stage="s"} 5.55' in lines


def test_service_metrics_observe_plan_thread_safe():
    m = ServiceMetrics()
    plan = make_plan()
    threads = [threading.Thread(target=lambda: [m.observe_plan(plan) for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.plans.value(status="ok", policy="check-rerank") == 200
    assert m.tokens.value(model="g", role="generator", kind="prompt") == 2000
    assert m.stage_seconds.count(stage="total") == 200
    text = m.render()
    assert 'sqlarbiter_cost_total{model="g",role="generator"} 2' in text
    assert 'sqlarbiter_candidates_total{outcome="ok"} 200' in text
