"""The service's error mapping: caller errors to 404/422/504, overload to 429 with Retry-After, the store or a
model backend down to 503, anything else to a logged JSON 500. Every error body is `{"detail": ...}`, rendered by
`api.limits.SafeJSONResponse` (HTTPExceptions too): it cannot fail to render and names no host path."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.admission import Overloaded
from api.limits import SafeJSONResponse, redact_paths
from api.state import get_state
from core.errors import BackendError
from core.registry import UnknownName
from planner.pipeline import DeadlineExceeded, PlanRequestError
from planner.plans import UnknownPlan
from sqlbox.databases import UnknownDatabase
from sqlbox.privileges import PrivilegeError, RoleCheckError

log = logging.getLogger("api.app")

# Caller errors with a fixed status; the message is the exception's own.
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (UnknownDatabase, 404), (UnknownPlan, 404), (PlanRequestError, 422), (UnknownName, 422), (DeadlineExceeded, 504),
    (PrivilegeError, 403), (RoleCheckError, 503))  # a server database refused for its role / its server down


def error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return SafeJSONResponse({"detail": detail}, status_code=status, headers=headers)


def _fixed(status: int):
    async def handler(_: Request, e: Exception) -> JSONResponse:
        return error(status, str(e))
    return handler


async def _http(_: Request, e: StarletteHTTPException) -> Response:
    """FastAPI's HTTPException answer (same status, detail and headers), with the safe error body."""
    headers = getattr(e, "headers", None)
    if not is_body_allowed_for_status_code(e.status_code):
        return Response(status_code=e.status_code, headers=headers)
    return error(e.status_code, e.detail, headers)


async def _overloaded(request: Request, e: Overloaded) -> JSONResponse:
    if e.what == "plans":  # the metric counts refused plans (a refused check is only its 429)
        get_state(request).metrics.overload.inc()
    return error(429, str(e), {"Retry-After": str(e.retry_after)})


def status_of(e: BaseException) -> tuple[int, str] | None:
    """The status and detail the service answers for `e` (None: an internal error). One mapping for the
    exception handlers and the streamed plan (`api.ui`)."""
    for exc_type, status in STATUS:
        if isinstance(e, exc_type):
            return status, redact_paths(str(e))
    if isinstance(e, SQLAlchemyError):
        return 503, redact_paths(f"plan store unavailable: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    if isinstance(e, BackendError):
        return 503, redact_paths(f"model backend unavailable: {type(e).__name__}: {e}")
    return None


RETRY_AFTER_503 = {"Retry-After": "2"}  # the store or a model server restarting: worth retrying shortly


async def _store(_: Request, e: SQLAlchemyError) -> JSONResponse:
    status, detail = status_of(e)
    return error(status, detail, RETRY_AFTER_503 if status == 503 else None)


async def _backend(_: Request, e: BackendError) -> JSONResponse:
    status, detail = status_of(e)
    return error(status, detail, RETRY_AFTER_503 if status == 503 else None)


async def _internal(_: Request, e: Exception) -> JSONResponse:  # last resort: still JSON, and logged
    log.exception("internal error")
    return error(500, f"internal error: {type(e).__name__}")


def install(app: FastAPI) -> None:
    for exc_type, status in STATUS:
        app.add_exception_handler(exc_type, _fixed(status))
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(SQLAlchemyError, _store)
    app.add_exception_handler(BackendError, _backend)
    app.add_exception_handler(Exception, _internal)
