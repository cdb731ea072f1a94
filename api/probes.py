"""Liveness and readiness, separately (for an orchestrator or a load balancer in front of N replicas).

- GET /livez: the process and its event loop answer (200 `{"live": true}`); restart the replica if not;
- GET /readyz: this replica should get traffic: the store answers, databases are registered, the sandbox
  workers can be started, and the replica is not draining. 200 `{"ready": true, ...}` or 503 with the
  failing checks. `sqlarbiter serve` drains on SIGTERM (uvicorn stops accepting connections and waits for
  the requests in flight, up to `limits.max_deadline_s`); `mark_draining(app)` makes /readyz answer 503 first.
GET /health (in api.app) keeps its detailed report.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse


def mark_draining(app: FastAPI) -> None:
    app.state.draining = True


def install(app: FastAPI, planner, store) -> None:
    app.state.draining = False

    @app.get("/livez", tags=["service"], summary="Liveness: the process answers")
    async def livez() -> dict[str, bool]:
        return {"live": True}

    @app.get("/readyz", tags=["service"], summary="Readiness: this replica should receive traffic",
             responses={503: {"description": "not ready (store down, no databases, draining)"}})
    async def readyz() -> JSONResponse:
        checks: dict[str, Any] = {"store": await run_in_threadpool(store.ping), "databases": len(planner.registry) > 0,
                                  "draining": bool(getattr(app.state, "draining", False))}
        pool = getattr(planner.executor, "pool", None)
        checks["sandbox_workers"] = pool.alive if pool is not None else None
        ready = checks["store"] and checks["databases"] and not checks["draining"]
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)
