"""The one check of a plan request: `validate(planner, request) -> ValidatedRequest` (`Planner.validate`).

Every caller goes through it: `POST /plan` and `POST /plan/stream` (before the plan is admitted), and
`Planner.plan` (the CLI, eval, benchmarks). The HTTP schema (`api.schemas.PlanRequest`) checks only types and
shapes (a string, a positive integer, hard ceilings); the domain rules live here, in this order:

- `question`: not blank, at most `limits.question_max_chars` characters;
- `n` (default `defaults.n`): between 1 and `limits.n_max`;
- `policy` (default `defaults.policy`): a registered selection policy (`planner.select.check_policy`);
- `abstain_below` (default `defaults.abstain_below`): between 0 and 1;
- `pair` and `router`: not both; a known pair; a known router that this configuration can build;
- `db_id`: a registered database (`sqlbox.databases.UnknownDatabase`, HTTP 404, not a request error);
- `deadline_s` (default `limits.deadline_s`): positive, at most `limits.max_deadline_s` (`math.inf`, which
  the HTTP schema does not admit, means none: the CLI's default).

A broken rule raises `core.errors.PlanRequestError` (HTTP 422, CLI exit 2), the one request error type; its
message starts with the field. A policy that needs scores on a route without a discriminator can only be
known once the router has decided, so the pipeline checks that at the route stage (same error type).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.errors import PlanRequestError
from core.model import Question
from planner.select import check_policy

__all__ = ["PlanArgs", "PlanRequestError", "ValidatedRequest", "validate"]


@dataclass(frozen=True)
class PlanArgs:
    """A plan request as in-process callers give it (the API's `PlanRequest` has the same attributes, with
    the question's text in `question`)."""

    question: Question | str
    db_id: str | None = None
    evidence: str | None = None
    n: int | None = None
    policy: str | None = None
    pair: str | None = None
    router: str | None = None
    execute: bool = False
    deadline_s: float | None = None
    abstain_below: float | None = None


@dataclass(frozen=True)
class ValidatedRequest:
    """A plan request that passed `validate`, with every default filled in from the configuration."""

    question: Question
    n: int
    policy: str
    pair: str | None
    router: str | None
    execute: bool
    deadline_s: float  # seconds from when the plan starts; math.inf: none
    abstain_below: float | None


def _question(request: Any) -> Question:
    q = request.question
    if isinstance(q, Question):
        return q
    return Question(text=q, db_id=request.db_id, evidence=getattr(request, "evidence", None))


def validate(planner: Any, request: Any) -> ValidatedRequest:
    """Check `request` (a `PlanArgs`, or any object with its attributes) against `planner`'s configuration,
    databases and routers; see the module docstring for the rules."""
    cfg = planner.config
    lim, d = cfg.limits, cfg.defaults
    question = _question(request)
    if not question.text or not question.text.strip():
        raise PlanRequestError("question: must not be blank (empty or only white space)")
    if len(question.text) > lim.question_max_chars:
        raise PlanRequestError(f"question: at most {lim.question_max_chars} characters (got {len(question.text)})")
    n = d.n if request.n is None else request.n
    if not 1 <= n <= lim.n_max:
        raise PlanRequestError(f"n: must be between 1 and {lim.n_max} (got {n})")
    policy = check_policy(request.policy or d.policy)  # PolicyError is a PlanRequestError
    abstain_below = d.abstain_below if request.abstain_below is None else request.abstain_below
    if abstain_below is not None and not 0.0 <= abstain_below <= 1.0:
        raise PlanRequestError(f"abstain_below: must be between 0 and 1 (got {abstain_below})")
    pair, router = request.pair, request.router
    if pair is not None and router is not None:
        raise PlanRequestError("give either `pair` or `router`, not both")
    if pair is not None and pair not in cfg.pairs:
        raise PlanRequestError(f"pair: unknown pair {pair!r}; known: {', '.join(cfg.pairs)}")
    if router is not None:
        from planner.config import known_routers

        routers = known_routers()
        if router not in routers:
            raise PlanRequestError(f"router: unknown router {router!r}; known: {', '.join(routers.names())}")
        planner.router(router)  # built once; PlanRequestError when this configuration cannot build it
    planner.registry.get(question.db_id)  # UnknownDatabase (404) with the known ids
    deadline = lim.deadline_s if request.deadline_s is None else float(request.deadline_s)
    if not deadline > 0:
        raise PlanRequestError(f"deadline_s: must be positive (got {deadline:g})")
    if deadline > lim.max_deadline_s and deadline != math.inf:
        raise PlanRequestError(f"deadline_s: at most {lim.max_deadline_s:g} (got {deadline:g})")
    return ValidatedRequest(question=question, n=n, policy=policy, pair=pair, router=router,
                            execute=bool(request.execute), deadline_s=deadline, abstain_below=abstain_below)
