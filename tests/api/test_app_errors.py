"""Failure and abuse: every error class answers a precise 4xx/5xx with a useful message, never a bare 500.
None of these requests loads a model except where a backend failure is the point."""

from __future__ import annotations

import socket
import threading
import time

import pytest

Q = "How many singers are older than 30?"


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"question": Q, "db_id": "atlantis"}, 404, "atlantis"),
        ({"question": "", "db_id": "demo"}, 422, "question"),
        ({"question": "   ", "db_id": "demo"}, 422, "blank"),
        ({"question": "x" * 2001, "db_id": "demo"}, 422, "at most 2000"),
        ({"question": Q, "db_id": "demo", "n": 0}, 422, "n"),
        ({"question": Q, "db_id": "demo", "n": 17}, 422, "between 1 and 16"),
        ({"question": Q, "db_id": "demo", "n": "two"}, 422, "n"),
        ({"question": 42, "db_id": "demo"}, 422, "question"),
        ({"question": Q}, 422, "db_id"),
        ({"question": Q, "db_id": "demo", "policy": "best"}, 422, "policy"),
        ({"question": Q, "db_id": "demo", "pair": "nope"}, 422, "unknown pair 'nope'"),
        ({"question": Q, "db_id": "demo", "router": "oracle"}, 422, "unknown router 'oracle'"),
        ({"question": Q, "db_id": "demo", "router": "carrot"}, 422, "not usable"),  # no trained artifact
        ({"question": Q, "db_id": "demo", "pair": "embedded", "router": "fixed"}, 422, "either"),
        ({"question": Q, "db_id": "demo", "surprise": 1}, 422, "surprise"),
        ({"question": Q, "db_id": "demo", "deadline_s": 10_000}, 422, "deadline_s"),
        ({"question": Q, "db_id": "demo", "execute": "maybe"}, 422, "execute"),
    ],
)
def test_plan_request_errors(client, body, status, needle):
    r = client.post("/plan", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_malformed_json_and_wrong_content(client):
    r = client.post("/plan", content=b'{"question": "x", "db_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.text.lower()
    r = client.post("/plan", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_unknown_plan_and_feedback_errors(client):
    assert client.get("/plans/doesnotexist").status_code == 404
    r = client.post("/feedback", json={"plan_id": "doesnotexist", "correct": True})
    assert r.status_code == 404 and "unknown plan id" in r.text
    r = client.post("/feedback", json={"plan_id": "x"})
    assert r.status_code == 422 and "correct" in r.text
    r = client.post("/feedback", json={"plan_id": "x", "correct": "yes please"})
    assert r.status_code == 422


def test_check_errors(client):
    assert client.post("/check", json={"db_id": "atlantis", "sql": "SELECT 1"}).status_code == 404
    assert client.post("/check", json={"db_id": "demo", "sql": ""}).status_code == 422
    r = client.post("/check", json={"db_id": "demo", "sql": "SELECT 1 " + " " * 25_000})
    assert r.status_code == 422 and "at most" in r.text
    assert client.put("/generators/active", json={"name": "nope"}).status_code == 422
    assert client.put("/discriminators/active", json={}).status_code == 422


def test_deadline_answers_504(client):
    r = client.post("/plan", json={"question": Q, "db_id": "demo", "deadline_s": 0.000001})
    assert r.status_code == 504 and "deadline" in r.text


def test_overload_answers_429_with_retry_after(make_client):
    c = make_client(limits={"concurrency": 1, "queue_size": 1})
    adm = c.app.state.admission
    release = threading.Event()
    started = threading.Event()

    def hold(_admitted):
        started.set()
        release.wait(30)

    futs = [adm.submit(hold), adm.submit(hold)]  # one running, one queued: the limit is reached
    try:
        assert started.wait(5)
        r = c.post("/plan", json={"question": Q, "db_id": "demo"})
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1 and "retry" in r.text
        assert "sqlarbiter_overload_rejections_total 1" in c.get("/metrics").text
    finally:
        release.set()
        for f in futs:
            f.result(10)
    deadline = time.monotonic() + 5
    while adm.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert adm.in_flight == 0  # slots were returned


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_backend_down_answers_503(make_client):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    c = make_client(
        generators={"remote": {"backend": "openai", "url": url, "model": "m",
                               "options": {"timeout": 2, "max_retries": 0}}},
        discriminators={"embedded": {"backend": "embedded"}},
        pairs={"remote": {"generator": "remote", "discriminator": "embedded"}},
    )
    r = c.post("/plan", json={"question": Q, "db_id": "demo"})
    assert r.status_code == 503, r.text
    assert "unavailable" in r.text.lower()
    h = c.get("/health")
    assert h.status_code == 200


def test_no_500_on_unknown_paths_and_methods(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/plan").status_code == 405
    assert client.delete("/databases").status_code == 405


class _SleepyGenerator:
    """A generator backend that blocks for options.sleep_s (a model call overrunning the deadline)."""

    def __init__(self, spec=None, **_):
        self.name, self.sleep_s = spec.name, float(spec.options.get("sleep_s", 3.0))

    def generate(self, request):
        from generators.base import GenerationResult

        time.sleep(self.sleep_s)
        return GenerationResult(sqls=["SELECT 1"], raw=["SELECT 1"], model=self.name)


def test_deadline_cuts_a_blocking_model_call(make_client):
    from generators.base import GENERATORS

    if "test-sleepy" not in GENERATORS:
        GENERATORS.register("test-sleepy")(_SleepyGenerator)
    c = make_client(generators={"sleepy": {"backend": "test-sleepy", "options": {"sleep_s": 4.0}}},
                    pairs={"slow": {"generator": "sleepy", "discriminator": "embedded"}})
    t = time.monotonic()
    r = c.post("/plan", json={"question": Q, "db_id": "demo", "deadline_s": 0.5, "policy": "vote"})
    elapsed = time.monotonic() - t
    assert r.status_code == 504 and "deadline" in r.text
    assert elapsed < 3.5  # answered at the deadline (+1 s grace), not when the model call returned
    adm = c.app.state.admission
    assert adm.in_flight == 1  # the worker still runs: its slot stays taken, so the limit stays truthful
    end = time.monotonic() + 10
    while adm.in_flight and time.monotonic() < end:
        time.sleep(0.05)
    assert adm.in_flight == 0
