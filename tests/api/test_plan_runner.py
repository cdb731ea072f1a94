"""POST /plan and POST /plan/stream share one request check (`Planner.validate`, before admission) and one
admitted-plan runner (`api.runner.submit`). The planner's `run` is replaced by a canned plan here: what is
tested is the path a request takes, not the model."""

from __future__ import annotations

import json

import pytest

import api.runner
from core.model import Plan
from planner.request import ValidatedRequest

Q = "How many singers are older than 30?"


@pytest.fixture
def traced(make_client, monkeypatch):
    c = make_client()
    planner = c.app.state.planner
    calls: dict[str, list] = {"submit": [], "run": []}
    real_submit = api.runner.submit

    def submit(state, request, progress=None):
        calls["submit"].append((request, progress is not None))
        return real_submit(state, request, progress)

    def run(request, progress=None):
        calls["run"].append(request)
        if progress is not None:
            progress({"stage": "route", "state": "start", "ms": None, "elapsed_ms": 0.0})
        return Plan(question=request.question, policy=request.policy, status="no_candidates")

    monkeypatch.setattr(api.runner, "submit", submit)
    monkeypatch.setattr(planner, "run", run)
    return c, calls


def test_plan_and_plan_stream_share_the_runner(traced):
    c, calls = traced
    body = {"question": Q, "db_id": "demo", "n": 1, "policy": "vote", "deadline_s": 50}
    r = c.post("/plan", json=body)
    assert r.status_code == 200, r.text
    pid = r.json()["id"]
    s = c.post("/plan/stream", json=body)
    assert s.status_code == 200
    events = [ln.split(": ", 1)[1] for ln in s.text.splitlines() if ln.startswith("event: ")]
    assert events == ["queued", "stage", "plan"]
    streamed = json.loads(s.text.split("event: plan\ndata: ", 1)[1].split("\n", 1)[0])
    # the same runner, with the same validated request; only the stream listens to the stages
    assert [p for _, p in calls["submit"]] == [False, True]
    (a, _), (b, _) = calls["submit"]
    assert isinstance(a, ValidatedRequest) and a == b and (a.n, a.policy, a.deadline_s) == (1, "vote", 50.0)
    # the runner planned with what was left of the deadline after the queue, and stored both plans
    assert all(0 < v.deadline_s <= 50 and v.question == a.question for v in calls["run"]) and len(calls["run"]) == 2
    assert c.get(f"/plans/{pid}").status_code == 200 and c.get(f"/plans/{streamed['id']}").status_code == 200


@pytest.mark.parametrize("body, status, needle", [
    ({"question": "   "}, 422, "blank"),
    ({"policy": "best"}, 422, "unknown policy 'best'"),
    ({"pair": "embedded", "router": "fixed"}, 422, "not both"),
    ({"router": "carrot"}, 422, "not usable"),  # was an `error` event after the stream started
    ({"n": 17}, 422, "between 1 and 16"),
    ({"db_id": "atlantis"}, 404, "atlantis"),
])
def test_bad_requests_never_reach_the_runner(traced, body, status, needle):
    c, calls = traced
    for path in ("/plan", "/plan/stream"):
        r = c.post(path, json={"question": Q, "db_id": "demo", **body})
        assert r.status_code == status and needle in r.json()["detail"], (path, r.text)
    assert calls == {"submit": [], "run": []}
