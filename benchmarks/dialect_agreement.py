"""Dialect agreement: do the Spider dev gold queries (SQLite dialect) give the same result on the DuckDB
engine (after the executor's SQLite -> DuckDB handling) as on sqlite3?

    python -m benchmarks.dialect_agreement [--data DIR] [--limit N] [--json OUT] [--show K]
    python -m benchmarks.dialect_agreement --candidates FILE.sql [FILE.sql ...]   # predicted SQL instead
    python -m benchmarks.dialect_agreement --target-url postgresql://user@host:5432   # a server instead of DuckDB

With `--target-url`, the other side is a PostgreSQL or MySQL/MariaDB server holding one database per
db_id (`sqlarbiter databases load-spider --to URL`): the SQLite SQL is guarded, transpiled with sqlglot to
the server's dialect and run read-only there (`sqlbox.servers`).

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
    msg = re.sub(r"\((\d+), ['\"](.*)['\"]\)$", r"\2", msg or "")  # MySQL drivers: (code, 'message')
    m = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", msg or "")
    m = re.sub(r"\s+", " ", m)
    return f"{kind}: {m[:90]}"


def _loose(v, digits: int | None):
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return round(float(v), digits) if digits is not None else float(v)
    return v


def _result_subclass(a, b) -> str:
    """Why two successful results differ, judged on their previews: only number vs numeric text
    (SQLite kept the text, the server column is numeric), only numeric precision, or the rows."""
    if a.row_count != b.row_count or len(a.rows) != len(b.rows):
        return ": rows"
    for digits, why in ((None, ": number vs numeric text"), (4, ": numeric precision")):
        key = lambda r, d=digits: repr([_loose(v, d) for v in r])  # noqa: E731
        if sorted(map(key, a.rows)) == sorted(map(key, b.rows)):
            return why
    return ": rows"


def run(spider: Path, limit: int | None = None, timeout_s: float = 10.0,
        candidates: list[Path] | None = None, target_url: str | None = None) -> dict:
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
    other = "duckdb"
    if target_url:
        from sqlbox.servers.targets import parse_target, server_url_for

        for db in sorted({e["db_id"] for e in dev}):
            reg.register_url(server_url_for(target_url, db.lower()), db_id=f"{db}@server")
            # opted in by name (sqlbox.privileges): gold SQL on a test server, often as the admin that loaded it
            reg.privileged.add(f"{db}@server")
        other = parse_target(server_url_for(target_url, "x"))[1].kind
    dk = Executor(reg, engine="duckdb", timeout_s=timeout_s, max_rows=100_000)
    side = (lambda db: f"{db}@server") if target_url else (lambda db: db)
    agree = ordered_total = ordered_agree = both_fail = 0
    classes: Counter[str] = Counter()
    examples: dict[str, list[dict]] = defaultdict(list)
    t0 = time.perf_counter()
    for i, ex in enumerate(tqdm(dev, desc="gold queries", unit="q", file=sys.stderr)):
        db, sql = ex["db_id"], ex["query"]
        a = sq.execute(db, sql)
        b = dk.execute(side(db), sql)
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
            cls = f"{other} " + _error_class(b.error_kind, b.error)
        else:
            cls = "different result" + _result_subclass(a, b)
        classes[cls] += 1
        if len(examples[cls]) < 5:
            examples[cls].append({"idx": i, "db_id": db, "sql": sql, "duckdb_sql": b.executed_sql,
                                  "sqlite_rows": a.rows[:3], "duckdb_rows": b.rows[:3],
                                  "sqlite_error": a.error, "duckdb_error": b.error})
    sq.close()
    dk.close()
    n = len(dev)
    return {"source": ", ".join(f.name for f in candidates) if candidates else "gold", "n": n, "other": other,
            "target_url": target_url, "agree": agree, "rate": agree / n if n else 0.0, "both_fail": both_fail,
            "ordered_total": ordered_total, "ordered_agree": ordered_agree,
            "classes": classes.most_common(), "examples": examples,
            "seconds": time.perf_counter() - t0}


def markdown(res: dict) -> str:
    other = {"duckdb": "DuckDB", "postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB"}.get(res.get("other", "duckdb"))
    lines = [
        f"## Dialect agreement: Spider dev {'gold' if res['source'] == 'gold' else 'predicted'} SQL on {other} vs sqlite3",
        "",
        "Command: `python -m benchmarks.dialect_agreement"
        + (f" --target-url {res['target_url']}" if res.get("target_url") else "")
        + ("`  " if res["source"] == "gold" else f" --candidates {res['source']}`  "),
        f"Machine: 2-core x86-64 CPU, no GPU, shared with other jobs. Date: {time.strftime('%Y-%m-%d')}.  ",
        "A query agrees when both engines succeed with equal order-insensitive result fingerprints, "
        + ("or both fail (DuckDB runs the executor's SQLite->DuckDB rewrite)." if other == "DuckDB" else
           f"or both fail ({other} runs the SQLite SQL transpiled by sqlglot, read-only, through sqlbox.servers)."),
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
    ap.add_argument("--data", type=Path, default=None, help="Spider folder (default: core.settings.spider_dir())")
    ap.add_argument("--spider", type=Path, dest="data", help=argparse.SUPPRESS)  # the old name of --data
    ap.add_argument("--limit", type=int, default=None, help="only the first N dev queries")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None, help="write the full result (with examples) here")
    ap.add_argument("--show", type=int, default=2, help="examples to print per class")
    ap.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md section")
    ap.add_argument("--target-url", default=None,
                    help="compare with a PostgreSQL/MySQL server holding one database per db_id instead of DuckDB")
    ap.add_argument("--candidates", type=Path, nargs="+", default=None,
                    help="predicted-SQL files aligned with dev.json instead of the gold queries")
    args = ap.parse_args(argv)
    spider = args.data or spider_dir()
    if not (spider / "dev.json").is_file():
        print(f"Spider dev.json not found under {spider} (set SPIDER_DIR)", file=sys.stderr)
        return 2
    res = run(spider, args.limit, args.timeout, args.candidates, args.target_url)
    print(f"agreement: {res['agree']}/{res['n']} = {100 * res['rate']:.2f}%  "
          f"(ORDER BY queries equal in order: {res['ordered_agree']}/{res['ordered_total']}; "
          f"both fail: {res['both_fail']}; {res['seconds']:.0f} s)")
    for cls, k in res["classes"]:
        print(f"  {k:4d}  {cls}")
        for e in res["examples"][cls][: args.show]:
            print(f"        #{e['idx']} [{e['db_id']}] {e['sql']}")
            print(f"            {res['other']}: {e['duckdb_sql']}")
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
