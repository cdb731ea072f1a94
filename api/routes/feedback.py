"""POST /feedback: label a stored plan and/or give the corrected SQL; forwarded to the planner (routers)."""

from __future__ import annotations

from fastapi import APIRouter, Header, HTTPException
from fastapi.concurrency import run_in_threadpool

from api.schemas import FeedbackRequest, FeedbackResponse
from api.state import ERR, State
from planner.plans import retry_store

router = APIRouter(tags=["planning"])


@router.post("/feedback", response_model=FeedbackResponse,
             responses={404: {**ERR, "description": "unknown plan id"},
                        422: {**ERR, "description": "invalid feedback (e.g. corrected_sql does not execute)"}},
             summary="Label a plan correct/incorrect and/or give the corrected SQL")
async def feedback(req: FeedbackRequest, s: State,
                   idempotency_key: str | None = Header(
                       None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                       description="makes a retried feedback count once (without it: feedback with the same "
                       "content for the same plan counts once)")) -> FeedbackResponse:
    planner, store = s.planner, s.store
    plan = await run_in_threadpool(store.get, req.plan_id)
    correct, source = req.correct, "client" if req.correct is not None else "none"
    if req.corrected_sql is not None:
        ex = await run_in_threadpool(planner.executor.execute, plan.question.db_id, req.corrected_sql)
        if not ex.ok:
            raise HTTPException(422, f"corrected_sql does not execute: {ex.error_kind}: {ex.error}")
        ch = plan.chosen_candidate
        if correct is None and ch is not None and ch.execution is not None and ch.execution.ok:
            correct = ch.execution.fingerprint == ex.fingerprint
            source = "corrected_sql_execution"
    fb = await run_in_threadpool(lambda: store.add_feedback(req.plan_id, correct=correct,
                                                            corrected_sql=req.corrected_sql,
                                                            idempotency_key=idempotency_key))
    if not fb.duplicate:  # a repeat is acknowledged, never counted or forwarded twice
        s.metrics.feedback.inc(label={True: "correct", False: "incorrect", None: "unlabelled"}[correct])
        # the feedback is stored: forward it now, waiting out a store restart (the router's update is one
        # transaction, rolled back when it fails), or a retry would find it stored and never forward it
        await run_in_threadpool(retry_store, lambda: planner.feedback(plan, correct, req.corrected_sql))
    return FeedbackResponse(id=fb.id, plan_id=fb.plan_id, correct=fb.correct, corrected_sql=fb.corrected_sql,
                            label_source=source, duplicate=fb.duplicate,
                            forwarded_to_router=plan.route.router if (plan.route and fb.correct is not None) else None)
