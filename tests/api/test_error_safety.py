"""Error bodies that cannot fail and name no host path, and POST /check under admission control, on the real
ASGI app: NaN/Infinity/1e999 anywhere in a request body -> 422 with strict JSON (never a 500 from rendering the
error), error bodies without the runs folder, the test's tmp folder, the home folder or the repository, and a
burst of checks beyond the check pool answered 429 at once while runaway SQL (a recursive CTE on the demo
database) holds the slots."""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from pathlib import Path

import pytest
from fastapi import HTTPException

from api.limits import redact_paths
from core.model import ExecutionResult

Q = "How many singers are older than 30?"
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]
PLAN = {"question": Q, "db_id": "demo"}
CHECK = {"db_id": "demo", "sql": "SELECT 1"}
# every field of the request bodies, each with a valid rest of the body
FIELDS = ([("POST", "/plan", PLAN, f) for f in ("question", "db_id", "evidence", "n", "policy", "pair", "router",
                                               "execute", "deadline_s", "abstain_below")]
          + [("POST", "/check", CHECK, f) for f in ("db_id", "sql")]
          + [("POST", "/feedback", {"plan_id": "x", "correct": True}, f) for f in ("plan_id", "correct", "corrected_sql")]
          + [("PUT", "/generators/active", {"name": "embedded"}, "name")])
RUNAWAY = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"


def strict_json(r):
    """The body as JSON, refusing the NaN/Infinity tokens that Python's decoder would accept."""
    def refuse(token):
        raise ValueError(f"non-JSON constant {token} in the body")
    return json.loads(r.content.decode("utf-8"), parse_constant=refuse)


def _body(base: dict, field: str, token: str) -> str:
    text = json.dumps({**base, field: "__X__"})
    return text.replace('"__X__"', token)


@pytest.mark.parametrize("method, path, base, field", FIELDS, ids=lambda x: x if isinstance(x, str) else None)
@pytest.mark.parametrize("token", NON_FINITE)
def test_non_finite_numbers_are_422_with_a_json_body(shared_client, method, path, base, field, token):
    for body in (_body(base, field, token), _body(base, field, f"[{token}]"), _body(base, field, f'{{"a": {token}}}')):
        r = shared_client.request(method, path, content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text)
        detail = strict_json(r)["detail"]
        assert any(field in e["loc"] for e in detail), detail


