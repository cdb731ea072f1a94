"""Running one query on a server database (`ServerConn`, the executor's connection object), how its errors are
classified, and PostgreSQL's plan check.

Execution (`ServerConn.run`): one pooled connection per query (`sqlbox.servers.pool`), in a transaction that is
read-only and always rolled back:
- PostgreSQL: the session defaults to read-only (``default_transaction_read_only``), each query runs
  under ``SET TRANSACTION READ ONLY`` with ``statement_timeout``, ``lock_timeout`` and
  ``idle_in_transaction_session_timeout``; the extended protocol (binary results) refuses a second
  statement; a
  client-side cancel backs the timeout up; ``DISCARD ALL`` resets the session (settings, advisory locks)
  before the connection goes back to the pool;
- MySQL/MariaDB: ``START TRANSACTION READ ONLY`` under ``max_statement_time`` (MariaDB, seconds) or
  ``max_execution_time`` (MySQL, ms), multi-statements disabled by the driver, a socket read timeout;
  ``COM_RESET_CONNECTION`` (rollback, user variables, ``GET_LOCK`` locks, session settings, temporary
  tables) before the connection goes back to the pool.
Rows stream (PostgreSQL: ``Cursor.stream``, a few rows per libpq chunk; MySQL: PyMySQL's unbuffered
``SSCursor``) through `sqlbox.fetch.fetch_capped`, so memory stays bounded by the row cap and the result byte
cap; a result stopped early is cancelled (PostgreSQL) or its connection dropped (MySQL) rather than drained.
Results are fingerprinted by `sqlbox.values`, so they compare with the file engines' results.

`ServerConn.classify` maps a driver's error (SQLSTATE, MySQL error code) to an `ErrorKind`. On PostgreSQL,
`check_pg_plan` is a second opinion from the server's own planner (EXPLAIN, not run) before the query runs.
"""

from __future__ import annotations

import re
import threading
import time

from core.model import ErrorKind
from sqlbox.fetch import ResultTooLarge, fetch_capped
from sqlbox.servers.pool import engine_for
from sqlbox.servers.targets import ServerTarget

_PG_TIMEOUT_STATES = {"57014", "55P03", "25P03"}  # query_canceled, lock_not_available, idle-in-tx timeout
_PG_REJECT_STATES = {"25006", "42501", "0A000"}  # read-only transaction, insufficient privilege, not supported
_PG_BINDER_STATES = {"42P01", "42703", "42883", "42702", "42803", "42P10", "42725", "42804", "42P18", "42846"}
_MY_TIMEOUT = {1969, 3024, 1317, 1205, 3572, 2013}
_MY_REJECT = {1792, 1142, 1143, 1227, 1044, 1045, 1290, 1148, 1370, 1465}
_MY_PARSE = {1064, 1149}
_MY_BINDER = {1054, 1146, 1305, 1052, 1055, 1056, 1111, 1140, 1242, 1222, 1247, 1630, 1582, 1583, 1584}
_PG_STREAM_ROWS = 8  # rows per libpq chunk (libpq >= 17; one row at a time before)
_COM_RESET_CONNECTION = 0x1F  # MySQL >= 5.7.3, MariaDB >= 10.2.4 (PyMySQL names the byte COM_END)
_END = object()


class _PgStream:
    """psycopg's `Cursor.stream` (rows as the server sends them, in libpq chunks of a few rows) with the
    `description`/`fetchone` that `fetch_capped` reads. Creating it runs the query (its error raises here);
    `close` before the end cancels the query and discards what is in flight instead of reading the rest."""

    def __init__(self, cur, sql: str):
        from psycopg import pq

        size = _PG_STREAM_ROWS if pq.version() >= 170000 else 1
        self._it = cur.stream(sql, binary=True, size=size)  # the extended protocol: one statement only
        self._next = next(self._it, _END)
        self.description = cur.description
        if self._next is _END and self.description is None:  # no rows: psycopg's stream drops the columns
            self.description = _pg_describe(cur.connection, sql)

    def fetchone(self):
        row, self._next = self._next, (next(self._it, _END) if self._next is not _END else _END)
        return None if row is _END else row

    def close(self) -> None:
        self._it.close()


