"""HTTP hardening (api.limits) and idempotent feedback, on the real ASGI app: lone surrogates -> 422 (never 500)
on every body, a body limit answering 413, 4xx bodies that echo only a short excerpt, security advertised only
with a key, schema bounds from the configuration, a duplicate feedback acknowledged but stored and forwarded
once, and hostile SQL through POST /check bounded in time without growing the server process."""

from __future__ import annotations

import json
import resource
import time

import pytest

from core.model import Plan, Question

SURROGATE = '"\\ud800x"'  # JSON text for a string holding a lone surrogate


def _raw(client, method: str, path: str, body: str, headers: dict | None = None):
    return client.request(method, path, content=body.encode(), headers={"content-type": "application/json",
                                                                       **(headers or {})})


@pytest.fixture
def client(make_client):
    return make_client(limits={"max_body_bytes": 64_000, "sql_max_chars": 20_000, "exec_timeout_s": 1.0})


def _plan(client) -> str:
    store = client.app.state.store
    p = Plan(question=Question(text="how many singers?", db_id="demo"), policy="rerank", status="ok",
             candidates=[])
    store.save(p)
    return p.id


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/check", f'{{"db_id": "demo", "sql": {SURROGATE}}}'),
    ("POST", "/check", f'{{"db_id": {SURROGATE}, "sql": "SELECT 1"}}'),
    ("POST", "/plan", f'{{"question": {SURROGATE}, "db_id": "demo"}}'),
    ("POST", "/plan", f'{{"question": "q", "db_id": "demo", "pair": {SURROGATE}}}'),
    ("POST", "/feedback", f'{{"plan_id": {SURROGATE}, "correct": true}}'),
    ("POST", "/feedback", f'{{"plan_id": "x", "corrected_sql": {SURROGATE}}}'),
    ("PUT", "/generators/active", f'{{"name": {SURROGATE}}}'),
    ("PUT", "/discriminators/active", f'{{"name": {SURROGATE}}}'),
    ("POST", "/check", f'{{"db_id": "demo", "sql": 5, {SURROGATE}: 1}}'),  # a surrogate in a key
])
def test_lone_surrogates_are_422(client, method, path, body):
    r = _raw(client, method, path, body)
    assert r.status_code == 422, r.text
    json.loads(r.content.decode("utf-8"))  # a valid, encodable JSON body


def test_body_limit_and_short_excerpts(client):
    big = json.dumps({"db_id": "demo", "sql": "x" * 100_000})
    r = _raw(client, "POST", "/check", big)
    assert r.status_code == 413 and "64000" in r.text and len(r.content) < 200
    # a body under the limit but invalid: the 422 quotes the input only as an excerpt
    r = _raw(client, "POST", "/check", json.dumps({"db_id": "demo", "sql": ["y" * 50_000]}))
    assert r.status_code == 422 and len(r.content) < 1000, len(r.content)
    r = _raw(client, "POST", "/plan", json.dumps({"question": "z" * 60_000, "db_id": "demo", "n": "many"}))
    assert r.status_code == 422 and len(r.content) < 1500
    r = _raw(client, "POST", "/check", '{"db_id": "demo", "sql": "SELECT 1"')  # malformed JSON
    assert r.status_code == 422


def test_schema_follows_the_config(make_client):
    c = make_client(limits={"n_max": 5, "question_max_chars": 300, "sql_max_chars": 4000, "deadline_s": 30,
                            "max_deadline_s": 60})
    s = c.get("/openapi.json").json()
    comps = s["components"]["schemas"]

    def bound(model, field, key):
        p = comps[model]["properties"][field]
        return next((b[key] for b in p.get("anyOf", [p]) if key in b), None)

    assert bound("PlanRequest", "n", "maximum") == 5
    assert bound("PlanRequest", "question", "maxLength") == 300
    assert bound("PlanRequest", "deadline_s", "maximum") == 60
    assert bound("CheckRequest", "sql", "maxLength") == 4000
    cfg = c.app.state.config
    assert bound("PlanRequest", "pair", "enum") == list(cfg.pairs)
    gen_ref = s["paths"]["/generators/active"]["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert comps[gen_ref.rsplit("/", 1)[1]]["properties"]["name"]["enum"] == list(cfg.generators)
    assert "anyOf" in comps["FeedbackRequest"]  # correct and/or corrected_sql
    assert "securitySchemes" not in s.get("components", {})
    assert all("security" not in op for ops in s["paths"].values() for op in ops.values())
    # what the schema allows is accepted: n = n_max is not refused as too large
    r = c.post("/plan", json={"question": "q", "db_id": "nope", "n": 5})
    assert r.status_code == 404
    keyed = make_client(api_key="s3cret").get("/openapi.json").json()
    assert keyed["components"]["securitySchemes"]


def test_duplicate_feedback_counts_once(client):
    pid = _plan(client)
    seen = []
    client.app.state.planner.on_feedback.append(lambda plan, correct, sql: seen.append((plan.id, correct)))
    a = client.post("/feedback", json={"plan_id": pid, "correct": True})
    b = client.post("/feedback", json={"plan_id": pid, "correct": True})
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert not a.json()["duplicate"] and b.json()["duplicate"] and a.json()["id"] == b.json()["id"]
    # the same Idempotency-Key counts once even with another body; a new key is new feedback
    c = client.post("/feedback", json={"plan_id": pid, "correct": False}, headers={"Idempotency-Key": "k1"})
    d = client.post("/feedback", json={"plan_id": pid, "correct": True}, headers={"Idempotency-Key": "k1"})
    e = client.post("/feedback", json={"plan_id": pid, "correct": False}, headers={"Idempotency-Key": "k2"})
    assert [x.json()["duplicate"] for x in (c, d, e)] == [False, True, False]
    assert d.json()["correct"] is False  # the stored one
    assert len(client.app.state.store.feedback_for(pid)) == 3
    assert seen == [(pid, True), (pid, False), (pid, False)]
    assert client.post("/feedback", json={"plan_id": pid}).status_code == 422


def test_hostile_sql_through_check_is_bounded(client):
    assert client.post("/check", json={"db_id": "demo", "sql": "SELECT 1"}).json()["verdict"] == "ok"  # warm
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for sql in ("COPY }", "COPY t FROM ]", "SELECT length(repeat('x', 2000000000))",
                "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))"):
        t = time.perf_counter()
        r = client.post("/check", json={"db_id": "demo", "sql": sql})
        assert r.status_code == 200 and r.json()["verdict"] != "ok", r.text
        assert time.perf_counter() - t < 1.0 + 1.0 + 1.5, sql  # timeout + 1 s + a loaded machine's margin
    r = client.post("/check", json={"db_id": "demo", "sql": "SELECT * FROM pragma_database_list"})
    assert r.json()["verdict"] != "ok" and "demo.sqlite" not in r.text
    assert client.post("/check", json={"db_id": "demo", "sql": "SELECT count(*) FROM singer"}).json()["verdict"] == "ok"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0 < 200


def test_liveness_and_readiness(client):
    assert client.get("/livez").json() == {"live": True}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] and r.json()["store"], r.text
    client.app.state.draining = True
    assert client.get("/readyz").status_code == 503 and client.get("/livez").status_code == 200
