"""The `check` and `databases` commands: run one SQL through the guard and the sandboxed executor, and
list the registered databases.

    sqlarbiter check --db ID "SQL" [--data DIR_OR_FILE ...] [--config FILE] [--json] [--engine duckdb|sqlite]
                     [--timeout S]
    sqlarbiter databases [--data DIR_OR_FILE_OR_URL ...] [--config FILE] [--json]
    sqlarbiter databases load-spider --to postgresql://user@host:port [--db-ids A,B | --split dev] [--replace]
    sqlarbiter databases grant-readonly ADMIN_URL [--role NAME] [--host H ...] [--apply]

The databases: the demo database, the config's `databases`, $SQLARBITER_DATABASES and every `--data` (the
options shared by every command, `planner.cli_options`): a Spider-layout folder, a database file, or a server URL
(`postgresql://...`, `mysql://...`; docs/databases.md). Exit status: 0 ok, 1 rejected or failed, 2 bad usage
(unknown database, bad file, folder or URL, bad config, a server database refused for its role).

A server database whose role can do more than read is refused (`sqlbox.privileges`) unless the configuration's
`privileged_databases` names it; `databases grant-readonly` prints (or, with --apply, runs and checks) the DDL
of a role that passes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.model import ErrorKind, ExecutionResult
from planner.cli_options import add_database_options, cli_registry
from sqlbox.databases import DatabaseRegistry, UnknownDatabase


def _registry(args) -> DatabaseRegistry | None:
    try:
        return cli_registry(args)
    except (OSError, ValueError) as e:  # a bad --data entry or config (ConfigError is a ValueError)
        from sqlbox.servers import redact

        print(f"error: cannot register the databases: {redact(str(e))}", file=sys.stderr)
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


def check_sql(executor, db_id: str, sql: str, dialect: str | None = None) -> dict:
    """The verdict `sqlarbiter check --json` prints and POST /check returns:
    {"verdict": ok|rejected|failed, "db": id, **ExecutionResult}."""
    dialect = dialect or executor.registry.get(db_id).dialect  # the database's own dialect by default
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
    from sqlbox.privileges import PrivilegeError

    try:
        with Executor(reg, engine=args.engine, timeout_s=args.timeout, preview_rows=args.rows) as ex:
            res = ex.execute(args.db, args.sql, dialect=args.dialect or reg.get(args.db).dialect)
    except PrivilegeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    from sqlbox.privileges import PrivilegeError, RoleCheckError

    reg = _registry(args)
    if reg is None:
        return 2
    items = []
    refused = 0
    for db_id in reg.ids():
        info = reg.get(db_id)
        item = {"db_id": db_id, "kind": info.kind, "dialect": info.dialect, "path": info.location, "n_tables": None}
        if info.target is not None:  # the role first: nothing reads a refused database
            try:
                problems = reg.verify(db_id)
                item["role"] = "privileged (opted in)" if problems else "read-only"
                for w in problems:
                    print(f"WARNING: {db_id} is not read-only (opted in by privileged_databases): {w}", file=sys.stderr)
            except PrivilegeError as e:
                item["role"] = "refused"
                refused += 1
                print(f"error: {e}", file=sys.stderr)
            except RoleCheckError as e:
                item["role"] = "unchecked"
                print(f"warning: {db_id}: {e}", file=sys.stderr)
        if item.get("role") not in ("refused", "unchecked"):
            try:
                item["n_tables"] = len(reg.schema(db_id).tables)
            except Exception as e:  # a broken file is listed, not fatal
                print(f"warning: {db_id}: cannot read schema: {e}", file=sys.stderr)
        items.append(item)
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        w = max((len(i["db_id"]) for i in items), default=5)
        print(f"{'db_id'.ljust(w)}  kind        dialect   tables  path")
        for i in items:
            role = f"  [{i['role']}]" if i.get("role") else ""
            print(f"{i['db_id'].ljust(w)}  {i['kind']:<10}  {i['dialect']:<8}  {str(i['n_tables']):>6}  {i['path']}{role}")
    return 2 if refused else 0


def cmd_grant_readonly(args) -> int:
    from sqlbox.privileges import RoleCheckError, grant_readonly, password_hint
    from sqlbox.servers import TargetError, parse_target, redact

    try:
        _, admin = parse_target(args.url)
        res = grant_readonly(args.url, args.role, apply=args.apply, hosts=args.host)
    except TargetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RoleCheckError as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return 1
    where = f"{admin.url} (as {admin.url.split('//', 1)[1].split('@', 1)[0]})"
    print(f"-- a read-only role {args.role} for {admin.database}: run as an admin connected to {where}")
    for s in res.statements:
        print(f"{s};")
    for line in password_hint(admin, args.role, args.host):
        print(f"-- {line}")
    if not args.apply:
        print("-- (printed only: --apply runs it and checks the role)")
        return 0
    print(f"applied {len(res.statements)} statement(s) on {admin.url}")
    if res.check_error is not None:
        print(f"error: the role could not be checked: {res.check_error}; set its password and run "
              f"`sqlarbiter databases --data {res.url}?password_env=VAR`", file=sys.stderr)
        return 1
    if res.problems:
        print(f"error: the role {args.role} can still do more than read (grants it had before?): "
              + "; ".join(res.problems), file=sys.stderr)
        return 1
    print(f"verified: {res.url} can only read; register it as {res.url} (add ?password_env=VAR for its password)")
    return 0


def cmd_load_spider(args) -> int:
    from core.settings import spider_dir
    from sqlbox.servers import TargetError, is_url, load_spider, redact, spider_db_ids

    if not is_url(args.to):
        print(f"error: --to must be a server URL (postgresql://user@host:port or mysql://...), got {redact(args.to)!r}",
              file=sys.stderr)
        return 2
    spider = Path(args.spider) if args.spider else spider_dir()
    if not (spider / "database").is_dir():
        print(f"error: no Spider database/ folder under {spider} (give --spider DIR)", file=sys.stderr)
        return 2
    known = spider_db_ids(spider, None)
    ids = [x.strip() for x in args.db_ids.split(",") if x.strip()] if args.db_ids else spider_db_ids(spider, args.split)
    bad = [x for x in ids if x not in known]
    if bad:
        shown = ", ".join(known[:40]) + (f", ... ({len(known)} in all)" if len(known) > 40 else "")
        print(f"error: unknown Spider database(s) {', '.join(bad)}; known: {shown}", file=sys.stderr)
        return 2
    failed = 0
    for db_id in ids:
        try:
            rep = load_spider(spider / "database" / db_id / f"{db_id}.sqlite", args.to, db_id, replace=args.replace)
        except TargetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001 - report and go on with the next database
            failed += 1
            print(f"{db_id}: FAILED: {redact(str(e).splitlines()[0] if str(e) else type(e).__name__)}", file=sys.stderr)
            continue
        print(f"{db_id}: {rep.tables} tables, {rep.rows} rows, {rep.primary_keys} primary keys, "
              f"{rep.foreign_keys} foreign keys ({len(rep.skipped_constraints)} skipped), {rep.seconds:.1f} s")
    return 1 if failed else 0


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

    d = sub.add_parser("databases", help="list the registered databases; load Spider into a server",
                       description="List the databases the commands and the service see (kind, dialect, tables, "
                       "location): the demo database, the config's `databases`, $SQLARBITER_DATABASES and every --data.")
    add_database_options(d, db=None)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_databases)
    dsub = d.add_subparsers(dest="databases_command", metavar="COMMAND")
    ls = dsub.add_parser("load-spider", help="copy Spider SQLite databases into a PostgreSQL/MySQL server",
                         description="Copy Spider SQLite databases into a server, one database per db_id.")
    ls.add_argument("--to", required=True, help="server URL: postgresql://user@host:port or mysql://user@host:port")
    ls.add_argument("--db-ids", default=None, help="comma-separated Spider db_ids (default: every one of --split)")
    ls.add_argument("--split", choices=["dev", "train", "all"], default="all", help="which Spider databases")
    ls.add_argument("--spider", default=None, help="Spider folder (default: the shared data)")
    ls.add_argument("--replace", action="store_true", help="drop and reload databases that exist")
    ls.set_defaults(func=cmd_load_spider)
    gr = dsub.add_parser("grant-readonly", help="print (or --apply) the DDL of a read-only role for a server database",
                         description="Print the DDL that creates a role which can only read the database URL points "
                         "at (PostgreSQL: NOSUPERUSER ... NOINHERIT, CONNECT, USAGE and SELECT, default privileges; "
                         "MySQL/MariaDB: SELECT on that database only). --apply runs it through URL (an admin "
                         "connection to that database) and checks the new role as sqlarbiter will.")
    gr.add_argument("url", metavar="URL", help="admin connection to the database to expose, e.g. "
                    "postgresql://postgres@127.0.0.1:5432/sales (no password in the URL: ?password_env=VAR)")
    gr.add_argument("--role", default="sqlarbiter_ro", help="name of the read-only role (default sqlarbiter_ro)")
    gr.add_argument("--host", action="append", default=None, metavar="H",
                    help="MySQL/MariaDB: account host(s) (default: 127.0.0.1 and localhost for a local server, else %%)")
    gr.add_argument("--apply", action="store_true", help="run the DDL, then check the role")
    gr.set_defaults(func=cmd_grant_readonly)