class ServerConn:
    """The executor's connection object for a server database: pooled connections, one read-only,
    bounded, rolled-back transaction per query."""

    def __init__(self, db_id: str, target: ServerTarget, *, plan_check: bool = True):
        self.db_id = db_id
        self.target = target
        self.plan_check = plan_check  # PostgreSQL's own plan as a second opinion (off only to test the layers below)
        self.engine = target.kind
        self._eng = engine_for(target)
        self._timed_out = False
        self._mariadb: bool | None = None

    def _is_mariadb(self, cur) -> bool:
        if self._mariadb is None:
            cur.execute("SELECT VERSION()")
            self._mariadb = "mariadb" in str(cur.fetchone()[0]).lower()
        return self._mariadb

    def run(self, sql: str, timeout_s: float, max_rows: int):
        self._timed_out = False
        raw = self._eng.raw_connection()
        started = time.monotonic()
        try:
            if self.target.kind == "postgresql":
                return self._run_pg(raw, sql, timeout_s, max_rows)
            return self._run_mysql(raw, sql, timeout_s, max_rows)
        finally:
            if time.monotonic() - started > timeout_s:
                self._timed_out = True
            try:
                raw.close()  # back to the pool (SQLAlchemy rolls back on return)
            except Exception:  # noqa: BLE001 - back to the pool is best effort, whatever the driver raises
                pass

    def _run_pg(self, raw, sql: str, timeout_s: float, max_rows: int):
        dbapi = raw.driver_connection
        ms = max(1, int(timeout_s * 1000))
        timer = threading.Timer(timeout_s + 0.5, self._cancel_pg, args=(dbapi,))
        timer.daemon = True
        cur = raw.cursor()
        stream = None
        try:
            # standard_conforming_strings: a backslash in a string is a character, as sqlglot renders it
            cur.execute(f"SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}; "
                        f"SET LOCAL idle_in_transaction_session_timeout = {ms + 5000}; "
                        f"SET LOCAL standard_conforming_strings = on")
            timer.start()
            if self.plan_check:  # the server's own planner: no catalog, no other schema, no forbidden call
                check_pg_plan(cur, sql)
            # streamed (psycopg's client cursor would hold the whole result), in the extended protocol, which
            # refuses a second statement
            stream = _PgStream(cur, sql)
            cols, rows = fetch_capped(stream, max_rows)
            return cols, [tuple(r) for r in rows]
        finally:
            timer.cancel()
            try:
                if stream is not None:
                    stream.close()  # stopped early: psycopg cancels the query and discards what is in flight
                cur.close()
            except Exception:  # noqa: BLE001 - closing is best effort, whatever the driver raises
                pass
            try:
                raw.rollback()
                dbapi.autocommit = True
                try:
                    dbapi.execute("DISCARD ALL")  # settings, advisory locks, prepared plans, temp tables
                finally:
                    dbapi.autocommit = False
            except Exception:  # noqa: BLE001 - a broken connection: invalidate it, the pool opens a new one
                try:
                    raw.invalidate()
                except Exception:  # noqa: BLE001 - the connection is already broken: the pool replaces it
                    pass

    def _cancel_pg(self, dbapi) -> None:
        self._timed_out = True
        try:
            dbapi.cancel_safe(timeout=2.0) if hasattr(dbapi, "cancel_safe") else dbapi.cancel()
        except Exception:  # noqa: BLE001 - a cancel is best effort: the server's statement_timeout backs it up
            pass

    def _run_mysql(self, raw, sql: str, timeout_s: float, max_rows: int):
        from pymysql.cursors import SSCursor

        dbapi = raw.driver_connection
        cur = raw.cursor()
        ss = None
        try:
            limit = (f"max_statement_time = {max(timeout_s, 0.001):.3f}" if self._is_mariadb(cur)
                     else f"max_execution_time = {max(1, int(timeout_s * 1000))}")
            # div_precision_increment: AVG and / keep the digits SQLite's doubles have (default: 4 decimals)
            cur.execute(f"SET SESSION {limit}, innodb_lock_wait_timeout = {max(1, int(timeout_s + 0.999))}, "
                        f"div_precision_increment = 16")
            cur.execute("START TRANSACTION READ ONLY")
            # unbuffered: rows are read off the socket as fetch_capped asks (PyMySQL's default cursor reads them all)
            ss = dbapi.cursor(SSCursor)
            ss.execute(sql)  # no parameters: the text goes as is; the driver sends one statement only
            cols, rows = fetch_capped(ss, max_rows)
            return cols, [tuple(r) for r in rows]
        finally:
            result = getattr(dbapi, "_result", None)
            if result is not None and getattr(result, "unbuffered_active", False):
                # stopped before the end (row or byte cap, error): reading the rest could take minutes and
                # any next command would; drop the connection instead (the server aborts the query)
                result.unbuffered_active = False
                _close_quietly(ss, cur)
                _invalidate(raw)
            else:
                _close_quietly(ss, cur)
                try:
                    _reset_mysql_session(dbapi)  # rollback + user variables, GET_LOCK locks, settings
                except Exception:  # noqa: BLE001 - no reset (an old server, a broken connection): a new one
                    _invalidate(raw)

    def timed_out(self) -> bool:
        return self._timed_out

    def classify(self, e: Exception) -> ErrorKind:
        if isinstance(e, ResultTooLarge | MemoryError):
            return ErrorKind.TOO_LARGE
        if self.target.kind == "postgresql":
            state = getattr(e, "sqlstate", None) or getattr(getattr(e, "diag", None), "sqlstate", None) or ""
            if state in _PG_TIMEOUT_STATES or self._timed_out:
                return ErrorKind.TIMEOUT
            if state in _PG_REJECT_STATES or state.startswith("28"):
                return ErrorKind.REJECTED
            if state == "42601":
                return ErrorKind.PARSE
            if state in _PG_BINDER_STATES:
                return ErrorKind.BINDER
            if state.startswith(("08", "XX", "57", "58")):
                return ErrorKind.INTERNAL
            if state == "53200" or state == "54000":
                return ErrorKind.TOO_LARGE
            return ErrorKind.RUNTIME
        code = e.args[0] if getattr(e, "args", None) and isinstance(e.args[0], int) else None
        if code in _MY_TIMEOUT or self._timed_out:
            return ErrorKind.TIMEOUT
        if code in _MY_REJECT:
            return ErrorKind.REJECTED
        if code in _MY_PARSE:
            return ErrorKind.PARSE
        if code in _MY_BINDER:
            return ErrorKind.BINDER
        if code is not None and 2000 <= code < 3000:
            return ErrorKind.INTERNAL
        return ErrorKind.RUNTIME

    def close(self) -> None:  # the pool is per target and process; nothing per executor thread
        pass


