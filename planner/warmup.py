"""Warm-up: the work a database's first plan needs, done ahead of need (issue 25).

What a first plan pays for when nothing is warm, measured (BENCHMARKS.md, "First answers"): the sentence
encoder's load, the example store's embeddings (Spider train: 7,000 questions, 6,513 distinct masked ones)
and, on a schema too large for the prompt, the schema-linking index (`sqlbox.index`). `warm(...)` builds
them now: at `serve` start-up in a background thread (`start_background`), and through
`sqlarbiter databases warm [--db ...]`.

A request never waits for a warm-up past its deadline: the example store ranks by BM25 plus an embedding
re-rank of its best candidates until its embeddings are built, and linking uses the index's lexical stage
(or, before that, the whole schema truncated to the budget). `annotate` writes what the plan used into it:
`timings_ms["few_shot"]`/`["link"]` and a `warm-up: ...` note in `plan.warnings`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

INDEX_WAIT_S = 2.0  # how long a request waits for a schema index's lexical stage before going without it

_STATE_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"state": "idle", "items": {}}


def status() -> dict[str, Any]:
    """The warm-up's state: "idle" (none started), "running", "done"; per item its state and seconds."""
    with _STATE_LOCK:
        return {"state": _STATE["state"], "items": {k: dict(v) for k, v in _STATE["items"].items()}}


def _item(name: str, **kw: Any) -> None:
    with _STATE_LOCK:
        _STATE["items"].setdefault(name, {}).update(kw)


def needs_index(pipeline, db_id: str) -> bool:
    """Linking applies to this database (mode "on", or "auto" and its whole schema exceeds the budget)."""
    from sqlbox.schema import approx_tokens, schema_to_prompt

    d = pipeline.config.defaults
    if d.schema_linking == "off" or (d.schema_linking == "auto" and d.schema_max_tokens is None):
        return False
    if d.schema_linking == "on":
        return True
    schema = pipeline.registry.schema(db_id)
    return approx_tokens(schema_to_prompt(schema, sample_rows=d.schema_sample_rows)) > d.schema_max_tokens


def plan_items(pipeline, db_ids: Iterable[str] | None = None) -> list[tuple[str, Callable[[], Any]]]:
    """(name, build) of every piece of work the databases' first plans need."""
    from planner.fewshot import store_for

    d = pipeline.config.defaults
    ids = list(db_ids) if db_ids is not None else pipeline.registry.ids()
    items: list[tuple[str, Callable[[], Any]]] = []
    seen: set[int] = set()
    if d.few_shot > 0 and d.few_shot_retrieval:
        for db in ids:
            try:
                st = store_for(db)
            except (OSError, ValueError):
                st = None
            if st is not None and id(st) not in seen and not st._from_cache():
                seen.add(id(st))
                items.append((f"examples ({len(st.texts)} distinct questions)", st.warm))
    for db in ids:
        try:
            if needs_index(pipeline, db):
                from sqlbox.index import warm_index

                info, schema = pipeline.registry.get(db), pipeline.registry.schema(db)
                items.append((f"schema index {db}", lambda info=info, schema=schema: warm_index(info, schema)))
        except Exception as e:  # noqa: BLE001 - an unreadable database is skipped, not fatal to the others
            log.warning("warm-up: %s skipped: %s: %s", db, type(e).__name__, e)
    return items


def warm(pipeline, db_ids: Iterable[str] | None = None, *,
         report: Callable[[str, str, float], None] | None = None) -> dict[str, Any]:
    """Build everything the databases' first plans need, now (in this thread). Returns `status()`."""
    with _STATE_LOCK:
        _STATE["state"] = "running"
    t0 = time.perf_counter()
    try:
        items = plan_items(pipeline, db_ids)
        if items:
            from routing.features import Embedder

            t = time.perf_counter()
            Embedder.model()  # the one encoder instance the examples and the schema index share
            _item("sentence encoder", state="ready", s=round(time.perf_counter() - t, 3))
            if report:
                report("sentence encoder", "ready", time.perf_counter() - t)
        for name, build in items:
            _item(name, state="building")
            t = time.perf_counter()
            try:
                build()
                _item(name, state="ready", s=round(time.perf_counter() - t, 3))
                if report:
                    report(name, "ready", time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - a failed item is reported; requests build it themselves
                _item(name, state=f"failed: {type(e).__name__}: {e}", s=round(time.perf_counter() - t, 3))
                if report:
                    report(name, f"failed: {type(e).__name__}: {e}", time.perf_counter() - t)
    finally:
        with _STATE_LOCK:
            _STATE["state"] = "done"
            _STATE["s"] = round(time.perf_counter() - t0, 3)
    return status()


def start_background(pipeline, db_ids: Iterable[str] | None = None) -> threading.Thread:
    """`warm` in a daemon thread (serve start-up): requests meanwhile use what is ready."""
    ids = list(db_ids) if db_ids is not None else None
    with _STATE_LOCK:
        _STATE["state"] = "running"

    def run() -> None:
        try:
            warm(pipeline, ids, report=lambda n, s, sec: log.info("warm-up: %s %s (%.1f s)", n, s, sec))
        except Exception:
            log.exception("warm-up failed")

    t = threading.Thread(target=run, name="sqlarbiter-warmup", daemon=True)
    t.start()
    return t


def annotate(plan, pipeline, question, few_shot_info: dict | None, linked) -> None:
    """Write into the plan what it used that a warm-up would have made better: timings and a note."""
    notes: list[str] = []
    if few_shot_info:
        if "ms" in few_shot_info:
            plan.timings_ms["few_shot"] = few_shot_info["ms"]
        mode = few_shot_info.get("mode")
        if mode in ("bm25+rerank", "bm25"):
            notes.append(f"warm-up: few-shot examples ranked by BM25{' + embedding re-rank of the best 128' if mode == 'bm25+rerank' else ''}"
                         f" (the example store's embeddings are not built yet: {few_shot_info.get('encoded', '?')}"
                         " encoded); `sqlarbiter databases warm` builds them")
    if linked is not None:
        plan.timings_ms["link"] = round(linked.latency_ms, 3)
        if linked.mode != "embeddings":
            notes.append("warm-up: schema linked on the index's lexical stage (BM25 over table and column documents, "
                         "values); its embeddings are still being built")
    elif question is not None:
        from sqlbox.index import build_state

        st = build_state(question.db_id)
        if st.startswith("building"):
            d = pipeline.config.defaults
            notes.append(f"warm-up: the schema index is still being built ({st}); the whole schema, truncated to "
                         f"{d.schema_max_tokens} tokens, was used instead of linking")
    plan.warnings.extend(notes)
