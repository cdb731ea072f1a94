"""POST /check: one SQL through the guard and the sandboxed executor (the `sqlarbiter check --json` verdict)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool

from api.cmd_check import check_sql
from api.schemas import CheckRequest
from api.state import ERR, State

router = APIRouter(tags=["databases"])


@router.post("/check", responses={404: {**ERR, "description": "unknown database"}},
             summary="Check one SQL in the sandbox (same verdict as `sqlarbiter check`)")
async def check(req: CheckRequest, s: State) -> dict[str, Any]:
    if len(req.sql) > s.config.limits.sql_max_chars:
        raise HTTPException(422, f"sql: at most {s.config.limits.sql_max_chars} characters (got {len(req.sql)})")
    s.planner.registry.get(req.db_id)
    return await run_in_threadpool(check_sql, s.planner.executor, req.db_id, req.sql)
