"""Executor overhead per candidate on the Spider dev databases.

    python -m benchmarks.executor_overhead [--spider DIR] [--limit N] [--repeat R] [--markdown]

For each Spider dev gold query and each engine, with warm connections: the executor's wall time for
`execute()` (guard, dialect rewrite, sandbox parse check, run with timeout/row cap, fingerprints) and the
raw engine time of the same SQL as executed (`con.execute(sql).fetchall()` on the same connection).
Overhead = executor time - raw time; medians over queries (each query: best of `--repeat` runs).
Also: the cold cost of opening one sandboxed connection per database (DuckDB: LOAD the sqlite scanner,
ATTACH, create the typed views, lock; schema introspection excluded, it is cached by the registry).

Isolation side by side, in the same run: every query is also run through an isolated executor
(`isolation="process"`, one warm sandbox worker, `sqlbox.isolation`), alternating with the in-process one
(`isolation="none"`); reported: both medians, the ratio of the medians and the per-query added cost
(isolated - in-process, median / p90).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from core.settings import spider_dir
from sqlbox.databases import DatabaseRegistry
from sqlbox.engines import open_connection
from sqlbox.executor import Executor


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else float("nan")


def run(spider: Path, limit: int | None, repeat: int) -> dict:
    dev = json.loads((spider / "dev.json").read_text())[: limit or None]
    reg = DatabaseRegistry()
    reg.register_dir(spider / "database")
    dbs = sorted({e["db_id"] for e in dev})
    for db in dbs:
        reg.schema(db)  # introspection is cached by the registry: not part of the per-candidate cost
    out: dict = {"n_queries": len(dev), "n_databases": len(dbs), "engines": {}}
    for engine in ("sqlite", "duckdb"):
        setup = []
        for db in dbs:
            t = time.perf_counter()
            c = open_connection(engine, reg.get(db), reg.schema(db), memory_limit="1GB", threads=1)
            setup.append((time.perf_counter() - t) * 1000)
            c.close()
        ex = Executor(reg, engine=engine, timeout_s=30, max_rows=100_000, isolation="none")
        iso = Executor(reg, engine=engine, timeout_s=30, max_rows=100_000, isolation="process", workers=1)
        execs, raws, overheads, isos, added = [], [], [], [], []
        for e in tqdm(dev, desc=f"{engine}", unit="q", file=sys.stderr):
            db, sql = e["db_id"], e["query"]
            ex.execute(db, sql)  # warm the connection and caches
            iso.execute(db, sql)
            best_exec = best_raw = best_iso = float("inf")
            ok = True
            for _ in range(repeat):
                t = time.perf_counter()
                r = ex.execute(db, sql)
                best_exec = min(best_exec, (time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                ri = iso.execute(db, sql)
                best_iso = min(best_iso, (time.perf_counter() - t) * 1000)
                if not r.ok or not ri.ok:
                    ok = False
                    break
                con = ex._conn(db).con
                t = time.perf_counter()
                con.execute(r.executed_sql).fetchall()
                best_raw = min(best_raw, (time.perf_counter() - t) * 1000)
            if ok:
                execs.append(best_exec)
                raws.append(best_raw)
                overheads.append(best_exec - best_raw)
                isos.append(best_iso)
                added.append(best_iso - best_exec)
        ex.close()
        iso.close()
        out["engines"][engine] = {
            "n_ok": len(execs),
            "exec_ms_median": statistics.median(execs), "exec_ms_p90": _pct(execs, 0.9),
            "raw_ms_median": statistics.median(raws), "raw_ms_p90": _pct(raws, 0.9),
            "overhead_ms_median": statistics.median(overheads), "overhead_ms_p90": _pct(overheads, 0.9),
            "connection_setup_ms_median": statistics.median(setup), "connection_setup_ms_max": max(setup),
            "isolated_ms_median": statistics.median(isos), "isolated_ms_p90": _pct(isos, 0.9),
            "isolation_ratio_of_medians": statistics.median(isos) / statistics.median(execs),
            "isolation_added_ms_median": statistics.median(added), "isolation_added_ms_p90": _pct(added, 0.9),
        }
    return out


def markdown(res: dict, repeat: int, limit: int | None = None) -> str:
    limit = f" --limit {limit}" if limit else ""
    lines = [
        "## Executor overhead per candidate (Spider dev gold queries)",
        "",
        f"Command: `python -m benchmarks.executor_overhead --repeat {repeat}{limit}`  ",
        f"Machine: 2-core x86-64 CPU, shared and loaded, no GPU. Date: {time.strftime('%Y-%m-%d')}.  ",
        f"{res['n_queries']} gold queries over {res['n_databases']} databases; warm per-thread connections; "
        "each query: best of the repeats. Executor = `Executor.execute()` wall time (guard, SQLite->DuckDB "
        "rewrite, sandbox parse check, timed run, row cap, fingerprints); raw = `con.execute(sql).fetchall()` "
        "of the executed SQL on the same connection. Connection setup = opening one sandboxed connection "
        "(cold; schema introspection excluded).",
        "",
        "| engine | queries ok | executor median / p90 (ms) | raw engine median / p90 (ms) | overhead median / p90 (ms) | connection setup median / max (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for eng, r in res["engines"].items():
        lines.append(f"| {eng} | {r['n_ok']} | {r['exec_ms_median']:.2f} / {r['exec_ms_p90']:.2f} | "
                     f"{r['raw_ms_median']:.2f} / {r['raw_ms_p90']:.2f} | "
                     f"{r['overhead_ms_median']:.2f} / {r['overhead_ms_p90']:.2f} | "
                     f"{r['connection_setup_ms_median']:.1f} / {r['connection_setup_ms_max']:.1f} |")
    lines += [
        "",
        "Isolation (same run, alternating per query): in-process executor vs `isolation=\"process\"` (one warm "
        "sandbox worker; the request and result cross a pipe).",
        "",
        "| engine | in-process median / p90 (ms) | isolated median / p90 (ms) | ratio of medians | added per candidate median / p90 (ms) |",
        "|---|---|---|---|---|",
    ]
    for eng, r in res["engines"].items():
        lines.append(f"| {eng} | {r['exec_ms_median']:.2f} / {r['exec_ms_p90']:.2f} | "
                     f"{r['isolated_ms_median']:.2f} / {r['isolated_ms_p90']:.2f} | "
                     f"{r['isolation_ratio_of_medians']:.2f} | "
                     f"{r['isolation_added_ms_median']:.2f} / {r['isolation_added_ms_p90']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.executor_overhead", description=__doc__.split("\n\n")[0])
    ap.add_argument("--spider", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md section")
    args = ap.parse_args(argv)
    spider = args.spider or spider_dir()
    if not (spider / "dev.json").is_file():
        print(f"Spider dev.json not found under {spider} (set SPIDER_DIR)", file=sys.stderr)
        return 2
    res = run(spider, args.limit, max(1, args.repeat))
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if args.markdown:
        print(markdown(res, args.repeat, args.limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
