"""Schema linking measured (`sqlarbiter eval linking`, whose command line is in cli/commands/eval.py): how well
schema linking (`sqlbox.linking`) keeps what the gold SQL needs.

    sqlarbiter eval linking [--data DIR] [--dataset spider|bird] [--merged] [--limit N] [--seed S]
                            [--top-k K] [--schema-max-tokens T] [--split dev|train] [--rebuild-index] [--out DIR]
    sqlarbiter eval linking --merged --gold-check [--workers N]

For each question, the gold tables and columns come from the gold SQL (sqlglot, qualified against the
schema: every column resolved to its table through the query's scopes and aliases). The linker runs in
`on` mode (always links). Reported: table recall (mean per question, and the share of questions with
every gold table kept), column recall and precision (linked = the columns kept in the prompt), prompt
tokens of the linked prompt against the full schema's, linking latency (p50/p95; the index is built
before timing), and the index build time. `--merged` runs Spider on the merged ~840-table database
(`sqlbox.merged`), with the gold SQL rewritten to the merged names. Writes report.json, report.md and
results.jsonl to --out (default runs/linking-<dataset>[-merged]-<time>).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sqlbox.schema import Schema

# --------------------------------------------------------------------------- gold extraction


def gold_elements(sql: str, schema: Schema) -> tuple[set[str], set[tuple[str, str]]]:
    """(tables, (table, column) pairs), lower-cased, that a SQL query reads, resolved against `schema`.
    Columns are resolved through sqlglot's qualification (aliases, scopes); a column it cannot resolve is
    attributed to the query's tables that have a column of that name."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.optimizer.scope import traverse_scope
    from sqlglot.schema import MappingSchema

    cols_of = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError:
        return set(), set()
    tables = {t.name.lower() for t in tree.find_all(exp.Table) if t.name.lower() in cols_of}
    mapping = {t.name: {c.name: "TEXT" for c in t.columns} for t in schema.tables if t.name.lower() in tables}
    try:
        tree = qualify(tree, schema=MappingSchema(mapping, dialect="sqlite", normalize=True), dialect="sqlite",
                       validate_qualify_columns=False, identify=False)
    except Exception:  # noqa: BLE001 - fall back to name matching below
        pass
    cols: set[tuple[str, str]] = set()
    try:
        scopes = traverse_scope(tree)
    except Exception:  # noqa: BLE001 - sqlglot's scope traversal fails on odd trees in many ways: fall back to no scopes
        scopes = []
    seen: set[int] = set()
    for scope in scopes:
        for c in scope.columns:
            seen.add(id(c))
            name = c.name.lower()
            if not name or name == "*":
                continue
            src = scope.sources.get(c.table) if c.table else None
            if isinstance(src, exp.Table) and src.name.lower() in cols_of:
                if name in cols_of[src.name.lower()]:
                    cols.add((src.name.lower(), name))
                continue
            if src is not None:  # a derived table or CTE column: its own scope resolves it
                continue
            for t in tables:
                if name in cols_of[t]:
                    cols.add((t, name))
    for c in tree.find_all(exp.Column):  # anything the scopes did not cover
        if id(c) in seen or c.name in ("", "*"):
            continue
        for t in tables:
            if c.name.lower() in cols_of[t] and (not c.table or c.table.lower() == t):
                cols.add((t, c.name.lower()))
    return tables, cols


# --------------------------------------------------------------------------- the run


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else 0.0


