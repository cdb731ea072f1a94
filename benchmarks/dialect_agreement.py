"""Dialect agreement: do the Spider dev gold queries (SQLite dialect) give the same result on the DuckDB
engine (after the executor's SQLite -> DuckDB handling) as on sqlite3?

    python -m benchmarks.dialect_agreement [--spider DIR] [--limit N] [--json OUT] [--show K]
    python -m benchmarks.dialect_agreement --candidates FILE.sql [FILE.sql ...]   # predicted SQL instead

A query agrees when both engines succeed with equal order-insensitive fingerprints, or both fail (only
predicted SQL fails on both; every gold query runs on sqlite3). With `--candidates`, the queries are
published systems' predictions (`candidates/spider_dev/<system>.sql`, one per dev question). Queries whose
top-level SELECT has ORDER BY are also compared in order (reported separately: ties may legitimately
order differently). Disagreements are grouped into classes (DuckDB error kind + message pattern, or
"different result").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

from core.settings import spider_dir
from sqlbox.databases import DatabaseRegistry
from sqlbox.executor import Executor


def _error_class(kind: str, msg: str) -> str:
    m = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", msg or "")
    m = re.sub(r"\s+", " ", m)
    return f"{kind}: {m[:90]}"


def run(spider: Path, limit: int | None = None, timeout_s: float = 10.0,
        candidates: list[Path] | None = None) -> dict:
    gold = json.loads((spider / "dev.json").read_text())
    if candidates:
        dev = []
        for f in candidates:
            for i, line in enumerate(f.read_text().splitlines()[: len(gold)]):
                dev.append({"db_id": gold[i]["db_id"], "query": line.split("\t")[0].strip()})
    else:
        dev = gold
    if limit:
        dev = dev[:limit]
    reg = DatabaseRegistry()
    reg.register_dir(spider / "database")
    sq = Executor(reg, engine="sqlite", timeout_s=timeout_s, max_rows=100_000)
    dk = Executor(reg, engine="duckdb", timeout_s=timeout_s, max_rows=100_000)
    agree = ordered_total = ordered_agree = both_fail = 0
    classes: Counter[str] = Counter()
    examples: dict[str, list[dict]] = defaultdict(list)
    t0 = time.perf_counter()
    for i, ex in enumerate(tqdm(dev, desc="gold queries", unit="q", file=sys.stderr)):
        db, sql = ex["db_id"], ex["query"]
        a = sq.execute(db, sql)
        b = dk.execute(db, sql)
        if a.ok and b.ok and a.fingerprint == b.fingerprint:
            agree += 1
            if re.search(r"order\s+by", sql, re.I):
                ordered_total += 1
                ordered_agree += a.ordered_fingerprint == b.ordered_fingerprint
            continue
        if not a.ok and not b.ok:
            both_fail += 1
            agree += 1
            continue
        if not a.ok:
            cls = "sqlite fails only: " + _error_class(a.error_kind, a.error)
        elif not b.ok:
            cls = "duckdb " + _error_class(b.error_kind, b.error)
        else:
            cls = "different result"
        classes[cls] += 1
        if len(examples[cls]) < 5:
            examples[cls].append({"idx": i, "db_id": db, "sql": sql, "duckdb_sql": b.executed_sql,
                                  "sqlite_rows": a.rows[:3], "duckdb_rows": b.rows[:3],
                                  "sqlite_error": a.error, "duckdb_error": b.error})
    sq.close()
    dk.close()
    n = len(dev)
    return {"source": ", ".join(f.name for f in candidates) if candidates else "gold", "n": n, "agree": agree, "rate": agree / n if n else 0.0, "both_fail": both_fail,
            "ordered_total": ordered_total, "ordered_agree": ordered_agree,
            "classes": classes.most_common(), "examples": examples,
            "seconds": time.perf_counter() - t0}


def markdown(res: dict) -> str:
    lines = [
        f"## Dialect agreement: Spider dev {'gold' if res['source'] == 'gold' else 'predicted'} SQL on DuckDB vs sqlite3",
        "",
        "Command: `python -m benchmarks.dialect_agreement"
        + ("`  " if res["source"] == "gold" else f" --candidates {res['source']}`  "),
        "Machine: 2-core x86-64 CPU, 24 GB, no GPU. Date: 2026-11-21.  ",
        "A query agrees when both engines succeed with equal order-insensitive result fingerprints, "
        "or both fail (DuckDB runs the executor's SQLite->DuckDB rewrite).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| queries | {res['n']} ({res['source']}) |",
        f"| of which both engines fail | {res['both_fail']} |",
        f"| agree | {res['agree']} ({100 * res['rate']:.1f}%) |",
        f"| of which ORDER BY queries also equal in order | {res['ordered_agree']} / {res['ordered_total']} |",
        f"| disagree | {res['n'] - res['agree']} |",
        f"| wall time | {res['seconds']:.0f} s |",
        "",
        "| remaining disagreement class | count |",
        "|---|---|",
    ]
    lines += [f"| {c.replace('|', '/')} | {k} |" for c, k in res["classes"]] or ["| (none) | 0 |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dialect_agreement", description=__doc__.split("\n\n")[0])
    ap.add_argument("--spider", type=Path, default=None, help="Spider folder (default: core.settings.spider_dir())")
    ap.add_argument("--limit", type=int, default=None, help="only the first N dev queries")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None, help="write the full result (with examples) here")
    ap.add_argument("--show", type=int, default=2, help="examples to print per class")
    ap.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md section")
    ap.add_argument("--candidates", type=Path, nargs="+", default=None,
                    help="predicted-SQL files aligned with dev.json instead of the gold queries")
    args = ap.parse_args(argv)
    spider = args.spider or spider_dir()
    if not (spider / "dev.json").is_file():
        print(f"Spider dev.json not found under {spider} (set SPIDER_DIR)", file=sys.stderr)
        return 2
    res = run(spider, args.limit, args.timeout, args.candidates)
    print(f"agreement: {res['agree']}/{res['n']} = {100 * res['rate']:.2f}%  "
          f"(ORDER BY queries equal in order: {res['ordered_agree']}/{res['ordered_total']}; "
          f"both fail: {res['both_fail']}; {res['seconds']:.0f} s)")
    for cls, k in res["classes"]:
        print(f"  {k:4d}  {cls}")
        for e in res["examples"][cls][: args.show]:
            print(f"        #{e['idx']} [{e['db_id']}] {e['sql']}")
            print(f"            duckdb: {e['duckdb_sql']}")
            print(f"            sqlite rows {e['sqlite_rows']} err {e['sqlite_error']} | duckdb rows {e['duckdb_rows']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.markdown:
        print()
        print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
