"""Persistence across an app restart (same SQLite file, new app), and API-key auth."""

from __future__ import annotations

from core.model import Plan
from planner.plans import PlanStore

Q = "How many singers are older than 30?"


def test_plans_and_feedback_survive_restart(make_client, make_config, tmp_path):
    store_file = tmp_path / "persist.db"
    cfg = make_config(store=store_file)
    c1 = make_client(cfg)
    r = c1.post("/plan", json={"question": Q, "db_id": "demo", "n": 1})
    assert r.status_code == 200, r.text
    plan = Plan.model_validate(r.json())
    assert c1.post("/feedback", json={"plan_id": plan.id, "correct": True}).status_code == 200
    c1.__exit__(None, None, None)  # shut the first app down

    c2 = make_client(make_config(store=store_file))  # a new app on the same file
    got = c2.get(f"/plans/{plan.id}")
    assert got.status_code == 200 and Plan.model_validate(got.json()) == plan
    fb = PlanStore(f"sqlite:///{store_file}").feedback_for(plan.id)
    assert [f.correct for f in fb] == [True]


def test_api_key_auth(make_client):
    c = make_client(api_key="s3cret")
    assert c.get("/health").status_code == 200
    assert c.get("/docs").status_code == 200 and c.get("/openapi.json").status_code == 200
    r = c.get("/databases")
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
    assert c.post("/plan", json={"question": Q, "db_id": "demo"}).status_code == 401
    assert c.get("/databases", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/databases", headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.get("/databases", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/databases", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_no_auth_without_key(make_client):
    c = make_client()
    assert c.get("/databases").status_code == 200
