"""POST /check: one SQL through the guard and the sandboxed executor (the `sqlarbiter check --json` verdict),
admission-controlled like POST /plan (its own pool, `api.app.check_admission`): beyond it, 429 with Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError

from api.schemas import CheckRequest
from api.state import ERR, State
from sqlbox.verdict import check_sql

router = APIRouter(tags=["databases"])


@router.post("/check", responses={404: {**ERR, "description": "unknown database"},
                                  429: {**ERR, "description": "too many checks in flight; retry after the "
                                        "Retry-After header's seconds"}},
             summary="Check one SQL in the sandbox (same verdict as `sqlarbiter check`)")
async def check(req: CheckRequest, s: State) -> dict[str, Any]:
    if len(req.sql) > s.config.limits.sql_max_chars:  # the configured limit: a validation error like the schema's
        raise RequestValidationError([{
            "type": "string_too_long", "loc": ("body", "sql"), "input": None,
            "msg": f"sql: at most {s.config.limits.sql_max_chars} characters (got {len(req.sql)})",
            "ctx": {"max_length": s.config.limits.sql_max_chars}}])
    s.planner.registry.get(req.db_id)
    executor = s.planner.executor
    fut = s.check_admission.submit(lambda _admitted: check_sql(executor, req.db_id, req.sql, req.dialect))  # or 429
    return await asyncio.wrap_future(fut)
