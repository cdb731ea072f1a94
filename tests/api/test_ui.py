"""api.ui: the playground's pages and endpoints through the real ASGI app (TestClient): static pages with no
external links, auth like the rest of the API, POST /plan/stream (server-sent events, documented in the
OpenAPI schema) with the real embedded model, and the eval-runs endpoints over runs written by the real
eval.report. The same page in a real browser: tests/api/test_ui_browser.py."""

from __future__ import annotations

import json
import re

import pytest

from api.ui import STATIC
from core.model import Plan
from planner.select import policy_names

Q = "How many singers are older than 30?"


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.split("\n\n"):
        event, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if event:
            out.append((event, json.loads("\n".join(data))))
    return out


def test_pages_are_served_and_work_offline(make_client):
    c = make_client()
    r = c.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    page = c.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in page.text and 'name="viewport"' in page.text
    for name, kind in (("playground.js", "javascript"), ("playground.css", "text/css")):
        r = c.get(f"/ui/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert f"/ui/static/{name}" in page.text
    assert c.get("/ui/static/../app.py").status_code == 404
    assert c.get("/ui/static/nope.js").status_code == 404
    # offline: no absolute URL to another host in any shipped file (no CDN)
    for f in STATIC.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", f.read_text(), re.I), f"external link in {f.name}"
    # every form control of the page has a label
    html = page.text
    for ctl in re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html):
        assert f'for="{ctl}"' in html, f"control #{ctl} has no <label for>"