def test_the_reported_requests(shared_client):
    """The issue's two requests, verbatim: they answered 500 (the error quoted a number JSON cannot hold)."""
    for path, body in (("/check", '{"db_id":"x","sql":NaN}'), ("/plan", f'{{"question":"{Q}","db_id":"demo","n":1e999}}')):
        r = shared_client.post(path, content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        err = strict_json(r)["detail"][0]
        assert err["input"] in ("NaN", "Infinity")  # quoted as text


def test_an_error_body_can_never_fail_to_render(make_client, tmp_path):
    c = make_client()

    class Unprintable:
        def __str__(self):
            raise RuntimeError("no text for this")

    def nan_detail():
        raise HTTPException(409, {"value": float("nan"), "where": f"{tmp_path}/secret.db", "inf": [float("-inf")]})

    def unprintable_detail():
        raise HTTPException(409, Unprintable())

    def unprintable_error():
        raise LookupError(Unprintable())

    c.app.add_api_route("/_test/nan", nan_detail)
    c.app.add_api_route("/_test/unprintable", unprintable_detail)
    c.app.add_api_route("/_test/crash", unprintable_error)
    r = c.get("/_test/nan")
    assert r.status_code == 409 and strict_json(r) == {"detail": {"value": "NaN", "where": ".../secret.db",
                                                                  "inf": ["-Infinity"]}}
    r = c.get("/_test/unprintable")  # not even a string for it: the status stays, the body is still JSON
    assert r.status_code == 409 and "detail" in strict_json(r)
    r = c.get("/_test/crash")
    assert r.status_code == 500 and strict_json(r) == {"detail": "internal error: LookupError"}


def _host_paths(tmp_path: Path, *more: Path) -> list[str]:
    return sorted({"/work", str(Path.home()), tempfile.gettempdir(), str(tmp_path), str(Path.cwd()),
                   *(str(p) for p in more)})


def _assert_no_host_path(r, paths: list[str]) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    strict_json(r)
    for p in paths:
        assert p not in r.text, (p, r.text)


def test_4xx_bodies_name_no_host_path(make_client, eval_runs, tmp_path):
    only_md = eval_runs / "eval" / "report-only"  # a run with a report but no results: compare cannot read it
    only_md.mkdir()
    (only_md / "report.md").write_text("# a report without results\n")
    artifact = tmp_path / "models" / "carrot.json"
    c = make_client(runs_dir=str(eval_runs), routers={"carrot": {"artifact": str(artifact)}})
    paths = _host_paths(tmp_path, eval_runs)
    cases = [
        c.get("/ui/api/run/file", params={"name": "nope", "file": "a.png"}),  # the request
        c.get("/ui/api/run/file", params={"name": "eval/spider-replay-a", "file": "missing.png"}),
        c.get("/ui/api/run/file", params={"name": "../../etc", "file": "passwd.png"}),
        c.get("/ui/api/run/file", params={"name": str(eval_runs / "eval" / "spider-replay-a"), "file": "x.png"}),
        c.get("/ui/api/run", params={"name": "nope"}),
        c.get("/ui/api/run", params={"name": "not-a-run"}),
        c.get("/ui/api/compare", params={"a": "eval/spider-replay-a", "b": "nope"}),
        c.get("/ui/api/compare", params={"a": "eval/report-only", "b": "eval/spider-replay-a"}),  # FileNotFoundError
        c.post("/plan", json={**PLAN, "router": "carrot"}),  # the router's artifact is missing (its path in the error)
        c.post("/plan", json={**PLAN, "db_id": "atlantis"}),
        c.post("/check", json={"db_id": "atlantis", "sql": "SELECT 1"}),
        c.get("/databases/atlantis/schema"),
        c.get("/plans/nope"),
        c.post("/feedback", json={"plan_id": "nope", "correct": True}),
        c.get("/nope"),
        c.get(f"/{tmp_path}/x"),
    ]
    for r in cases:
        _assert_no_host_path(r, paths)
    assert "carrot.json" in cases[8].text  # the file's own name stays, for the operator
    assert "unknown run 'nope'" in cases[0].text


def test_an_http_exception_naming_a_path_is_redacted(make_client, tmp_path):
    c = make_client()

    def missing():
        raise HTTPException(404, f"no file {tmp_path / 'db' / 'demo.sqlite'}", headers={"X-Test": "kept"})

    c.app.add_api_route("/_test/missing", missing)
    r = c.get("/_test/missing")
    _assert_no_host_path(r, _host_paths(tmp_path))
    assert r.status_code == 404 and r.json() == {"detail": "no file .../demo.sqlite"} and r.headers["X-Test"] == "kept"


@pytest.mark.parametrize("text, expected", [
    ("unknown run 'x' under /tmp/abc/runs; see GET /ui/api/runs", "unknown run 'x' under .../runs; see GET /ui/api/runs"),
    ("cannot load /work/main/m/ranker.json: not found: '/work/main/m/ranker.json'.",
     "cannot load .../ranker.json: not found: '.../ranker.json'."),
    ("store at sqlite:////var/lib/s/store.db down", "store at sqlite:.../store.db down"),
    ("home is /home/alice", "home is ..."),
    (r"C:\Users\bob\x.db missing", ".../x.db missing"),
    ("see GET /databases or POST /check", "see GET /databases or POST /check"),
    ("backend http://127.0.0.1:8000/v1/completions is down", "backend http://127.0.0.1:8000/v1/completions is down"),
    ("relative runs/eval/x and a/tmp/b stay", "relative runs/eval/x and a/tmp/b stay"),
])
def test_redact_paths(text, expected):
    assert redact_paths(text) == expected


def test_check_is_admission_controlled(make_client):
    """4 runaway checks (a recursive CTE, 2 s execution timeout) fill the check pool (2 running, 2 waiting): the
    next checks are refused with 429 and Retry-After at once, instead of waiting behind them; when they are
    done the pool is empty and a trivial check is answered again."""
    c = make_client(limits={"exec_timeout_s": 2.0, "sandbox_workers": 2, "check_concurrency": 2,
                            "check_queue_size": 2})
    t_test = time.monotonic()
    adm = c.app.state.check_admission
    assert (adm.concurrency, adm.capacity) == (2, 4)
    assert c.post("/check", json=CHECK).json()["verdict"] == "ok"  # the sandbox workers are up
    doc = c.get("/openapi.json").json()["paths"]["/check"]["post"]["responses"]
    assert "429" in doc and "200" in doc

    results: dict[str, list] = {"runaway": [], "trivial": []}
    lock = threading.Lock()

    def send(kind: str, sql: str) -> None:
        t = time.monotonic()
        r = c.post("/check", json={"db_id": "demo", "sql": sql})
        with lock:
            results[kind].append((r, time.monotonic() - t))

    runaway = [threading.Thread(target=send, args=("runaway", RUNAWAY)) for _ in range(4)]
    for th in runaway:
        th.start()
    end = time.monotonic() + 10
    while adm.in_flight < 4 and time.monotonic() < end:
        time.sleep(0.01)
    assert adm.in_flight == 4, adm.in_flight
    trivial = [threading.Thread(target=send, args=("trivial", "SELECT count(*) FROM singer")) for _ in range(8)]
    for th in trivial:
        th.start()
    for th in trivial:
        th.join(30)
    assert adm.in_flight >= 2  # the runaway checks still hold the pool: the refusals did not wait for them
    for r, took in results["trivial"]:
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1 and "too many checks" in r.json()["detail"]
        assert took < 1.5, took  # refused at once, not after a runaway's 2 s timeout
    assert len(results["trivial"]) == 8
    for th in runaway:
        th.join(30)
    assert len(results["runaway"]) == 4
    for r, _ in results["runaway"]:
        assert r.status_code == 200 and r.json()["verdict"] == "failed" and r.json()["error_kind"] == "timeout", r.text
    end = time.monotonic() + 5
    while adm.in_flight and time.monotonic() < end:
        time.sleep(0.01)
    assert adm.in_flight == 0  # every slot returned
    r = c.post("/check", json={"db_id": "demo", "sql": "SELECT count(*) FROM singer"})
    assert r.status_code == 200 and r.json()["verdict"] == "ok"
    assert set(r.json()) == {"verdict", "db", *ExecutionResult.model_fields}  # the response shape is unchanged
    assert not re.search(r"sqlarbiter_overload_rejections_total [1-9]", c.get("/metrics").text)  # counts plans only
    assert time.monotonic() - t_test < 60


def test_check_pool_defaults_follow_the_sandbox(make_client):
    c = make_client(limits={"sandbox_workers": 3, "queue_size": 5})
    adm = c.app.state.check_admission
    assert (adm.concurrency, adm.capacity) == (3, 8)
