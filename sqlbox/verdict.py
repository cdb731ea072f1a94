"""The verdict of one checked SQL (what `sqlarbiter check` prints and POST /check returns): ok, rejected by
the guard, or failed when it ran."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.model import ErrorKind, ExecutionResult

if TYPE_CHECKING:
    from sqlbox.executor import Executor


def verdict(res: ExecutionResult) -> str:
    """"ok", "rejected" (the guard refused it) or "failed" (it ran and failed)."""
    if res.ok:
        return "ok"
    return "rejected" if res.error_kind == ErrorKind.REJECTED else "failed"


def verdict_record(db_id: str, res: ExecutionResult) -> dict:
    """{"verdict": ok|rejected|failed, "db": id, **ExecutionResult}."""
    return {"verdict": verdict(res), "db": db_id, **res.model_dump(mode="json")}


def check_sql(executor: Executor, db_id: str, sql: str, dialect: str | None = None) -> dict:
    """Run `sql` on `db_id` in the database's own dialect unless `dialect` is given; its `verdict_record`."""
    dialect = dialect or executor.registry.get(db_id).dialect
    return verdict_record(db_id, executor.execute(db_id, sql, dialect=dialect))