def _pg_describe(dbapi, sql: str) -> list[tuple[str]] | None:
    """The result columns of `sql` without running it (libpq's prepare + describe of the unnamed statement,
    two round trips; only for a streamed result that had no rows)."""
    from psycopg import pq

    enc = dbapi.info.encoding
    res = dbapi.pgconn.prepare(b"", sql.encode(enc))
    if res.status != pq.ExecStatus.COMMAND_OK:
        return None
    res = dbapi.pgconn.describe_prepared(b"")
    if res.status != pq.ExecStatus.COMMAND_OK:
        return None
    return [((res.fname(i) or b"").decode(enc, "replace"),) for i in range(res.nfields)]


def _close_quietly(*cursors) -> None:
    for c in cursors:
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing is best effort, whatever the driver raises
                pass


def _invalidate(raw) -> None:
    try:
        raw.invalidate()  # closed now; the pool opens a new connection in its place
    except Exception:  # noqa: BLE001 - the connection is already broken: the pool replaces it
        pass


def _reset_mysql_session(dbapi) -> None:
    """``COM_RESET_CONNECTION`` on a PyMySQL connection (PyMySQL has no method for it): one round trip that
    rolls back and clears the session (user variables, ``GET_LOCK`` locks, temporary tables, prepared
    statements, session variables back to the global values, autocommit included; PyMySQL follows the server's
    status flags). Raises when the server refuses it."""
    dbapi._execute_command(_COM_RESET_CONNECTION, b"")
    dbapi._read_ok_packet()


