"""The `databases` command: list the registered databases, load Spider into a server, print (or apply) a
read-only role.

    sqlarbiter databases [--data DIR_OR_FILE_OR_URL ...] [--config FILE] [--json]
    sqlarbiter databases load-spider --to postgresql://user@host:port [--db-ids A,B | --split dev] [--data DIR]
                                     [--replace]
    sqlarbiter databases grant-readonly ADMIN_URL [--role NAME] [--host H ...] [--apply]
    sqlarbiter databases warm [--db ID ...] [--data DIR_OR_FILE ...] [--config FILE]

The databases listed are those every command sees (`cli.options`). A server database whose role can do more
than read is refused (`sqlbox.privileges`) unless the configuration's `privileged_databases` names it;
`databases grant-readonly` prints (or, with --apply, runs and checks) the DDL of a role that passes.
Exit status: 0 ok, 1 a load or a role check failed, 2 bad usage (bad file, folder, URL or config; a refused
database).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.options import add_database_options, add_dataset_option, registry_or_report


def cmd_databases(args) -> int:
    from sqlbox.privileges import PrivilegeError, RoleCheckError

    reg = registry_or_report(args)
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
            except Exception as e:  # noqa: BLE001 - whatever a file or server raises, a broken database is listed, not fatal
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
    from sqlbox.servers.targets import TargetError, parse_target, redact

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


def cmd_warm(args) -> int:
    """Build what the databases' first plans need, ahead of need (planner.warmup): the example store's embeddings
    and the schema-linking index of every database whose schema exceeds the prompt budget. Cached on disk
    (`cache_dir()`), so later processes and `serve` start warm."""
    import time
    from types import SimpleNamespace

    from cli.options import cli_registry, load_cli_config
    from planner.config import ConfigError
    from planner.warmup import warm
    from sqlbox.databases import UnknownDatabase

    try:
        cfg = load_cli_config(args, registries=False)  # only its defaults and databases are read here
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        reg = cli_registry(args, cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ids = args.db or None
    for db in ids or []:
        if db not in reg:
            print(f"error: {UnknownDatabase(db, reg.ids())}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    st = warm(SimpleNamespace(config=cfg, registry=reg), ids,
              report=lambda name, state, s: print(f"{name}: {state} ({s:.1f} s)", flush=True))
    failed = [k for k, v in st["items"].items() if str(v.get("state", "")).startswith("failed")]
    if not st["items"]:
        print("nothing to warm: these databases need no example-store embeddings or schema index, or theirs are cached")
    print(f"warm-up done in {time.perf_counter() - t0:.1f} s" + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def cmd_load_spider(args) -> int:
    from core.settings import spider_dir
    from sqlbox.admin import load_spider, spider_db_ids
    from sqlbox.servers.targets import TargetError, is_url, redact

    if not is_url(args.to):
        print(f"error: --to must be a server URL (postgresql://user@host:port or mysql://...), got {redact(args.to)!r}",
              file=sys.stderr)
        return 2
    spider = Path(args.data) if args.data else spider_dir()
    if not (spider / "database").is_dir():
        print(f"error: no Spider database/ folder under {spider} (give --data DIR)", file=sys.stderr)
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
    add_dataset_option(ls, "the shared Spider folder")
    ls.add_argument("--spider", dest="data", help=argparse.SUPPRESS)  # the old name of --data, still accepted
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
    wm = dsub.add_parser("warm", help="build the example store's embeddings and the schema-linking indexes now",
                         description="Build, ahead of the first question, what a database's first plan needs: the "
                         "retrieved-examples store's embeddings and the schema-linking index of each database whose "
                         "schema exceeds the prompt budget (schema_linking auto) - cached on disk, once per content.")
    add_database_options(wm, db=None)
    wm.add_argument("--db", action="append", default=None, metavar="ID",
                    help="warm only this database (repeatable; default: every registered database)")
    wm.set_defaults(func=cmd_warm)
