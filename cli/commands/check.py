"""The `check` command: run one SQL through the guard and the sandboxed executor.

    sqlarbiter check --db ID "SQL" [--data DIR_OR_FILE ...] [--config FILE] [--json] [--engine duckdb|sqlite]
                     [--timeout S] [--dialect D] [--rows N]

The databases: the demo database, the config's `databases`, $SQLARBITER_DATABASES and every `--data` (the
options shared by every command, `cli.options`): a Spider-layout folder, a database file, or a server URL
(`postgresql://...`, `mysql://...`; docs/databases.md). The verdict (ok / rejected / failed) is POST /check's
(`sqlbox.verdict`). Exit status: 0 ok, 1 rejected or failed, 2 bad usage (unknown database, bad file, folder or
URL, bad config, a server database refused for its role).
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.options import add_database_options, registry_or_report


def _table(columns: list[str], rows: list[list], width: int = 32) -> str:
    def cell(v) -> str:
        s = "NULL" if v is None else str(v)
        s = s.replace("\n", " ")
        return s if len(s) <= width else s[: width - 3] + "..."

    cells = [[cell(c) for c in columns]] + [[cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(columns))]
    fmt = lambda r: " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=False))  # noqa: E731
    out = [fmt(cells[0]), "-+-".join("-" * w for w in widths)]
    out += [fmt(r) for r in cells[1:]]
    return "\n".join(out)


def _start_method() -> str:
    """"fork" when this process is lean (the one-shot command: no torch, a small address space, so the forked
    worker starts far inside its address-space limit), else "forkserver" (e.g. `main()` called in a process that
    has loaded models)."""
    import os

    try:
        with open("/proc/self/statm") as f:
            vm_mb = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return "forkserver"
    return "fork" if vm_mb < 1024 and "torch" not in sys.modules else "forkserver"


def cmd_check(args) -> int:
    from sqlbox.databases import UnknownDatabase
    from sqlbox.executor import Executor
    from sqlbox.verdict import verdict_record

    if args.timeout <= 0:
        print("error: --timeout must be positive", file=sys.stderr)
        return 2
    reg = registry_or_report(args, registries=False)  # a one-shot: no router/model registries imported
    if reg is None:
        return 2
    if args.db not in reg:
        print(f"error: {UnknownDatabase(args.db, reg.ids())}", file=sys.stderr)
        return 2
    from sqlbox.privileges import PrivilegeError

    try:
        # a one-shot: one sandbox worker (the service's limits), forked from this process when first needed
        # instead of a pool behind a fork server; nothing here has opened a DuckDB connection before it forks
        with Executor(reg, engine=args.engine, timeout_s=args.timeout, preview_rows=args.rows, workers=1,
                      start_method=_start_method()) as ex:
            if ex.pool is not None:
                ex.pool.warm(1)  # fork before anything opens a database here
            res = ex.execute(args.db, args.sql, dialect=args.dialect or reg.get(args.db).dialect)
    except PrivilegeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    record = verdict_record(args.db, res)
    verdict = record["verdict"]
    if args.json:
        print(json.dumps(record, indent=2))
    elif res.ok:
        print(f"ok: {res.row_count}{'+' if res.truncated else ''} row(s), {len(res.columns)} column(s), "
              f"{res.elapsed_ms:.1f} ms on {res.engine}")
        if res.columns:
            print(_table(res.columns, res.rows))
        if res.row_count > len(res.rows):
            print(f"... {res.row_count - len(res.rows)} more row(s)")
    elif verdict == "rejected":
        print(f"rejected: {res.error}")
    else:
        print(f"failed ({res.error_kind}): {res.error}")
    return 0 if res.ok else 1


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="run one SQL query through the guard and the sandboxed executor",
                       description="Check one SQL query: rejected (why) / failed (error) / ok (rows).")
    p.add_argument("sql", help="the SQL to check")
    add_database_options(p, db="required")
    p.add_argument("--engine", choices=["duckdb", "sqlite"], default="duckdb")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds before the query is interrupted")
    p.add_argument("--dialect", default=None,
                   help="dialect the SQL is written in (default: the database's own: sqlite, duckdb, postgres, mysql)")
    p.add_argument("--rows", type=int, default=20, help="rows to preview")
    p.add_argument("--json", action="store_true", help="print the ExecutionResult as JSON")
    p.set_defaults(func=cmd_check)
