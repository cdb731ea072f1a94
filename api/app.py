"""The HTTP service: `create_app(config) -> FastAPI` (OpenAPI docs at /docs).

`create_app` only assembles: it builds the shared `api.state.AppState` (config, planner, plan store, metrics,
admission pool), installs the error mapping (`api.errors`) and the request-metrics middleware, and includes one
router per resource (`api.routes`: plans, feedback, check, databases, models, health).

Endpoints: POST /plan, GET /plans/{id}, POST /feedback, POST /check, GET /databases,
GET /databases/{id}/schema, GET|PUT /generators[/active], GET|PUT /discriminators[/active], GET /health,
GET /metrics; the playground pages (/ui/) and POST /plan/stream come from `api.ui`.

Errors are precise and never 500 for bad input: validation (empty/oversize question, n out of range, wrong
types, malformed JSON, unknown policy/pair/router) -> 422; unknown database or plan -> 404; queue full ->
429 with Retry-After; a model backend down, timing out or failing to load -> 503 with the reason; the store
unreachable -> 503; the per-request deadline passed -> 504.

Admission (`api.admission`): plans run on a dedicated pool of `limits.concurrency` worker threads (model calls
block), so the event loop stays responsive; at most `limits.queue_size` more wait; beyond that POST /plan
answers 429 at once. POST /check has its own pool (`limits.check_concurrency`, default one per sandbox worker;
`limits.check_queue_size`, default `limits.queue_size`): checks beyond it answer 429 rather than queue behind
runaway SQL. A plan's deadline counts from admission (queue time included); if a model call overruns
it, the client gets 504 at the deadline (plus a small grace) while the worker finishes in the background and
only then frees its slot, so the limit stays truthful.

Auth: when `api_key` is configured, every endpoint except /health, /docs, /redoc and /openapi.json needs
`Authorization: Bearer <key>` or `X-API-Key: <key>` (401 otherwise).
"""

from __future__ import annotations

import contextlib
import threading
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response

from api import errors
from api.admission import Admission, Overloaded
from api.limits import install as install_limits
from api.probes import install as install_probes
from api.probes import mark_draining
from api.routes import check, databases, feedback, health, models, plans
from api.state import OPEN_PATHS, PROTECTED_RESPONSES, VERSION, AppState, require_key
from api.ui import router as ui_router
from planner.config import Config, load_config
from planner.metrics import ServiceMetrics
from planner.pipeline import Planner
from planner.plans import PlanStore

__all__ = ["OPEN_PATHS", "VERSION", "Admission", "Overloaded", "create_app"]

# Behind the API key, in the order the OpenAPI document lists them (GET /health is open and comes first).
PROTECTED = (plans.router, feedback.router, check.router, databases.router, models.router, health.router)


def create_app(config: Config | str | None = None, *, planner: Planner | None = None,
               store: PlanStore | None = None) -> FastAPI:
    """Build the service. `config`: a Config, a config file path, or None (SQLARBITER_CONFIG / built-in)."""
    if planner is not None:
        cfg = planner.config
    else:
        cfg = config if isinstance(config, Config) else load_config(config)
    store = store or PlanStore(cfg.store_url)
    planner = planner or Planner(cfg, engine=store.engine)
    _log_outcomes(planner, store)
    state = AppState(config=cfg, planner=planner, store=store, metrics=ServiceMetrics(),
                     admission=Admission(cfg.limits.concurrency, cfg.limits.queue_size),
                     check_admission=check_admission(cfg))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if cfg.warmup:
            threading.Thread(target=_warmup, args=(planner,), name="warmup", daemon=True).start()
        if getattr(planner.executor, "pool", None) is not None:  # start the sandbox workers (sqlbox.isolation)
            threading.Thread(target=_safe_warm, args=(planner.executor.pool,), name="sandbox-warmup",
                             daemon=True).start()
        yield
        mark_draining(app)
        state.admission.shutdown()
        state.check_admission.shutdown()
        planner.close()

    app = FastAPI(
        title="sqlarbiter",
        version=VERSION,
        description="Text-to-SQL planning: generate SQL candidates, check them in a sandboxed DuckDB, judge them "
        "with a reasoning discriminator, choose one, route by quality and cost.",
        lifespan=lifespan,
    )
    install_limits(app, cfg)  # body limit, safe 4xx bodies, the schema's bounds from the config (api.limits)
    install_probes(app, planner, store)  # GET /livez, GET /readyz (api.probes)
    app.state.sqlarbiter = state
    # The same objects under their own names, for callers and tests that reach into the app.
    app.state.config, app.state.planner, app.state.store = cfg, planner, store
    app.state.metrics, app.state.admission = state.metrics, state.admission
    app.state.check_admission = state.check_admission

    errors.install(app)
    app.middleware("http")(_count_requests)
    app.include_router(health.open_router)
    for router in PROTECTED:
        app.include_router(router, dependencies=[Depends(require_key)], responses=PROTECTED_RESPONSES)
    app.include_router(ui_router(Depends(require_key)))  # the playground (/ui/) and POST /plan/stream
    return app


def check_admission(cfg: Config) -> Admission:
    """POST /check's pool: `limits.check_concurrency` at once (default: one per sandbox worker, which is where
    the SQL runs), `limits.check_queue_size` more waiting (default: `limits.queue_size`)."""
    lim = cfg.limits
    concurrency = lim.check_concurrency if lim.check_concurrency is not None else lim.sandbox_workers
    queue = lim.check_queue_size if lim.check_queue_size is not None else lim.queue_size
    return Admission(concurrency, queue, what="checks")


def _safe_warm(pool) -> None:
    try:
        pool.warm()
    except Exception:  # noqa: BLE001 - a failed warm-up shows on the first candidate, with its error
        pass


async def _count_requests(request: Request, call_next):
    """Request count and latency by route template (`unmatched` for 404s on unknown paths), method, status."""
    metrics = request.app.state.sqlarbiter.metrics
    t = time.perf_counter()
    status = 500
    try:
        response: Response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        metrics.requests.inc(endpoint=endpoint, method=request.method, status=str(status))
        metrics.request_seconds.observe(time.perf_counter() - t, endpoint=endpoint)


def _log_outcomes(planner: Planner, store: PlanStore) -> None:
    """Log every plan's outcome (and label it on feedback) in the routers' outcomes table, when installed."""
    try:
        from routing.outcomes import OutcomeLogger, OutcomeStore
    except ImportError:
        return
    if any(isinstance(h, OutcomeLogger) for h in planner.on_plan):
        return
    logger = OutcomeLogger(OutcomeStore(store.engine))
    planner.on_plan.append(logger)
    planner.on_feedback.append(logger.feedback)


def _warmup(planner: Planner) -> None:
    for slots in (planner.generators, planner.discriminators):
        with contextlib.suppress(Exception):
            slots.warmup()
