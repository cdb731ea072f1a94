"""What the endpoints share: the `AppState` (config, planner, plan store, metrics, admission pools) built once
by `create_app`, the `State` dependency that hands it to an endpoint, the API-key dependency, and the error
response documentation common to several endpoints."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.admission import Admission
from api.schemas import ErrorResponse
from planner.config import Config
from planner.metrics import ServiceMetrics
from planner.pipeline import Planner
from planner.plans import PlanStore

T = TypeVar("T")
VERSION = "0.1.0"
OPEN_PATHS = {"/health", "/livez", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}

ERR: dict[str, Any] = {"model": ErrorResponse}
PLAN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {**ERR, "description": "missing or wrong API key"},
    404: {**ERR, "description": "unknown database"},
    422: {**ERR, "description": "invalid request (question, n, policy, pair, router, types, JSON)"},
    429: {**ERR, "description": "too many plans queued; retry after the Retry-After header's seconds"},
    503: {**ERR, "description": "a model backend or the store is unavailable"},
    504: {**ERR, "description": "the per-request deadline passed"},
}
# Every endpoint behind the API key documents these.
PROTECTED_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**ERR, "description": "the request body could not be decoded"},
    401: PLAN_RESPONSES[401],
}


@dataclass(frozen=True)
class AppState:
    config: Config
    planner: Planner
    store: PlanStore
    metrics: ServiceMetrics
    admission: Admission  # POST /plan, /plan/stream
    check_admission: Admission  # POST /check


def get_state(request: Request) -> AppState:
    return request.app.state.sqlarbiter


State = Annotated[AppState, Depends(get_state)]

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token (when a key is configured)")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (when a key is configured)")


async def require_key(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
                      x_key: str | None = Depends(_header_key)) -> None:
    """401 unless the configured `api_key` (if any) comes as a bearer token or in X-API-Key."""
    key = get_state(request).config.api_key
    if not key:
        return
    given = creds.credentials if creds is not None else x_key
    if not given or not secrets.compare_digest(given.encode(), key.encode()):
        raise HTTPException(401, "missing or wrong API key: send `Authorization: Bearer <key>` or `X-API-Key`",
                            headers={"WWW-Authenticate": "Bearer"})


def safe(fn: Callable[[], T], default: T) -> T:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - a health probe or listing must not fail
        return default