_PG_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def pg_plan_relations(cur, sql: str) -> list[tuple[str, str]]:
    """(schema, relation) of every relation PostgreSQL's plan for `sql` reads, and ("function", name) for every
    function scan, from `EXPLAIN (VERBOSE, FORMAT JSON)` (planned, not run), on cursor `cur` in the query's own
    read-only transaction."""
    import json

    cur.execute("EXPLAIN (VERBOSE, FORMAT JSON) " + sql, binary=True)  # extended protocol: one statement
    plan = cur.fetchone()[0]
    if isinstance(plan, str | bytes):
        plan = json.loads(plan)
    out: list[tuple[str, str]] = []
    stack: list = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("Relation Name"):
                out.append((str(node.get("Schema") or ""), str(node["Relation Name"])))
            if node.get("Function Name"):
                out.append(("function", f"{node.get('Schema') or ''}.{node['Function Name']}".lstrip(".")))
            for key, value in node.items():
                if key in _PG_PLAN_EXPRESSIONS:
                    for text in value if isinstance(value, list) else [value]:
                        out.extend(("call", name) for name in _pg_calls(str(text)))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


# EXPLAIN VERBOSE's fields that hold expressions as PostgreSQL deparses them
_PG_PLAN_EXPRESSIONS = frozenset({"Output", "Filter", "Join Filter", "Hash Cond", "Merge Cond", "Index Cond",
                                  "Recheck Cond", "One-Time Filter", "Sort Key", "Group Key", "Presorted Key",
                                  "Function Call", "Cache Key", "Run Condition", "TID Cond", "Order By"})
_PG_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_PG_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?)\s*\(")


def _pg_calls(text: str) -> list[str]:
    """The function names called in a deparsed PostgreSQL expression (string literals and quoted names
    skipped; a schema qualifier kept)."""
    return _PG_CALL.findall(_PG_QUOTED.sub(" ", text))


def check_pg_plan(cur, sql: str, allowed_schemas: set[str] | None = None) -> None:
    """PostgreSQL's second opinion: refuse (`sqlbox.guard.Rejected`) a plan that reads a system catalog or a
    relation outside the registered database's schemas, or scans a function other than the allowlisted table
    functions."""
    from sqlbox.functions import PG_PLAN_FORBIDDEN, PG_PLAN_FORBIDDEN_PREFIXES, table_functions
    from sqlbox.guard import Rejected

    allowed_schemas = {a.lower() for a in allowed_schemas or ()}
    for sch, rel in pg_plan_relations(cur, sql):
        if sch == "call":
            qual, _, name = rel.lower().rpartition(".")
            if (qual and qual != "pg_catalog") or name in PG_PLAN_FORBIDDEN or name.startswith(
                    PG_PLAN_FORBIDDEN_PREFIXES):
                raise Rejected(f"server check: the plan calls {rel}(), which is not allowed")
            continue
        if sch == "function":
            name = rel.rsplit(".", 1)[-1].lower()
            if name not in table_functions("postgres"):
                raise Rejected(f"server check: the plan calls table function {name}(), which is not allowed")
        elif sch.lower() in _PG_SYSTEM_SCHEMAS or sch.lower().startswith("pg_") or (
                allowed_schemas and sch.lower() not in allowed_schemas):
            raise Rejected(f"server check: the plan reads {sch}.{rel}, outside the database's own tables")
