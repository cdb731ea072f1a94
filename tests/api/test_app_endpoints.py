"""Every endpoint of the real ASGI app with the real embedded model (small budgets) and demo database."""

from __future__ import annotations

from core.model import Plan

QUESTION = "How many singers are older than 30?"


def test_plan_then_get_then_feedback_roundtrip(shared_client):
    c = shared_client
    r = c.post("/plan", json={"question": QUESTION, "db_id": "demo", "n": 2, "policy": "rerank", "execute": True})
    assert r.status_code == 200, r.text
    plan = Plan.model_validate(r.json())
    assert plan.question.text == QUESTION and plan.policy == "rerank"
    assert 1 <= len(plan.candidates) <= 2
    assert set(plan.timings_ms) >= {"route", "generate", "normalize", "execute", "discriminate", "select", "total"}
    assert {u.role for u in plan.usage} >= {"generator"}
    assert plan.route is not None and plan.route.pair == "embedded"
    if plan.status == "ok":
        assert plan.preview is not None and plan.preview.ok
    else:
        assert plan.chosen is None or plan.status == "chosen_not_executable"

    got = c.get(f"/plans/{plan.id}")
    assert got.status_code == 200 and Plan.model_validate(got.json()) == plan

    fb = c.post("/feedback", json={"plan_id": plan.id, "correct": False})
    assert fb.status_code == 200, fb.text
    body = fb.json()
    assert body["plan_id"] == plan.id and body["correct"] is False and body["label_source"] == "client"
    assert body["forwarded_to_router"] == "fixed"
    from routing.outcomes import OutcomeStore  # the service logs each plan's outcome, labelled by feedback

    logged = [o for o in OutcomeStore(c.app.state.store.engine).load(labelled_only=False) if o.plan_id == plan.id]
    assert len(logged) == 1 and logged[0].correct is False and logged[0].db_id == "demo"

    # a corrected SQL is executed in the sandbox and, without a label, compared with the chosen SQL's result
    fb2 = c.post("/feedback", json={"plan_id": plan.id, "corrected_sql": "SELECT count(*) FROM singer WHERE age > 30"})
    assert fb2.status_code == 200, fb2.text
    if plan.status == "ok":
        assert fb2.json()["label_source"] == "corrected_sql_execution"
        assert isinstance(fb2.json()["correct"], bool)

    m = c.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'sqlarbiter_http_requests_total{endpoint="/plan",method="POST",status="200"} 1' in text
    assert 'sqlarbiter_plan_stage_duration_seconds_count{stage="generate"} 1' in text
    assert "sqlarbiter_tokens_total{" in text and "sqlarbiter_cost_total{" in text
    # every feedback labelled incorrect is counted: the first, and the corrected SQL's when its result differs
    incorrect = 1 + (fb2.json()["correct"] is False)
    assert f'sqlarbiter_feedback_total{{label="incorrect"}} {incorrect}' in text


def test_check_matches_cli_verdicts(shared_client):
    c = shared_client
    ok = c.post("/check", json={"db_id": "demo", "sql": "SELECT name FROM singer ORDER BY name LIMIT 2"})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["verdict"] == "ok" and body["row_count"] == 2
    bad = c.post("/check", json={"db_id": "demo", "sql": "DROP TABLE singer"}).json()
    assert bad["verdict"] == "rejected"
    failed = c.post("/check", json={"db_id": "demo", "sql": "SELECT nope FROM singer"}).json()
    assert failed["verdict"] == "failed"
    # the database is intact after the DROP attempt
    assert c.post("/check", json={"db_id": "demo", "sql": "SELECT count(*) FROM singer"}).json()["verdict"] == "ok"


def test_databases_and_schema(shared_client):
    c = shared_client
    dbs = c.get("/databases").json()
    demo = next(d for d in dbs if d["db_id"] == "demo")
    assert demo["kind"] == "sqlite" and demo["n_tables"] >= 4
    s = c.get("/databases/demo/schema")
    assert s.status_code == 200
    body = s.json()
    assert "singer" in str(body) and "CREATE TABLE" in body["prompt"]
    assert c.get("/databases/atlantis/schema").status_code == 404


def test_models_health_docs(shared_client):
    c = shared_client
    g = c.get("/generators").json()
    assert g["role"] == "generator" and g["active"] == "embedded" and g["models"]
    d = c.get("/discriminators").json()
    assert d["role"] == "discriminator" and d["active"] == "embedded"
    h = c.get("/health").json()
    assert h["ready"] is True and h["status"] == "ok" and h["store"] is True and h["databases"] >= 1
    assert set(h["models_loaded"]) == {"generator", "discriminator"}
    assert c.get("/docs").status_code == 200
    spec = c.get("/openapi.json").json()
    for path in ("/plan", "/plans/{plan_id}", "/feedback", "/check", "/databases", "/databases/{db_id}/schema",
                 "/generators", "/generators/active", "/discriminators", "/discriminators/active", "/health",
                 "/metrics"):
        assert path in spec["paths"], path
