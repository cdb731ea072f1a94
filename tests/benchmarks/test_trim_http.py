"""benchmarks.trim_http's check: a Plan's step record against the two servers' request logs."""

from __future__ import annotations

from benchmarks.trim_http import check_plan
from core.model import Plan, Question, RouteDecision, TokenUsage
from sqlbox.steps import prefix_for

S1 = "-- every singer\nWITH s1 AS (SELECT * FROM singer)"
DRAFT = "-- how many\nSELECT count(*) FROM nope"
S2 = "-- how many\nSELECT count(*) FROM s1"


def _plan(fallback=None, cheap_tokens=9, strong_tokens=5):
    steps = [{"pair": "cheap", "text": S1, "tokens": 6, "handed_off": False},
             {"pair": "strong", "text": S2, "tokens": 5, "handed_off": True, "draft": {"text": DRAFT, "tokens": 3}}]
    route = RouteDecision(router="trim", pair="cheap", generator="http-cheap", discriminator="d",
                          details={"trim": {"steps": steps, "fallback": fallback}})
    return Plan(question=Question(text="q", db_id="demo"), route=route,
                usage=[TokenUsage(model="http-cheap", role="generator", completion_tokens=cheap_tokens),
                       TokenUsage(model="http-strong", role="generator", completion_tokens=strong_tokens)])


def _log(prefix, tokens):
    return {"continue_final_message": True, "prefix": prefix, "completion_tokens": tokens}


def test_logs_that_match_the_plan_pass_and_each_kind_of_mismatch_is_named():
    cheap = [_log(prefix_for([]), 6), _log(prefix_for([S1]), 3)]
    strong = [_log(prefix_for([S1]), 5)]
    assert check_plan(_plan(), cheap, strong) == []
    assert any("prefix differs" in p for p in check_plan(_plan(), cheap, [_log(prefix_for([]), 5)]))
    assert any("2 step request(s), the plan has 1" in p for p in check_plan(_plan(), cheap, strong + strong))
    assert any("tokens logged" in p for p in check_plan(_plan(), cheap, [_log(prefix_for([S1]), 7)]))
    # a fallback makes one whole-query request to the cheap server, counted in plan.usage too
    whole = {"continue_final_message": False, "prefix": None, "completion_tokens": 4}
    assert check_plan(_plan(fallback="x", cheap_tokens=13), cheap + [whole], strong) == []
    assert any("whole-query" in p for p in check_plan(_plan(cheap_tokens=13), cheap + [whole], strong))
