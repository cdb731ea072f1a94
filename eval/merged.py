"""Spider dev on the merged large-schema database (`sqlbox.merged`): the questions with their gold SQL
rewritten to the merged names, and the gold-vs-gold check (every rewritten gold query on the merged
database returns the same result as the original gold query on its own database, under the project's
Spider EX comparison, `eval.exec_match`)."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from eval.datasets import Example
from sqlbox.merged import MERGED_DB_ID, build_merged, rewrite_sql, table_map


def merged_examples(examples: list[Example], database_dir: str | os.PathLike,
                    merged_path: str | os.PathLike | None = None) -> list[Example]:
    """The examples on the merged database: db_id `spider_merged`, gold SQL rewritten to the merged names,
    db_path the merged file (built if needed). Same order as `examples` (zip them to get the source db)."""
    path = Path(merged_path) if merged_path else build_merged(database_dir)
    tables = table_map(database_dir)
    out = []
    for ex in examples:
        gold = rewrite_sql(ex.gold_sql, ex.db_id, tables.get(ex.db_id, []))
        out.append(dataclasses.replace(ex, db_id=MERGED_DB_ID, gold_sql=gold, db_path=path))
    return out


def _check_one(args: tuple[int, str, str, str, str, float]) -> dict[str, Any]:
    from eval.exec_match import order_matters, result_eq, run_query, spider_prepare

    idx, db_path, gold, merged_path, merged_gold, timeout = args
    g = spider_prepare(gold)
    m = spider_prepare(merged_gold)
    a = run_query(db_path, g, timeout=timeout)
    b = run_query(merged_path, m, timeout=timeout)
    rec: dict[str, Any] = {"index": idx, "orig_ok": a.ok, "merged_ok": b.ok}
    if not a.ok or not b.ok:
        rec.update(ex=False, identical=False, error=a.error or b.error)
        return rec
    rec["ex"] = result_eq(a.rows, b.rows, order_matters(g))
    rec["identical"] = a.rows == b.rows
    rec["rows"] = len(a.rows)
    return rec


def gold_vs_gold(examples: list[Example], merged: list[Example], *, workers: int = 1,
                 timeout: float = 60.0) -> dict[str, Any]:
    """Run every original gold query on its database and its rewrite on the merged database; compare
    with Spider's EX rule (`ex`) and as identical row lists (`identical`)."""
    tasks = [(o.index, str(o.db_path), o.gold_sql, str(m.db_path), m.gold_sql, timeout)
             for o, m in zip(examples, merged, strict=True)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            recs = list(pool.map(_check_one, tasks, chunksize=16))
    else:
        recs = [_check_one(t) for t in tasks]
    bad = [r for r in recs if not r["ex"]]
    return {"n": len(recs), "ex_equal": sum(r["ex"] for r in recs),
            "identical_rows": sum(r.get("identical", False) for r in recs),
            "orig_errors": sum(not r["orig_ok"] for r in recs), "merged_errors": sum(not r["merged_ok"] for r in recs),
            "mismatches": bad[:50]}
