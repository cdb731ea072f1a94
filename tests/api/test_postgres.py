"""Plans and feedback persisted in a real PostgreSQL (127.0.0.1:5432, user postgres, trust auth): a throwaway
database per run, dropped afterwards. Skips, saying why, only when no server answers."""

from __future__ import annotations

import uuid

import pytest

from core.model import Candidate, ExecutionResult, Plan, Question, RouteDecision, ScoredCandidate

pytestmark = pytest.mark.postgres
PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
Q = "How many singers are older than 30?"


@pytest.fixture(scope="module")
def pg_url():
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL server answers on 127.0.0.1:5432: {str(e).splitlines()[0]}")
    name = f"sqlarbiter_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _plan(text: str = "q?") -> Plan:
    sc = ScoredCandidate(candidate=Candidate(sql="SELECT 1", source="g"),
                         execution=ExecutionResult(ok=True, columns=["1"], rows=[[1]], row_count=1))
    return Plan(question=Question(text=text, db_id="demo"), chosen=0, chosen_sql="SELECT 1", candidates=[sc],
                route=RouteDecision(pair="p", generator="g", discriminator="d"), total_cost=0.25)


def test_plan_store_on_postgres(pg_url):
    from planner.plans import PlanStore, UnknownPlan

    store = PlanStore(pg_url)
    assert store.engine.dialect.name == "postgresql"
    plan = _plan()
    store.save(plan)
    f = store.add_feedback(plan.id, correct=False, corrected_sql="SELECT 2")
    store.close()
    again = PlanStore(pg_url)  # a new engine: only committed data is visible
    assert again.get(plan.id) == plan
    assert [(x.id, x.correct, x.corrected_sql) for x in again.feedback_for(plan.id)] == [(f.id, False, "SELECT 2")]
    with pytest.raises(UnknownPlan):
        again.add_feedback("missing", correct=True)
    again.close()


def test_service_on_postgres_survives_restart(pg_url, make_client, make_config):
    c1 = make_client(make_config(store=pg_url))
    r = c1.post("/plan", json={"question": Q, "db_id": "demo", "n": 1})
    assert r.status_code == 200, r.text
    plan = Plan.model_validate(r.json())
    assert c1.post("/feedback", json={"plan_id": plan.id, "correct": True}).status_code == 200
    c1.__exit__(None, None, None)
    c2 = make_client(make_config(store=pg_url))
    got = c2.get(f"/plans/{plan.id}")
    assert got.status_code == 200 and Plan.model_validate(got.json()) == plan
    assert c2.app.state.store.engine.dialect.name == "postgresql"
    assert [x.correct for x in c2.app.state.store.feedback_for(plan.id)] == [True]
