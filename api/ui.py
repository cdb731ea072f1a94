"""The playground: browser pages served by the service itself, and the endpoints only they need.

What it owns: `router(auth) -> APIRouter`, included by `api.app.create_app` with the API's key check as `auth`.

Pages (open, like /docs: static shells that hold no data; every request they make carries the API key the
user types in, and answers 401 without it when a key is configured):
- `GET /ui/` the playground: the plan page (question, database picker with a schema browser, pair or router,
  policy, n, execute; live stage progress; candidates with their execution, scores, clusters and the chosen
  one; a timings waterfall; tokens and cost; feedback), the models panel, and the eval-runs page (`#runs`).
- `GET /ui/static/{file}` its script and style sheet (plain JS/CSS in `api/static/`, no build step, no CDN).

Endpoints (behind `auth`):
- `POST /plan/stream`: `POST /plan` as server-sent events: `queued`, then `stage` events as each pipeline stage
  starts and ends, then one `plan` event (the Plan, stored like POST /plan's) or one `error` event
  (`{"status", "detail"}` with the status POST /plan would have answered). Bad requests (422, 404) and a full
  queue (429) are answered before the stream starts, as plain JSON errors.
- `GET /ui/api/options`: what the plan form offers (pairs, routers, policies, defaults, limits).
- `GET /ui/api/runs`, `GET /ui/api/run?name=`, `GET /ui/api/run/file?name=&file=`, `GET /ui/api/compare?a=&b=`:
  the eval runs under the runs folder (`Config.runs_dir`, `SQLARBITER_RUNS_DIR`, default `./runs`): each run's
  report (report.md rendered to HTML, or built from results.jsonl when the run has no report yet), its PNG
  plots, and two runs compared (what `sqlarbiter eval compare` prints).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse

from api import runner
from api.errors import status_of
from api.schemas import ErrorResponse, PlanRequest
from api.state import AppState

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"playground.js": "text/javascript", "playground.css": "text/css"}
RUN_MARKERS = ("report.json", "results.jsonl", "report.md")
MAX_RUNS = 500  # listed runs (newest first)
MAX_DEPTH = 4  # folders below the runs folder searched for runs
MAX_REPORT_BYTES = 5_000_000
KEEPALIVE_S = 15.0

_ERR = {"model": ErrorResponse}
STREAM_DOC = (
    "A `text/event-stream` of server-sent events, each `event: <name>` + `data: <JSON>`:\n\n"
    "- `queued`: `{\"in_flight\"}` once the plan is admitted;\n"
    "- `stage`: `{\"stage\", \"state\": \"start\"|\"done\"|\"failed\", \"ms\", \"elapsed_ms\"}` as each pipeline stage (route, "
    "generate, normalize, execute, discriminate, select) starts and ends; a cascade repeats the model stages;\n"
    "- `plan`: the finished Plan (same body as POST /plan; stored, so GET /plans/{id} and POST /feedback work);\n"
    "- `error`: `{\"status\", \"detail\"}` when the plan fails after the stream started (504 deadline, 503 backend "
    "or store, 422 request the router cannot serve).\n\n"
    "Exactly one `plan` or `error` event ends the stream. Comment lines (`: keep-alive`) may come in between."
)
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": STREAM_DOC, "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    404: {**_ERR, "description": "unknown database"},
    422: {**_ERR, "description": "invalid request (question, n, policy, pair, router, types, JSON)"},
    429: {**_ERR, "description": "too many plans queued; retry after the Retry-After header's seconds"},
}


def router(auth: Any) -> APIRouter:
    """The playground's routes; `auth` (a `Depends(...)`) guards every data endpoint, not the static pages."""
    r = APIRouter()
    data = APIRouter(dependencies=[auth], responses={400: {**_ERR, "description": "the request body could not be decoded"},
                                                     401: {**_ERR, "description": "missing or wrong API key"}})

    # ------------------------------------------------------------------ pages
    @r.get("/ui", include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @r.get("/ui/", include_in_schema=False, response_class=HTMLResponse)
    async def ui_page() -> HTMLResponse:
        return HTMLResponse((STATIC / "playground.html").read_text(encoding="utf-8"))

    @r.get("/ui/static/{name}", include_in_schema=False)
    async def ui_static(name: str) -> FileResponse:
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ plan, streamed
    @data.post("/plan/stream", tags=["planning"], response_class=StreamingResponse, responses=STREAM_RESPONSES,
               summary="Plan one question, streaming each stage as it completes (server-sent events)")
    async def plan_stream(req: PlanRequest, request: Request) -> StreamingResponse:
        st: AppState = request.app.state.sqlarbiter
        admission, metrics = st.admission, st.metrics
        v = st.planner.validate(req)  # 422 / 404 before admission, as plain JSON errors
        deadline = v.deadline_s
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def progress(ev: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("stage", ev))

        fut = runner.submit(st, v, progress)  # Overloaded -> the app's 429 handler, before any byte is streamed
        afut = asyncio.wrap_future(fut)
        afut.add_done_callback(lambda f: events.put_nowait(("done", f)))
        end = loop.time() + runner.wait_s(v)

        async def stream() -> AsyncIterator[str]:
            yield _sse("queued", {"in_flight": admission.in_flight})
            while True:
                left = end - loop.time()
                if left <= 0:
                    from planner.pipeline import DeadlineExceeded

                    yield _sse("error", {"status": 504, "detail": str(DeadlineExceeded("model call", deadline, deadline))})
                    return
                try:
                    kind, ev = await asyncio.wait_for(events.get(), timeout=min(KEEPALIVE_S, left))
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if kind == "stage":
                    yield _sse("stage", ev)
                    continue
                metrics.inflight.set(admission.in_flight)
                exc = ev.exception() if not ev.cancelled() else asyncio.CancelledError()
                if exc is not None:
                    status, detail = _error_status(exc)
                    yield _sse("error", {"status": status, "detail": detail})
                    return
                plan = ev.result()
                metrics.observe_plan(plan)
                yield _sse("plan", plan.model_dump(mode="json"))
                return

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ form options
    @data.get("/ui/api/options", tags=["playground"], summary="What the plan form offers: pairs, routers, policies, defaults")
    async def options(request: Request) -> dict[str, Any]:
        from planner.config import known_routers
        from planner.select import POLICIES, policy_names

        cfg = request.app.state.config
        return {
            "pairs": {k: {"generator": p.generator, "discriminator": p.discriminator} for k, p in cfg.pairs.items()},
            "router": cfg.router.name,
            "routers": list(known_routers().names()),
            "policies": [{"name": n, **{k: v for k, v in asdict(POLICIES.info(n)).items() if isinstance(v, str | bool)}}
                         for n in policy_names()],
            "defaults": {"n": cfg.defaults.n, "policy": cfg.defaults.policy},
            "limits": {"n_max": cfg.limits.n_max, "question_max_chars": cfg.limits.question_max_chars,
                       "deadline_s": cfg.limits.deadline_s},
        }

    # ------------------------------------------------------------------ eval runs
    @data.get("/ui/api/runs", tags=["playground"], summary="The eval runs under the runs folder, newest first")
    async def runs(request: Request) -> dict[str, Any]:
        root = runs_root(request.app.state.config)
        return {"root": str(root), "runs": await run_in_threadpool(list_runs, root)}

    @data.get("/ui/api/run", tags=["playground"], summary="One eval run: its report rendered as HTML, and its plots",
              responses={404: {**_ERR, "description": "unknown run"}})
    async def run(request: Request, name: str = Query(..., max_length=1000, description="a name from GET /ui/api/runs")
                  ) -> dict[str, Any]:
        d = resolve_run(runs_root(request.app.state.config), name)
        return await run_in_threadpool(run_report, d, name)

    @data.get("/ui/api/run/file", tags=["playground"], summary="A plot (PNG) of an eval run",
              response_class=FileResponse, responses={404: {**_ERR, "description": "unknown run or file"}})
    async def run_file(request: Request, name: str = Query(..., max_length=1000),
                       file: str = Query(..., max_length=255)) -> FileResponse:
        d = resolve_run(runs_root(request.app.state.config), name)
        if "/" in file or "\\" in file or not file.lower().endswith(".png") or not (d / file).is_file():
            raise HTTPException(404, f"run {name!r} has no plot {file!r}")
        return FileResponse(d / file, media_type="image/png")

    @data.get("/ui/api/compare", tags=["playground"], summary="Two eval runs compared (`sqlarbiter eval compare A B`)",
              responses={404: {**_ERR, "description": "unknown run, or a run without results.jsonl lines"}})
    async def compare_runs(request: Request, a: str = Query(..., max_length=1000), b: str = Query(..., max_length=1000)
                           ) -> dict[str, Any]:
        from eval.report import compare, format_compare

        root = runs_root(request.app.state.config)
        da, db = resolve_run(root, a), resolve_run(root, b)
        try:
            c = await run_in_threadpool(compare, da, db)
        except FileNotFoundError as e:
            raise HTTPException(404, f"cannot compare: {e}") from None
        c["a"], c["b"] = a, b
        return {"compare": c, "text": format_compare(c)}

    r.include_router(data)
    return r


# ---------------------------------------------------------------------------------------------- helpers


def _error_status(e: BaseException) -> tuple[int, str]:
    """The status and message POST /plan would answer for an exception raised while planning."""
    known = status_of(e)
    if known is not None:
        return known
    if isinstance(e, asyncio.CancelledError):
        return 503, "the plan was cancelled (the service is shutting down)"
    log.error("internal error in a streamed plan", exc_info=e)
    return 500, f"internal error: {type(e).__name__}"


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"


def runs_root(cfg) -> Path:
    """The runs folder: `Config.runs_dir` (or `SQLARBITER_RUNS_DIR`), else `core.settings.runs_dir()`."""
    from core.settings import runs_dir

    return Path(cfg.runs_dir).expanduser() if getattr(cfg, "runs_dir", None) else runs_dir()


def _is_run(d: Path) -> bool:
    return any((d / m).is_file() for m in RUN_MARKERS)


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every folder under `root` (at most MAX_DEPTH deep) holding a report or results.jsonl, newest first."""
    found: list[Path] = []
    if not root.is_dir():
        return []

    def walk(d: Path, depth: int) -> None:
        try:
            subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for s in subs:
            if len(found) >= 20 * MAX_RUNS:
                return
            if _is_run(s):
                found.append(s)
            elif depth < MAX_DEPTH:
                walk(s, depth + 1)

    if _is_run(root):
        found.append(root)
    walk(root, 1)
    out = []
    for d in found:
        mtime = max((d / m).stat().st_mtime for m in RUN_MARKERS if (d / m).is_file())
        entry: dict[str, Any] = {"name": d.relative_to(root).as_posix() if d != root else ".",
                                 "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime)), "mtime": mtime,
                                 "has_report": (d / "report.md").is_file(), "has_results": (d / "results.jsonl").is_file()}
        rep = _read_report_json(d)
        if rep:
            m = rep.get("meta") or {}
            entry.update(dataset=m.get("dataset"), mode=m.get("mode"), n=rep.get("n"), ex=rep.get("ex"))
        out.append(entry)
    out.sort(key=lambda e: (-e["mtime"], e["name"]))
    return out[:MAX_RUNS]


def _read_report_json(d: Path) -> dict | None:
    p = d / "report.json"
    try:
        if p.is_file() and p.stat().st_size <= MAX_REPORT_BYTES:
            data = json.loads(p.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None
    return None


def resolve_run(root: Path, name: str) -> Path:
    """The run folder called `name` under root; 404 for anything else (absolute paths, `..`, non-runs)."""
    rel = Path(name)
    unknown = HTTPException(404, f"unknown run {name!r}; see GET /ui/api/runs")  # never the runs folder's path
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise unknown
    try:
        d = (root / rel).resolve()
        base = root.resolve()
        if (d != base and base not in d.parents) or not d.is_dir() or not _is_run(d):
            raise unknown
    except (OSError, ValueError):  # e.g. a NUL byte or an overlong name
        raise unknown from None
    return d


def run_report(d: Path, name: str) -> dict[str, Any]:
    """A run's report.md rendered to HTML (raw HTML in it is escaped), or one built from its results.jsonl
    (not written to disk), and the names of its PNG plots."""
    from markdown_it import MarkdownIt

    md_path = d / "report.md"
    built = False
    if md_path.is_file() and md_path.stat().st_size <= MAX_REPORT_BYTES:
        text = md_path.read_text(encoding="utf-8", errors="replace")
    elif (d / "results.jsonl").is_file():
        from eval.report import build_report, to_markdown
        from eval.runner import read_results

        text, built = to_markdown(build_report(read_results(d))), True
    else:
        text = "(this run has no report.md and no results.jsonl)"
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    plots = sorted(p.name for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    rep = _read_report_json(d) or {}
    m = rep.get("meta") or {}
    return {"name": name, "html": html, "markdown": text, "built_from_results": built, "plots": plots,
            "summary": {"dataset": m.get("dataset"), "mode": m.get("mode"), "n": rep.get("n"), "ex": rep.get("ex")},
            "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(d)))}
