"""The one request check (`Planner.validate`, planner.request): every rule raises the one request error type,
`PlanRequestError`, whose message starts with the field; defaults come from the configuration."""

from __future__ import annotations

import math

import pytest

from core.errors import PlanRequestError
from core.model import Question
from planner.config import config_from_dict
from planner.pipeline import Planner
from planner.request import PlanArgs, ValidatedRequest
from planner.select import PolicyError
from sqlbox.databases import UnknownDatabase

Q = "How many singers are older than 30?"


@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    store = tmp_path_factory.mktemp("req") / "store.db"
    cfg = config_from_dict({
        "defaults": {"n": 2, "policy": "vote"},
        "limits": {"n_max": 8, "question_max_chars": 60, "deadline_s": 30, "max_deadline_s": 60,
                   "isolation": "none"},
        "store_url": f"sqlite:///{store}",
    }, env={})
    p = Planner(cfg)
    yield p
    p.close()


def args(**kw) -> PlanArgs:
    return PlanArgs(**{"question": Q, "db_id": "demo", **kw})


@pytest.mark.parametrize("kw, needle", [
    ({"question": ""}, "question: must not be blank"),
    ({"question": "  \t "}, "question: must not be blank"),
    ({"question": "x" * 61}, "question: at most 60 characters (got 61)"),
    ({"n": 0}, "n: must be between 1 and 8 (got 0)"),
    ({"n": 9}, "n: must be between 1 and 8 (got 9)"),
    ({"policy": "best"}, "unknown policy 'best'"),
    ({"abstain_below": 1.5}, "abstain_below: must be between 0 and 1"),
    ({"pair": "embedded", "router": "fixed"}, "give either `pair` or `router`, not both"),
    ({"pair": "nope"}, "pair: unknown pair 'nope'; known: embedded"),
    ({"router": "oracle"}, "router: unknown router 'oracle'; known:"),
    ({"router": "carrot"}, "router 'carrot' is not usable with this configuration"),  # no trained artifact
    ({"deadline_s": 0}, "deadline_s: must be positive"),
    ({"deadline_s": 61}, "deadline_s: at most 60 (got 61)"),
])
def test_each_rule_raises_the_one_request_error(planner, kw, needle):
    with pytest.raises(PlanRequestError) as e:
        planner.validate(args(**kw))
    assert type(e.value) in (PlanRequestError, PolicyError) and needle in str(e.value)


def test_a_policy_error_is_a_request_error():
    assert issubclass(PolicyError, PlanRequestError)


def test_unknown_database_is_a_404_not_a_request_error(planner):
    with pytest.raises(UnknownDatabase, match="atlantis"):
        planner.validate(args(db_id="atlantis"))


def test_defaults_are_filled_in_from_the_configuration(planner):
    v = planner.validate(args())
    assert v == ValidatedRequest(question=Question(text=Q, db_id="demo"), n=2, policy="vote", pair=None, router=None,
                                 execute=False, deadline_s=30.0, abstain_below=None)
    q = Question(text=Q, db_id="demo", id="7")
    v = planner.validate(PlanArgs(question=q, n=8, policy="first", pair="embedded", deadline_s=math.inf))
    assert v.question is q and (v.n, v.policy, v.pair, v.deadline_s) == (8, "first", "embedded", math.inf)


def test_the_api_request_model_is_validated_the_same_way(planner):
    from api.schemas import PlanRequest

    # the schema only checks types and shapes: a blank question, an unknown policy, pair and router together
    # all reach Planner.validate
    for body, needle in [({"question": "   "}, "blank"), ({"policy": "best"}, "unknown policy"),
                         ({"pair": "embedded", "router": "fixed"}, "not both")]:
        req = PlanRequest(**{"question": Q, "db_id": "demo", **body})
        with pytest.raises(PlanRequestError, match=needle):
            planner.validate(req)
    v = planner.validate(PlanRequest(question=Q, db_id="demo", n=3, evidence="e", execute=True))
    assert (v.n, v.question.evidence, v.execute) == (3, "e", True)


def test_plan_runs_what_validate_returns(planner, monkeypatch):
    seen = []
    monkeypatch.setattr(planner, "run", lambda v, progress=None: seen.append(v) or "plan")
    assert planner.plan(Question(text=Q, db_id="demo"), n=3) == "plan"
    assert seen == [planner.validate(args(n=3))]
    with pytest.raises(PlanRequestError):
        planner.plan(Question(text=" ", db_id="demo"))
    assert len(seen) == 1  # a request that fails validate never runs
