"""The data model: Plans round-trip through JSON without loss."""

from core.model import (
    Candidate,
    ErrorKind,
    ExecutionResult,
    Plan,
    Question,
    RouteDecision,
    Score,
    ScoredCandidate,
    TokenUsage,
)


def _plan() -> Plan:
    ok = ExecutionResult(ok=True, columns=["n"], rows=[[3]], row_count=1, elapsed_ms=1.5,
                         fingerprint="abc", ordered_fingerprint="def", executed_sql="SELECT 3")
    bad = ExecutionResult(ok=False, error_kind=ErrorKind.BINDER, error="no such column: x")
    return Plan(
        question=Question(text="How many?", db_id="demo", evidence="hint"),
        status="ok",
        chosen=0,
        chosen_sql="SELECT count(*) FROM singer",
        reason="best",
        route=RouteDecision(pair="p", generator="g", discriminator="d", predicted_quality=0.7,
                            predicted_cost=0.01, steps=["p"], details={"mu": 0.3}),
        candidates=[
            ScoredCandidate(candidate=Candidate(sql="SELECT count(*) FROM singer", source="g", duplicates=2),
                            execution=ok, scores=[Score(score=0.91, verdict=True, reasoning="ok", prompt_tokens=10)],
                            cluster=0, selection_score=0.91),
            ScoredCandidate(candidate=Candidate(sql="SELECT x FROM singer", source="g"), execution=bad,
                            scores=[Score(score=0.5, parse_failure=True)]),
        ],
        timings_ms={"generate": 10.0, "total": 12.5},
        usage=[TokenUsage(model="g", role="generator", prompt_tokens=100, completion_tokens=20, cost=0.002, calls=1)],
        total_cost=0.002,
    )


def test_plan_json_round_trip_is_lossless():
    plan = _plan()
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert again.candidates[1].execution.error_kind is ErrorKind.BINDER
    assert again.chosen_candidate.candidate.duplicates == 2


def test_plans_have_unique_ids_and_reject_unknown_fields():
    assert _plan().id != _plan().id
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError):
        Question(text="q", db_id="d", nonsense=1)
