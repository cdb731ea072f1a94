"""Peak memory of huge results: the issue's cases in a fresh process each, with the whole process tree's RSS
(the caller, the sandbox fork server and its workers) polled every 10 ms.

    python -m benchmarks.result_memory [--timeout 10] [--only NAME] [--pg-url URL] [--my-url URL] [--cli]

Each case runs in a child process that does what `sqlarbiter check` does (the demo database plus the server
URLs, an isolated `Executor` with the CLI's defaults) with the guard off (`use_guard=False`), so the sandbox's
own bounds are what is measured (the guard refuses most of these functions by now); `--cli` runs the real CLI
instead (`python -m cli check`, guard on). The server URLs may name a privileged role (opted in here).

Cases: SQLite-engine zeroblob/printf values over a 4-way cross join of the demo database's singer table,
the same shapes on the DuckDB engine, and REPEAT(name, 1000000) over a cross join on PostgreSQL and MariaDB
(Spider's concert_singer, loaded by `sqlarbiter databases load-spider`; a server that cannot be reached is
skipped). Reported per case: the verdict line and the peak RSS (sum over the tree) in MB. A psutil poll can
miss a spike shorter than 10 ms; the workers' own high-water marks (VmHWM) are read too where the process is
still alive.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
X4 = "FROM singer a, singer b, singer c, singer d"
CASES = [
    ("sqlite zeroblob x4", "sqlite", "demo", f"SELECT zeroblob(15000000) {X4}"),
    ("sqlite printf x4", "sqlite", "demo", f"SELECT printf('%.*c', 15000000, 'x') {X4}"),
    ("duckdb repeat x4", "duckdb", "demo", f"SELECT repeat('x', 15000000) {X4}"),
    ("duckdb zeroblob x4", "duckdb", "demo", f"SELECT zeroblob(15000000) {X4}"),
    ("duckdb repeat 1e9", "duckdb", "demo", "SELECT length(repeat('x', 1000000000))"),
    ("postgresql repeat x3", "postgresql", "concert_singer", "SELECT repeat(a.name, 1000000) FROM singer a, singer b, singer c"),
    ("mariadb repeat x3", "mysql", "concert_singer", "SELECT repeat(a.name, 1000000) FROM singer a, singer b, singer c"),
]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_case(engine: str, db: str, sql: str, timeout: float, url: str | None, cli: bool,
             address_space_mb: int) -> tuple[float, str, float]:
    if cli:
        cmd = [sys.executable, "-m", "cli", "check", "--db", db, "--timeout", str(timeout), sql]
        if engine in ("sqlite", "duckdb"):
            cmd[4:4] = ["--engine", engine]
        if url:
            cmd[4:4] = ["--data", url]
    else:
        cmd = [sys.executable, "-m", "benchmarks.result_memory", "--child", engine if engine in ("sqlite", "duckdb")
               else "duckdb", db, sql, "--timeout", str(timeout), "--address-space-mb", str(address_space_mb)]
        cmd += ["--data", url] if url else []
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(p.pid)
    peak = 0
    while p.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.01)
    out, err = p.communicate()
    line = (out.strip().splitlines() or [""])[0][:110]
    if "Traceback" in out + err:
        line += "  [TRACEBACK]"
    return peak / 2**20, line, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/concert_singer")
    ap.add_argument("--my-url", default="mysql://sqlarbiter@127.0.0.1:3306/concert_singer")
    ap.add_argument("--cli", action="store_true", help="through `python -m cli check` (guard on)")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "DB", "SQL"), help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--address-space-mb", type=int, default=2560,
                    help="the sandbox workers' address-space limit (the Executor's default: 2560; not with --cli)")
    args = ap.parse_args(argv)
    if args.child:
        return child(*args.child, timeout=args.timeout, data=args.data, address_space_mb=args.address_space_mb)
    print("| case | engine | peak RSS of the tree (MB) | wall (s) | result |")
    print("|---|---|---|---|---|")
    for name, engine, db, sql in CASES:
        if args.only and args.only not in name:
            continue
        url = {"postgresql": args.pg_url, "mysql": args.my_url}.get(engine)
        peak, line, wall = run_case(engine, db, sql, args.timeout, url, args.cli, args.address_space_mb)
        print(f"| {name} | {engine} | {peak:.0f} | {wall:.1f} | {line} |", flush=True)
    return 0


def child(engine: str, db: str, sql: str, *, timeout: float, data: str | None, address_space_mb: int) -> int:
    """One case as `sqlarbiter check` runs it, guard off; prints the CLI's verdict line."""
    from sqlbox.databases import registry_for
    from sqlbox.executor import Executor

    reg = registry_for([data] if data else [], privileged=[db] if data else [])
    with Executor(reg, engine=engine, timeout_s=timeout, use_guard=False, address_space_mb=address_space_mb) as ex:
        res = ex.execute(db, sql)
    if res.ok:
        print(f"ok: {res.row_count}{'+' if res.truncated else ''} row(s), {res.elapsed_ms:.1f} ms on {res.engine}")
    else:
        print(f"failed ({res.error_kind}): {res.error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
