"""The `check` and `databases` commands: run one SQL through the guard and the sandboxed executor, and
list the registered databases.

    sqlarbiter check --db ID "SQL" [--data DIR_OR_FILE ...] [--config FILE] [--json] [--engine duckdb|sqlite]
                     [--timeout S]
    sqlarbiter databases [--data DIR_OR_FILE ...] [--config FILE] [--json]

The databases: the demo database, the config's `databases`, $SQLARBITER_DATABASES and every `--data` (the
options shared by every command, `planner.cli_options`). Exit status: 0 ok, 1 rejected or failed, 2 bad usage
(unknown database, bad file or folder, bad config).
"""

from __future__ import annotations

import argparse
import json
import sys

from core.model import ErrorKind, ExecutionResult
from planner.cli_options import add_database_options, cli_registry
from sqlbox.databases import DatabaseRegistry, UnknownDatabase


def _registry(args) -> DatabaseRegistry | None:
    try:
        return cli_registry(args)
    except (OSError, ValueError) as e:  # a bad --data entry or config (ConfigError is a ValueError)
        print(f"error: cannot register the databases: {e}", file=sys.stderr)
        return None


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


def _verdict(res: ExecutionResult) -> str:
    if res.ok:
        return "ok"
    return "rejected" if res.error_kind == ErrorKind.REJECTED else "failed"


def check_sql(executor, db_id: str, sql: str, dialect: str = "sqlite") -> dict:
    """The verdict `sqlarbiter check --json` prints and POST /check returns:
    {"verdict": ok|rejected|failed, "db": id, **ExecutionResult}."""
    res = executor.execute(db_id, sql, dialect=dialect)
    return {"verdict": _verdict(res), "db": db_id, **res.model_dump(mode="json")}


def cmd_check(args) -> int:
    from sqlbox.executor import Executor

    if args.timeout <= 0:
        print("error: --timeout must be positive", file=sys.stderr)
        return 2
    reg = _registry(args)
    if reg is None:
        return 2
    if args.db not in reg:
        print(f"error: {UnknownDatabase(args.db, reg.ids())}", file=sys.stderr)
        return 2
    with Executor(reg, engine=args.engine, timeout_s=args.timeout, preview_rows=args.rows) as ex:
        res = ex.execute(args.db, args.sql, dialect=args.dialect)
    verdict = _verdict(res)
    if args.json:
        print(json.dumps({"verdict": verdict, "db": args.db, **res.model_dump(mode="json")}, indent=2))
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


def cmd_databases(args) -> int:
    reg = _registry(args)
    if reg is None:
        return 2
    items = []
    for db_id in reg.ids():
        info = reg.get(db_id)
        try:
            n = len(reg.schema(db_id).tables)
        except Exception as e:  # a broken file is listed, not fatal
            n = None
            print(f"warning: {db_id}: cannot read schema: {e}", file=sys.stderr)
        items.append({"db_id": db_id, "kind": info.kind, "path": str(info.path), "n_tables": n})
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        w = max((len(i["db_id"]) for i in items), default=5)
        print(f"{'db_id'.ljust(w)}  kind    tables  path")
        for i in items:
            print(f"{i['db_id'].ljust(w)}  {i['kind']:<6}  {str(i['n_tables']):>6}  {i['path']}")
    return 0


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="run one SQL query through the guard and the sandboxed executor",
                       description="Check one SQL query: rejected (why) / failed (error) / ok (rows).")
    p.add_argument("sql", help="the SQL to check")
    add_database_options(p, db="required")
    p.add_argument("--engine", choices=["duckdb", "sqlite"], default="duckdb")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds before the query is interrupted")
    p.add_argument("--dialect", default="sqlite", help="dialect the SQL is written in (default sqlite)")
    p.add_argument("--rows", type=int, default=20, help="rows to preview")
    p.add_argument("--json", action="store_true", help="print the ExecutionResult as JSON")
    p.set_defaults(func=cmd_check)

    d = sub.add_parser("databases", help="list the registered databases",
                       description="List the databases the commands and the service see: the demo database, the "
                       "config's `databases`, $SQLARBITER_DATABASES and every --data.")
    add_database_options(d, db=None)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_databases)