def evaluate(examples, registry, *, top_k: int, budget: int | None, rebuild: bool = False,
             use_evidence: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from sqlbox.index import schema_index
    from sqlbox.linking import link

    indexes: dict[str, Any] = {}
    build: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for ex in examples:
        if ex.db_id not in indexes:
            info = registry.get(ex.db_id)
            t = time.perf_counter()
            schema = registry.schema(ex.db_id)
            t_intro = time.perf_counter() - t
            idx = schema_index(info, schema, rebuild=rebuild)
            indexes[ex.db_id] = (schema, idx)
            build[ex.db_id] = {**idx.stats(), "introspect_s": round(t_intro, 3),
                               "build_s": round(idx.build_s, 3) if (rebuild or not idx.from_cache) else None}
        schema, idx = indexes[ex.db_id]
        res = link(ex.question, schema, idx, top_k=top_k, budget=budget,
                   evidence=ex.evidence if use_evidence else None)
        gt, gc = gold_elements(ex.gold_sql, schema)
        lt = {t.lower() for t in res.tables}
        lc = res.column_pairs()
        rows.append({
            "index": ex.index, "db_id": ex.db_id, "question": ex.question,
            "gold_tables": sorted(gt), "gold_columns": sorted(f"{t}.{c}" for t, c in gc),
            "linked_tables": res.tables, "n_linked_columns": len(lc),
            "missed_tables": sorted(gt - lt), "missed_columns": sorted(f"{t}.{c}" for t, c in gc - lc),
            "table_recall": len(gt & lt) / len(gt) if gt else 1.0,
            "column_recall": len(gc & lc) / len(gc) if gc else 1.0,
            "column_precision": len(gc & lc) / len(lc) if lc else 0.0,
            "prompt_tokens": res.prompt_tokens, "full_tokens": res.full_tokens,
            "token_ratio": res.prompt_tokens / res.full_tokens if res.full_tokens else 1.0,
            "latency_ms": res.latency_ms, "value_hits": len(res.value_hits),
        })
    lat = [r["latency_ms"] for r in rows]
    n = len(rows)

    def mean(k: str) -> float:
        return float(np.mean([r[k] for r in rows])) if rows else 0.0

    summary = {
        "n": n, "top_k": top_k, "budget": budget,
        "table_recall": mean("table_recall"),
        "all_tables_kept": sum(r["table_recall"] == 1.0 for r in rows) / n if n else 0.0,
        "column_recall": mean("column_recall"),
        "all_columns_kept": sum(r["column_recall"] == 1.0 for r in rows) / n if n else 0.0,
        "column_precision": mean("column_precision"),
        "prompt_tokens_mean": mean("prompt_tokens"), "full_tokens_mean": mean("full_tokens"),
        "token_ratio_mean": mean("token_ratio"),
        "token_ratio_of_sums": (sum(r["prompt_tokens"] for r in rows) / max(1, sum(r["full_tokens"] for r in rows))),
        "latency_ms_p50": _pct(lat, 50), "latency_ms_p95": _pct(lat, 95), "latency_ms_max": max(lat, default=0.0),
        "index": build,
        "index_build_s_total": round(sum(b["build_s"] or 0.0 for b in build.values()), 3),
        "databases": len(build),
    }
    return summary, rows


def markdown_report(meta: dict[str, Any], s: dict[str, Any]) -> str:
    lines = [f"# Schema linking: {meta['dataset']}{' (merged database)' if meta['merged'] else ''}", "",
             f"- command: `{meta['command']}`", f"- date: {meta['date']}", f"- questions: {s['n']}, databases: {s['databases']}",
             f"- top-k: {s['top_k']}, budget: {s['budget']} tokens", "",
             "| metric | value |", "|---|---|",
             f"| table recall (mean) | {s['table_recall']:.4f} |",
             f"| questions with every gold table | {s['all_tables_kept']:.4f} |",
             f"| column recall (mean) | {s['column_recall']:.4f} |",
             f"| questions with every gold column | {s['all_columns_kept']:.4f} |",
             f"| column precision (mean) | {s['column_precision']:.4f} |",
             f"| prompt tokens (mean) | {s['prompt_tokens_mean']:.0f} |",
             f"| full-schema tokens (mean) | {s['full_tokens_mean']:.0f} |",
             f"| prompt / full tokens (mean ratio) | {s['token_ratio_mean']:.4f} |",
             f"| linking latency p50 / p95 (ms) | {s['latency_ms_p50']:.1f} / {s['latency_ms_p95']:.1f} |",
             f"| index build (s, all databases) | {s['index_build_s_total']:.1f} |", ""]
    return "\n".join(lines)