def test_auth_rules_match_the_api(make_client, eval_runs):
    c = make_client(api_key="s3cret", runs_dir=str(eval_runs))
    assert c.get("/ui/").status_code == 200  # the page shell is open, like /docs; it holds no data
    for method, path, body in (("GET", "/ui/api/options", None), ("GET", "/ui/api/runs", None),
                               ("GET", "/ui/api/run?name=eval/spider-replay-a", None),
                               ("POST", "/plan/stream", {"question": Q, "db_id": "demo"})):
        r = c.request(method, path, json=body)
        assert r.status_code == 401, (path, r.text)
        assert "API key" in r.json()["detail"]
    ok = c.get("/ui/api/runs", headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200 and ok.json()["runs"]


def test_options_describe_the_form(make_client):
    c = make_client()
    o = c.get("/ui/api/options").json()
    assert list(o["pairs"]) == ["embedded"] and o["pairs"]["embedded"]["generator"] == "embedded"
    assert "fixed" in o["routers"] and o["router"] == "fixed"
    assert [p["name"] for p in o["policies"]] == policy_names()  # every registered policy, in its order
    assert o["defaults"] == {"n": 2, "policy": "check-rerank"} and o["limits"]["n_max"] == 16


def test_plan_stream_reports_stages_then_the_stored_plan(make_client):
    c = make_client()
    r = c.post("/plan/stream", json={"question": Q, "db_id": "demo", "n": 1, "policy": "vote", "execute": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    ev = sse_events(r.text)
    kinds = [k for k, _ in ev]
    assert kinds[0] == "queued" and kinds[-1] == "plan" and kinds.count("plan") == 1 and "error" not in kinds
    done = [d["stage"] for k, d in ev if k == "stage" and d["state"] == "done"]
    assert done == ["route", "generate", "normalize", "execute", "discriminate", "select"]
    plan = Plan.model_validate(ev[-1][1])
    assert plan.question.text == Q and plan.candidates
    assert c.get(f"/plans/{plan.id}").json()["id"] == plan.id  # stored like POST /plan's
    fb = c.post("/feedback", json={"plan_id": plan.id, "correct": True})
    assert fb.status_code == 200 and fb.json()["correct"] is True
    assert 'sqlarbiter_plans_total' in c.get("/metrics").text


def test_plan_stream_errors(make_client):
    c = make_client()
    # bad requests are answered before the stream starts, as POST /plan answers them
    assert c.post("/plan/stream", json={"question": Q, "db_id": "nope"}).status_code == 404
    assert c.post("/plan/stream", json={"question": Q, "db_id": "demo", "n": 99}).status_code == 422
    assert c.post("/plan/stream", json={"question": Q, "db_id": "demo", "pair": "x"}).status_code == 422
    r = c.post("/plan/stream", json={"question": Q, "db_id": "demo", "router": "nope"})
    assert r.status_code == 422 and "fixed" in r.json()["detail"]
    assert c.post("/plan/stream", json={"question": " ", "db_id": "demo"}).status_code == 422
    # a failure after the stream started is one `error` event with the status POST /plan would give
    r = c.post("/plan/stream", json={"question": Q, "db_id": "demo", "n": 1, "deadline_s": 0.001})
    assert r.status_code == 200
    ev = sse_events(r.text)
    assert ev[-1][0] == "error" and ev[-1][1]["status"] == 504 and "deadline" in ev[-1][1]["detail"]


def test_plan_stream_is_documented_in_openapi(make_client):
    spec = make_client().get("/openapi.json").json()
    op = spec["paths"]["/plan/stream"]["post"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert "`stage`" in op["responses"]["200"]["description"]
    assert {"404", "422", "429"} <= set(op["responses"])  # 401 only when a key is configured (api.limits)
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PlanRequest")
    assert "/ui/api/runs" in spec["paths"] and "/ui/" not in spec["paths"]


def test_eval_runs_listed_rendered_and_compared(make_client, eval_runs):
    c = make_client(runs_dir=str(eval_runs))
    r = c.get("/ui/api/runs").json()
    assert r["root"] == str(eval_runs)
    names = {x["name"]: x for x in r["runs"]}
    assert set(names) == {"eval/spider-replay-a", "eval/spider-replay-b", "eval/unfinished"}
    a = names["eval/spider-replay-a"]
    assert a["dataset"] == "spider" and a["mode"] == "replay" and a["n"] == 12 and a["has_report"]
    assert a["ex"] == pytest.approx(100 * 8 / 12)

    rep = c.get("/ui/api/run", params={"name": "eval/spider-replay-a"}).json()
    assert "<table>" in rep["html"] and "EX by difficulty" in rep["html"] and not rep["built_from_results"]
    assert "ex_by_difficulty.png" in rep["plots"] and '<img src="ex_by_difficulty.png"' in rep["html"]
    png = c.get("/ui/api/run/file", params={"name": "eval/spider-replay-a", "file": "ex_by_difficulty.png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"

    part = c.get("/ui/api/run", params={"name": "eval/unfinished"}).json()
    assert part["built_from_results"] and "EX 100.0%" in part["markdown"]
    assert not (eval_runs / "eval" / "unfinished" / "report.md").exists()  # read-only

    cmp = c.get("/ui/api/compare", params={"a": "eval/spider-replay-a", "b": "eval/spider-replay-b"}).json()
    assert cmp["compare"]["n_common"] == 12 and cmp["compare"]["a"] == "eval/spider-replay-a"
    assert "fixed in B" in cmp["text"] and "broken in B" in cmp["text"]


def test_eval_runs_reject_unknown_and_escaping_names(make_client, eval_runs, tmp_path):
    (tmp_path / "secret.png").write_bytes(b"\x89PNG")
    c = make_client(runs_dir=str(eval_runs))
    for name in ("../", "..", "/etc", "eval/../../", "not-a-run", "eval/nope", ""):
        r = c.get("/ui/api/run", params={"name": name})
        assert r.status_code in (404, 422), name
    for f in ("../../secret.png", "report.json", "results.jsonl", "/etc/passwd"):
        r = c.get("/ui/api/run/file", params={"name": "eval/spider-replay-a", "file": f})
        assert r.status_code == 404, f
    r = c.get("/ui/api/compare", params={"a": "eval/spider-replay-a", "b": "eval/nope"})
    assert r.status_code == 404 and "GET /ui/api/runs" in r.json()["detail"]
    empty = make_client(runs_dir=str(tmp_path / "absent")).get("/ui/api/runs").json()
    assert empty["runs"] == []


def test_runs_dir_from_env_and_default(make_config, monkeypatch, tmp_path):
    from api.ui import runs_root
    from planner.config import config_from_dict

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SQLARBITER_RUNS_DIR", raising=False)
    assert runs_root(make_config()) == tmp_path / "runs"
    cfg = config_from_dict({}, env={"SQLARBITER_RUNS_DIR": str(tmp_path / "r")})
    assert runs_root(cfg) == tmp_path / "r"
