"""POST /plan (admission-controlled, with a per-request deadline) and GET /plans/{id}."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool

from api.schemas import PlanRequest
from api.state import ERR, PLAN_RESPONSES, State
from core.model import Plan, Question
from planner.pipeline import DeadlineExceeded

router = APIRouter(tags=["planning"])


@router.post("/plan", response_model=Plan, responses=PLAN_RESPONSES,
             summary="Plan one question: generate, check, judge, choose")
async def plan_endpoint(req: PlanRequest, s: State) -> Plan:
    cfg, planner, store, metrics, admission = s.config, s.planner, s.store, s.metrics, s.admission
    deadline = check_plan_request(req, cfg, planner)
    question = Question(text=req.question, db_id=req.db_id, evidence=req.evidence)

    def work(admitted: float) -> Plan:
        left = deadline - (time.monotonic() - admitted)
        if left <= 0:
            raise DeadlineExceeded("queue", time.monotonic() - admitted, deadline)
        p = planner.plan(question, n=req.n, policy=req.policy, pair=req.pair, router=req.router,
                         execute=req.execute, deadline_s=left, abstain_below=req.abstain_below)
        store.save(p)  # committed before the client hears of it
        return p

    fut = admission.submit(work)
    metrics.inflight.set(admission.in_flight)
    grace = max(1.0, 0.05 * deadline)
    afut = asyncio.wrap_future(fut)
    afut.add_done_callback(_consume)  # a result that arrives after a 504 is dropped without a warning
    try:
        result = await asyncio.wait_for(asyncio.shield(afut), timeout=deadline + grace)
    except TimeoutError:
        raise DeadlineExceeded("model call", deadline + grace, deadline) from None
    finally:
        metrics.inflight.set(admission.in_flight)
    metrics.observe_plan(result)
    return result


def check_plan_request(req: PlanRequest, cfg, planner) -> float:
    """A plan request's configured bounds (422) and database (404), checked before it is admitted (also by the
    streamed plan, `api.ui`); returns its deadline in seconds."""
    lim = cfg.limits
    if len(req.question) > lim.question_max_chars:
        raise HTTPException(422, f"question: at most {lim.question_max_chars} characters (got {len(req.question)})")
    if req.n is not None and req.n > lim.n_max:
        raise HTTPException(422, f"n: must be between 1 and {lim.n_max} (got {req.n})")
    if req.pair is not None and req.pair not in cfg.pairs:
        raise HTTPException(422, f"pair: unknown pair {req.pair!r}; known: {', '.join(cfg.pairs)}")
    if req.router is not None:
        from planner.config import known_routers

        routers = known_routers()
        if req.router not in routers:
            raise HTTPException(422, f"router: unknown router {req.router!r}; known: {', '.join(routers.names())}")
    if req.db_id not in planner.registry:
        planner.registry.get(req.db_id)  # raises UnknownDatabase -> 404 with the known ids
    deadline = req.deadline_s if req.deadline_s is not None else lim.deadline_s
    if deadline > lim.max_deadline_s:
        raise HTTPException(422, f"deadline_s: at most {lim.max_deadline_s:g} (got {deadline:g})")
    return deadline


@router.get("/plans/{plan_id}", response_model=Plan, responses={404: {**ERR, "description": "unknown plan id"}},
            summary="A stored plan")
async def get_plan(plan_id: str, s: State) -> Plan:
    return await run_in_threadpool(s.store.get, plan_id)


def _consume(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()
