"""Executor overhead per candidate on the Spider dev databases.

    python -m benchmarks.executor_overhead [--data DIR] [--limit N] [--repeat R] [--markdown]
        [--engines sqlite,duckdb] [--target-url postgresql://user@host:5432 ...]

With `--target-url` (repeatable), a PostgreSQL or MySQL/MariaDB server holding one database per db_id
(`sqlarbiter databases load-spider`) is measured too: executor = guard + SQLite->server rewrite + pooled
connection checkout + read-only bounded transaction + fetch + rollback/reset + fingerprints; raw = the same
executed SQL on a plain autocommit driver connection (`cursor.execute(sql); fetchall()`); connection setup =
opening one new pooled connection and running `SELECT 1` through it.

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


def _server_raw(url: str, db: str):
    """A plain autocommit DB-API connection to `db` on the server (the raw baseline)."""
    from sqlbox.servers.targets import parse_target, server_url_for

    t = parse_target(server_url_for(url, db.lower()))[1]
    u = t.sqlalchemy_url()
    if t.kind == "postgresql":
        import psycopg

        return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                               dbname=u.database, autocommit=True)
    import pymysql

    return pymysql.connect(host=u.host, port=u.port or 3306, user=u.username, password=u.password or "",
                           database=u.database, autocommit=True)


def _run_server(url: str, dev: list[dict], dbs: list[str], repeat: int) -> tuple[str, dict]:
    from sqlbox.servers.execute import ServerConn
    from sqlbox.servers.pool import dispose_all, engine_for
    from sqlbox.servers.targets import parse_target, server_url_for

    # opted in by name (sqlbox.privileges): the benchmark measures the executor on a test server, often with the
    # admin that loaded it; a role that can do more than read is otherwise refused
    reg = DatabaseRegistry(privileged=dbs)
    for db in dbs:
        reg.register_url(server_url_for(url, db.lower()), db_id=db)
        reg.schema(db)  # cached: not part of the per-candidate cost
    kind = reg.get(dbs[0]).kind
    setup = []
    for db in dbs:
        target = parse_target(server_url_for(url, db.lower()))[1]
        engine_for(target).dispose()
        t = time.perf_counter()
        ServerConn(db, target).run("SELECT 1", 10, 1)
        setup.append((time.perf_counter() - t) * 1000)
    ex = Executor(reg, timeout_s=30, max_rows=100_000)
    raw_conns = {db: _server_raw(url, db) for db in dbs}
    execs, raws, overheads = [], [], []
    for e in tqdm(dev, desc=kind, unit="q", file=sys.stderr):
        db, sql = e["db_id"], e["query"]
        r = ex.execute(db, sql)
        if not r.ok:
            continue
        best_exec = best_raw = float("inf")
        cur = raw_conns[db].cursor()
        for _ in range(repeat):
            t = time.perf_counter()
            ex.execute(db, sql)
            best_exec = min(best_exec, (time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            cur.execute(r.executed_sql)
            cur.fetchall()
            best_raw = min(best_raw, (time.perf_counter() - t) * 1000)
        cur.close()
        execs.append(best_exec)
        raws.append(best_raw)
        overheads.append(best_exec - best_raw)
    ex.close()
    for c in raw_conns.values():
        c.close()
    dispose_all()
    return kind, _summary(execs, raws, overheads, setup)


def _summary(execs, raws, overheads, setup) -> dict:
    return {
        "n_ok": len(execs),
        "exec_ms_median": statistics.median(execs), "exec_ms_p90": _pct(execs, 0.9),
        "raw_ms_median": statistics.median(raws), "raw_ms_p90": _pct(raws, 0.9),
        "overhead_ms_median": statistics.median(overheads), "overhead_ms_p90": _pct(overheads, 0.9),
        "connection_setup_ms_median": statistics.median(setup), "connection_setup_ms_max": max(setup),
    }


def run(spider: Path, limit: int | None, repeat: int, engines: tuple[str, ...] = ("sqlite", "duckdb"),
        target_urls: list[str] | None = None) -> dict:
    dev = json.loads((spider / "dev.json").read_text())[: limit or None]
    reg = DatabaseRegistry()
    reg.register_dir(spider / "database")
    dbs = sorted({e["db_id"] for e in dev})
    for db in dbs:
        reg.schema(db)  # introspection is cached by the registry: not part of the per-candidate cost
    out: dict = {"n_queries": len(dev), "n_databases": len(dbs), "engines": {}}
    for url in target_urls or []:
        kind, summary = _run_server(url, dev, dbs, repeat)
        out["engines"][kind] = summary
    for engine in engines:
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


def markdown(res: dict, repeat: int, extra_args: str = "") -> str:
    lines = [
        "## Executor overhead per candidate (Spider dev gold queries)",
        "",
        f"Command: `python -m benchmarks.executor_overhead --repeat {repeat}{extra_args}`  ",
        f"Machine: 2-core x86-64 CPU, no GPU, shared and loaded. Date: {time.strftime('%Y-%m-%d')}.  ",
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
    ap.add_argument("--data", type=Path, default=None, help="Spider folder (default: core.settings.spider_dir())")
    ap.add_argument("--spider", type=Path, dest="data", help=argparse.SUPPRESS)  # the old name of --data
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md section")
    ap.add_argument("--engines", default="sqlite,duckdb", help="file engines to measure (comma-separated; '' for none)")
    ap.add_argument("--target-url", action="append", default=None,
                    help="also measure this PostgreSQL/MySQL server (one database per db_id); repeatable")
    args = ap.parse_args(argv)
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    bad = [e for e in engines if e not in ("sqlite", "duckdb")]
    if bad:
        print(f"unknown engine(s) {', '.join(bad)}; choose from: sqlite, duckdb", file=sys.stderr)
        return 2
    spider = args.data or spider_dir()
    if not (spider / "dev.json").is_file():
        print(f"Spider dev.json not found under {spider} (set SPIDER_DIR)", file=sys.stderr)
        return 2
    res = run(spider, args.limit, max(1, args.repeat), engines, args.target_url)
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if args.markdown:
        extra = (f" --limit {args.limit}" if args.limit else "") + (
            f" --engines {','.join(engines)}" if engines != ("sqlite", "duckdb") else "") + "".join(
            f" --target-url {u}" for u in args.target_url or [])
        print(markdown(res, args.repeat, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
