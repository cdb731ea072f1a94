"""GET /databases and GET /databases/{id}/schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from api.schemas import DatabaseEntry
from api.state import ERR, State, safe

router = APIRouter(tags=["databases"])


@router.get("/databases", response_model=list[DatabaseEntry], summary="Registered databases")
async def databases(s: State) -> list[DatabaseEntry]:
    registry = s.planner.registry

    def collect() -> list[DatabaseEntry]:
        out = []
        for db in registry.ids():
            info = registry.get(db)
            n = safe(lambda db=db: len(registry.schema(db).tables), None)
            out.append(DatabaseEntry(db_id=db, kind=str(info.kind), dialect=info.dialect, n_tables=n))
        return out

    return await run_in_threadpool(collect)


@router.get("/databases/{db_id}/schema", responses={404: {**ERR, "description": "unknown database"}},
            summary="A database's schema (tables, columns, keys, sample values) and its prompt text")
async def schema(db_id: str, s: State) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        sch = s.planner.registry.schema(db_id)
        return {**sch.to_dict(), "prompt": s.planner.schema_prompt(db_id)}

    return await run_in_threadpool(get)
