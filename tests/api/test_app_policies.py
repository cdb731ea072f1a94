"""The API's policy field is derived from the policy registry: the OpenAPI enum lists every registered
policy, an unknown one is a 422 listing the choices, and a newly registered one is accepted with no
edit to the schema (real ASGI app; none of these requests loads a model)."""

from __future__ import annotations

import pytest

from planner.select import POLICIES, PolicyInfo, Selection, policy_names

Q = "How many singers are older than 30?"


@pytest.fixture
def extra_policy(monkeypatch):
    """A policy registered for one test only (monkeypatch restores the registry)."""

    def pick_last(cands, ctx):
        return Selection(len(cands) - 1, "last") if cands else Selection(None, "no candidates")

    monkeypatch.setitem(POLICIES._items, "test-last", pick_last)
    monkeypatch.setitem(POLICIES._info, "test-last", PolicyInfo(needs_scores=False, executable_only=False,
                                                                summary="the last candidate"))
    return "test-last"


def test_unknown_policy_is_422_with_the_choices(make_client):
    r = make_client().post("/plan", json={"question": Q, "db_id": "demo", "policy": "best"})
    assert r.status_code == 422
    assert "unknown policy 'best'; choose one of: " + ", ".join(policy_names()) in r.text


def test_openapi_enum_is_the_registry(make_client, extra_policy):
    spec = make_client().get("/openapi.json").json()
    prop = spec["components"]["schemas"]["PlanRequest"]["properties"]["policy"]
    enum_schema = next(s for s in prop["anyOf"] if "enum" in s)
    assert enum_schema["enum"] == policy_names() and extra_policy in enum_schema["enum"]
    assert "the last candidate" in enum_schema["description"]


def test_newly_registered_policy_is_accepted(make_client, extra_policy):
    # the policy passes validation; the request then fails on the unknown database (404), not on the policy
    r = make_client().post("/plan", json={"question": Q, "db_id": "atlantis", "policy": extra_policy})
    assert r.status_code == 404, r.text
