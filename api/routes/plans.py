"""POST /plan (admission-controlled, with a per-request deadline) and GET /plans/{id}.

The request is checked by `Planner.validate` (422 `PlanRequestError`, 404 unknown database) before it is
admitted, and run by the admitted-plan runner it shares with `POST /plan/stream` (`api.runner`)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from api import runner
from api.schemas import PlanRequest
from api.state import ERR, PLAN_RESPONSES, State
from core.model import Plan
from planner.pipeline import DeadlineExceeded

router = APIRouter(tags=["planning"])


@router.post("/plan", response_model=Plan, responses=PLAN_RESPONSES,
             summary="Plan one question: generate, check, judge, choose")
async def plan_endpoint(req: PlanRequest, s: State) -> Plan:
    v = s.planner.validate(req)  # 422 / 404 before admission
    fut = runner.submit(s, v)
    afut = asyncio.wrap_future(fut)
    afut.add_done_callback(_consume)  # a result that arrives after a 504 is dropped without a warning
    try:
        result = await asyncio.wait_for(asyncio.shield(afut), timeout=runner.wait_s(v))
    except TimeoutError:
        raise DeadlineExceeded("model call", runner.wait_s(v), v.deadline_s) from None
    finally:
        s.metrics.inflight.set(s.admission.in_flight)
    s.metrics.observe_plan(result)
    return result


@router.get("/plans/{plan_id}", response_model=Plan, responses={404: {**ERR, "description": "unknown plan id"}},
            summary="A stored plan")
async def get_plan(plan_id: str, s: State) -> Plan:
    return await run_in_threadpool(s.store.get, plan_id)


def _consume(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()
