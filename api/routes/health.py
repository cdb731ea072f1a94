"""GET /health (open: readiness, store, loaded and active models) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from api.schemas import HealthResponse
from api.state import VERSION, State, safe
from planner.metrics import CONTENT_TYPE

open_router = APIRouter(tags=["service"])  # no API key: probes must reach it
router = APIRouter(tags=["service"])


@open_router.get("/health", response_model=HealthResponse, summary="Readiness and model state")
async def health(s: State) -> HealthResponse:
    planner = s.planner
    store_ok = await run_in_threadpool(s.store.ping)
    gen_loaded = safe(planner.generators.loaded, False)
    disc_loaded = safe(planner.discriminators.loaded, False)
    ready = store_ok and len(planner.registry) > 0
    return HealthResponse(
        status="ok" if ready else "degraded", ready=ready, store=store_ok, databases=len(planner.registry),
        models_loaded={"generator": gen_loaded, "discriminator": disc_loaded},
        active={"generator": planner.generators.active, "discriminator": planner.discriminators.active},
        in_flight=s.admission.in_flight, version=VERSION,
    )


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics_endpoint(s: State) -> PlainTextResponse:
    s.metrics.inflight.set(s.admission.in_flight)
    return PlainTextResponse(s.metrics.render(), media_type=CONTENT_TYPE)
