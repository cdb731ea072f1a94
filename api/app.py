"""The HTTP service: `create_app(config) -> FastAPI` (OpenAPI docs at /docs).

What it owns: the endpoints, error mapping, admission control, API-key auth and request metrics.

Endpoints: POST /plan, GET /plans/{id}, POST /feedback, POST /check, GET /databases,
GET /databases/{id}/schema, GET|PUT /generators[/active], GET|PUT /discriminators[/active], GET /health,
GET /metrics.

Errors are precise and never 500 for bad input: validation (empty/oversize question, n out of range, wrong
types, malformed JSON, unknown policy/pair/router) -> 422; unknown database or plan -> 404; queue full ->
429 with Retry-After; a model backend down, timing out or failing to load -> 503 with the reason; the store
unreachable -> 503; the per-request deadline passed -> 504.

Admission: plans run on a dedicated pool of `limits.concurrency` worker threads (model calls block), so the
event loop stays responsive; at most `limits.queue_size` more wait; beyond that POST /plan answers 429 at
once. A plan's deadline counts from admission (queue time included); if a model call overruns it, the client
gets 504 at the deadline (plus a small grace) while the worker finishes in the background and only then
frees its slot, so the limit stays truthful.

Auth: when `api_key` is configured, every endpoint except /health, /docs, /redoc and /openapi.json needs
`Authorization: Bearer <key>` or `X-API-Key: <key>` (401 otherwise).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from api.limits import SafeJSONResponse
from api.limits import install as install_limits
from api.probes import install as install_probes
from api.probes import mark_draining
from api.schemas import (
    CheckRequest,
    DatabaseEntry,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    ModelsResponse,
    PlanRequest,
    SwitchRequest,
)
from core.model import Plan, Question
from core.registry import UnknownName
from planner.config import Config, load_config
from planner.metrics import CONTENT_TYPE, ServiceMetrics
from planner.pipeline import DeadlineExceeded, Planner, PlanRequestError
from planner.plans import PlanStore, UnknownPlan

log = logging.getLogger(__name__)
T = TypeVar("T")
VERSION = "0.1.0"
OPEN_PATHS = {"/health", "/livez", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}

_ERR = {"model": ErrorResponse}
PLAN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {**_ERR, "description": "missing or wrong API key"},
    404: {**_ERR, "description": "unknown database"},
    422: {**_ERR, "description": "invalid request (question, n, policy, pair, router, types, JSON)"},
    429: {**_ERR, "description": "too many plans queued; retry after the Retry-After header's seconds"},
    503: {**_ERR, "description": "a model backend or the store is unavailable"},
    504: {**_ERR, "description": "the per-request deadline passed"},
}


class Overloaded(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"too many plans in flight; retry after {retry_after}s")
        self.retry_after = retry_after


class Admission:
    """A bounded worker pool: `concurrency` plans run at once, `queue_size` more wait, the rest are refused."""

    def __init__(self, concurrency: int, queue_size: int):
        self.concurrency = concurrency
        self.capacity = concurrency + queue_size
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="plan")
        self._n = 0
        self._lock = threading.Lock()
        self._avg_s: float | None = None  # moving average of plan durations, for Retry-After

    @property
    def in_flight(self) -> int:
        return self._n

    def retry_after(self) -> int:
        avg = self._avg_s if self._avg_s is not None else 1.0
        waiting = max(0, self._n - self.concurrency) + 1
        return max(1, math.ceil(avg * waiting / self.concurrency))

    def submit(self, fn: Callable[[float], T]) -> concurrent.futures.Future[T]:
        """Run fn(admitted_at) on a worker, or raise Overloaded. The slot frees when fn really returns."""
        with self._lock:
            if self._n >= self.capacity:
                raise Overloaded(self.retry_after())
            self._n += 1
        admitted = time.monotonic()

        def run() -> T:
            t = time.monotonic()
            try:
                return fn(admitted)
            finally:
                d = time.monotonic() - t
                with self._lock:
                    self._avg_s = d if self._avg_s is None else 0.8 * self._avg_s + 0.2 * d

        try:
            fut = self.executor.submit(run)
        except BaseException:
            self._release(None)
            raise
        fut.add_done_callback(self._release)
        return fut

    def _release(self, _fut: Any) -> None:
        with self._lock:
            self._n -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _switch_error(e: Exception) -> HTTPException:
    from core.errors import BackendError

    if isinstance(e, BackendError):
        return HTTPException(503, f"checkpoint switch failed, the previous one stays active: {e}")
    return HTTPException(422, str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))


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
    metrics = ServiceMetrics()
    admission = Admission(cfg.limits.concurrency, cfg.limits.queue_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if cfg.warmup:
            threading.Thread(target=_warmup, args=(planner,), name="warmup", daemon=True).start()
        if getattr(planner.executor, "pool", None) is not None:  # start the sandbox workers (sqlbox.isolation)
            threading.Thread(target=_safe, args=(planner.executor.pool.warm, None), name="sandbox-warmup",
                             daemon=True).start()
        yield
        mark_draining(app)
        admission.shutdown()
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
    app.state.config, app.state.planner, app.state.store = cfg, planner, store
    app.state.metrics, app.state.admission = metrics, admission

    # ---------------------------------------------------------------- auth
    bearer = HTTPBearer(auto_error=False, description="API key as a bearer token (when a key is configured)")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (when a key is configured)")

    async def require_key(creds: HTTPAuthorizationCredentials | None = Depends(bearer),
                          x_key: str | None = Depends(header_key)) -> None:
        if not cfg.api_key:
            return
        given = creds.credentials if creds is not None else x_key
        if not given or not secrets.compare_digest(given.encode(), cfg.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send `Authorization: Bearer <key>` or `X-API-Key`",
                                headers={"WWW-Authenticate": "Bearer"})

    # ---------------------------------------------------------------- errors
    def _err(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
        return SafeJSONResponse({"detail": detail}, status_code=status, headers=headers)

    def _status_handler(status: int):
        async def handler(_: Request, e: Exception) -> JSONResponse:
            return _err(status, str(e))
        return handler

    from sqlbox.databases import UnknownDatabase

    # Caller errors with a fixed status; the message is the exception's own.
    for exc_type, status in ((UnknownDatabase, 404), (UnknownPlan, 404), (PlanRequestError, 422),
                             (UnknownName, 422), (DeadlineExceeded, 504)):
        app.add_exception_handler(exc_type, _status_handler(status))

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, e: Overloaded):
        metrics.overload.inc()
        return _err(429, str(e), {"Retry-After": str(e.retry_after)})

    @app.exception_handler(SQLAlchemyError)
    async def _store(_: Request, e: SQLAlchemyError):
        return _err(503, f"plan store unavailable: {type(e).__name__}: {str(e).splitlines()[0][:300]}")

    from core.errors import BackendError

    @app.exception_handler(BackendError)
    async def _backend(_: Request, e: BackendError):
        return _err(503, f"model backend unavailable: {type(e).__name__}: {e}")

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception):  # last resort: still JSON, and logged
        log.exception("internal error")
        return _err(500, f"internal error: {type(e).__name__}")

    # ---------------------------------------------------------------- metrics middleware
    @app.middleware("http")
    async def _count(request: Request, call_next):
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

    # ---------------------------------------------------------------- open endpoints
    @app.get("/health", response_model=HealthResponse, tags=["service"], summary="Readiness and model state")
    async def health() -> HealthResponse:
        store_ok = await run_in_threadpool(store.ping)
        gen_loaded = _safe(planner.generators.loaded, False)
        disc_loaded = _safe(planner.discriminators.loaded, False)
        ready = store_ok and len(planner.registry) > 0
        return HealthResponse(
            status="ok" if ready else "degraded", ready=ready, store=store_ok, databases=len(planner.registry),
            models_loaded={"generator": gen_loaded, "discriminator": disc_loaded},
            active={"generator": planner.generators.active, "discriminator": planner.discriminators.active},
            in_flight=admission.in_flight, version=VERSION,
        )

    api = APIRouter(dependencies=[Depends(require_key)],
                    responses={400: {**_ERR, "description": "the request body could not be decoded"},
                               401: PLAN_RESPONSES[401]})

    # ---------------------------------------------------------------- planning
    @api.post("/plan", response_model=Plan, tags=["planning"], responses=PLAN_RESPONSES,
              summary="Plan one question: generate, check, judge, choose")
    async def plan_endpoint(req: PlanRequest) -> Plan:
        lim = cfg.limits
        if len(req.question) > lim.question_max_chars:
            raise HTTPException(422, f"question: at most {lim.question_max_chars} characters (got {len(req.question)})")
        if req.n is not None and req.n > lim.n_max:
            raise HTTPException(422, f"n: must be between 1 and {lim.n_max} (got {req.n})")
        if req.pair is not None and req.pair not in cfg.pairs:
            raise HTTPException(422, f"pair: unknown pair {req.pair!r}; known: {', '.join(cfg.pairs)}")
        if req.db_id not in planner.registry:
            planner.registry.get(req.db_id)  # raises UnknownDatabase -> 404 with the known ids
        deadline = req.deadline_s if req.deadline_s is not None else lim.deadline_s
        if deadline > lim.max_deadline_s:
            raise HTTPException(422, f"deadline_s: at most {lim.max_deadline_s:g} (got {deadline:g})")
        question = Question(text=req.question, db_id=req.db_id, evidence=req.evidence)

        def work(admitted: float) -> Plan:
            left = deadline - (time.monotonic() - admitted)
            if left <= 0:
                raise DeadlineExceeded("queue", time.monotonic() - admitted, deadline)
            p = planner.plan(question, n=req.n, policy=req.policy, pair=req.pair, router=req.router,
                             execute=req.execute, deadline_s=left)
            store.save(p)  # committed before the client hears of it
            return p

        fut = admission.submit(work)
        metrics.inflight.set(admission.in_flight)
        grace = max(1.0, 0.05 * deadline)
        afut = asyncio.wrap_future(fut)
        afut.add_done_callback(_consume)  # a result that arrives after a 504 is dropped without a warning
        try:
            result = await asyncio.wait_for(asyncio.shield(afut), timeout=deadline + grace)
        except TimeoutError:
            raise DeadlineExceeded("model call", deadline + grace, deadline) from None
        finally:
            metrics.inflight.set(admission.in_flight)
        metrics.observe_plan(result)
        return result

    @api.get("/plans/{plan_id}", response_model=Plan, tags=["planning"],
             responses={404: {**_ERR, "description": "unknown plan id"}}, summary="A stored plan")
    async def get_plan(plan_id: str) -> Plan:
        return await run_in_threadpool(store.get, plan_id)

    @api.post("/feedback", response_model=FeedbackResponse, tags=["planning"],
              responses={404: {**_ERR, "description": "unknown plan id"},
                         422: {**_ERR, "description": "invalid feedback (e.g. corrected_sql does not execute)"}},
              summary="Label a plan correct/incorrect and/or give the corrected SQL")
    async def feedback(req: FeedbackRequest,
                       idempotency_key: str | None = Header(
                           None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                           description="makes a retried feedback count once (without it: feedback with the same "
                           "content for the same plan counts once)")) -> FeedbackResponse:
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
            metrics.feedback.inc(label={True: "correct", False: "incorrect", None: "unlabelled"}[correct])
            await run_in_threadpool(planner.feedback, plan, correct, req.corrected_sql)
        return FeedbackResponse(id=fb.id, plan_id=fb.plan_id, correct=fb.correct, corrected_sql=fb.corrected_sql,
                                label_source=source, duplicate=fb.duplicate,
                                forwarded_to_router=plan.route.router if (plan.route and fb.correct is not None) else None)

    # ---------------------------------------------------------------- databases
    @api.post("/check", tags=["databases"], responses={404: {**_ERR, "description": "unknown database"}},
              summary="Check one SQL in the sandbox (same verdict as `sqlarbiter check`)")
    async def check(req: CheckRequest) -> dict[str, Any]:
        if len(req.sql) > cfg.limits.sql_max_chars:
            raise HTTPException(422, f"sql: at most {cfg.limits.sql_max_chars} characters (got {len(req.sql)})")
        planner.registry.get(req.db_id)
        return await run_in_threadpool(_check_sql, planner.executor, req.db_id, req.sql)

    @api.get("/databases", response_model=list[DatabaseEntry], tags=["databases"], summary="Registered databases")
    async def databases() -> list[DatabaseEntry]:
        def collect() -> list[DatabaseEntry]:
            out = []
            for db in planner.registry.ids():
                info = planner.registry.get(db)
                n = _safe(lambda db=db: len(planner.registry.schema(db).tables), None)
                out.append(DatabaseEntry(db_id=db, kind=str(info.kind), n_tables=n))
            return out

        return await run_in_threadpool(collect)

    @api.get("/databases/{db_id}/schema", tags=["databases"], responses={404: {**_ERR, "description": "unknown database"}},
             summary="A database's schema (tables, columns, keys, sample values) and its prompt text")
    async def schema(db_id: str) -> dict[str, Any]:
        def get() -> dict[str, Any]:
            s = planner.registry.schema(db_id)
            return {**s.to_dict(), "prompt": planner.schema_prompt(db_id)}

        return await run_in_threadpool(get)

    # ---------------------------------------------------------------- models
    def _models(role: str) -> ModelsResponse:
        slots = planner.generators if role == "generator" else planner.discriminators
        return ModelsResponse(role=role, active=slots.active, models=[_jsonable(x) for x in slots.list()])

    async def _switch(role: str, name: str) -> ModelsResponse:
        slots = planner.generators if role == "generator" else planner.discriminators
        try:
            await run_in_threadpool(slots.switch, name)
        except Exception as e:  # unknown name -> 422; fails to load -> 503; the old one stays active
            raise _switch_error(e) from None
        return _models(role)

    switch_responses = {422: {**_ERR, "description": "unknown checkpoint name"},
                        503: {**_ERR, "description": "the checkpoint failed to load; the previous one stays active"}}

    @api.get("/generators", response_model=ModelsResponse, tags=["models"], summary="Generator checkpoints")
    async def generators() -> ModelsResponse:
        return _models("generator")

    @api.put("/generators/active", response_model=ModelsResponse, tags=["models"], responses=switch_responses,
             summary="Switch the active generator checkpoint at run time")
    async def switch_generator(req: SwitchRequest) -> ModelsResponse:
        return await _switch("generator", req.name)

    @api.get("/discriminators", response_model=ModelsResponse, tags=["models"], summary="Discriminator checkpoints")
    async def discriminators() -> ModelsResponse:
        return _models("discriminator")

    @api.put("/discriminators/active", response_model=ModelsResponse, tags=["models"], responses=switch_responses,
             summary="Switch the active discriminator checkpoint at run time")
    async def switch_discriminator(req: SwitchRequest) -> ModelsResponse:
        return await _switch("discriminator", req.name)

    # ---------------------------------------------------------------- metrics
    @api.get("/metrics", response_class=PlainTextResponse, tags=["service"], summary="Prometheus metrics")
    async def metrics_endpoint() -> PlainTextResponse:
        metrics.inflight.set(admission.in_flight)
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    app.include_router(api)
    return app


def _check_sql(executor, db_id: str, sql: str) -> dict[str, Any]:
    """The `sqlarbiter check --json` verdict: api.cmd_check.check_sql when it exists, else the same
    shape built here from the executor ({"verdict": ok|rejected|failed, "db": id, **ExecutionResult})."""
    try:
        from api.cmd_check import check_sql
    except ImportError:
        check_sql = None
    if check_sql is not None:
        return check_sql(executor, db_id, sql)
    r = executor.execute(db_id, sql)
    verdict = "ok" if r.ok else ("rejected" if r.error_kind == "rejected" else "failed")
    return {"verdict": verdict, "db": db_id, **r.model_dump(mode="json")}


def _consume(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()


def _safe(fn: Callable[[], T], default: T) -> T:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - a health probe must not fail
        return default


def _jsonable(x: Any) -> dict[str, Any]:
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    if hasattr(x, "__dataclass_fields__"):
        import dataclasses

        return {k: _jsonable_value(v) for k, v in dataclasses.asdict(x).items()}
    return {k: _jsonable_value(v) for k, v in dict(x).items()}


def _jsonable_value(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable_value(x) for x in v]
    if hasattr(v, "model_dump"):
        return v.model_dump(mode="json")
    return str(v)


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
