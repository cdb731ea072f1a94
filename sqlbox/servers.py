"""Database servers as targets: PostgreSQL and MySQL/MariaDB, registered by URL, introspected through
SQLAlchemy's inspector, and queried read-only and bounded.

A target is a URL: ``postgresql://user@host:port/dbname`` or ``mysql://user@host:port/dbname``
(``postgres://``, ``mariadb://`` and SQLAlchemy driver forms such as ``postgresql+psycopg://`` too). Query
parameters this module understands (removed before connecting):

- ``id=NAME``: the database id (default: the database name);
- ``include=PAT,...`` / ``exclude=PAT,...``: which tables the schema shows, shell patterns over ``table``
  or ``schema.table`` (tables outside the default schema need an include pattern naming their schema);
- ``password_env=VAR`` / ``password_file=PATH``: where the password comes from. Passwords are never
  accepted inside the URL (they would end up in config files, shells and logs); without either, the
  driver's own environment applies (``PGPASSWORD``, ``~/.pgpass``; ``MYSQL_PWD`` for MySQL).

Execution (`ServerConn.run`): one pooled connection per query, in a transaction that is read-only and
always rolled back:
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
``SSCursor``) through `sqlbox.engines.fetch_capped`, so memory stays bounded by the row cap and the result byte
cap; a result stopped early is cancelled (PostgreSQL) or its connection dropped (MySQL) rather than drained.
Results are fingerprinted by `sqlbox.values`, so they compare with the file engines' results.

`prepare_sql` is what runs: the candidate guarded in its dialect against the database's own tables
(`sqlbox.guard`, allowlists of `sqlbox.functions`), rewritten as a tree for the server, rendered, and that
text guarded again in the server's own dialect; only the rendering of that second checked tree runs.
On PostgreSQL, `pg_plan_relations` is a second opinion from the server's own planner (EXPLAIN, not run). The configured role's privileges are checked by `sqlbox.privileges`.
`load_spider` copies a Spider SQLite database into a server database.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from core.model import ErrorKind
from sqlbox.engines import ResultTooLarge, fetch_capped

log = logging.getLogger("sqlarbiter.servers")

# kind -> sqlglot dialect
SERVER_DIALECTS = {"postgresql": "postgres", "mysql": "mysql"}
_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
_OUR_PARAMS = ("id", "include", "exclude", "password_env", "password_file")


class TargetError(ValueError):
    """A database URL that cannot be used (the message never contains a password)."""


def is_url(text: str) -> bool:
    """Whether `text` names a database server (``scheme://...``) rather than a file or folder."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9]*)(\+[A-Za-z0-9_]+)?://", str(text).strip())
    return bool(m) and m.group(1).lower() in _SCHEMES


def split_database_list(value: str) -> list[str]:
    """Split an ``os.pathsep``-separated list of files, folders and URLs (URLs contain ':' themselves)."""
    parts = value.split(os.pathsep)
    out: list[str] = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if (os.pathsep == ":" and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(\+[A-Za-z0-9_]+)?", p) and i + 1 < len(parts)
                and parts[i + 1].startswith("//")):
            p = p + ":" + parts[i + 1]
            i += 1
            while i + 1 < len(parts) and re.match(r"^\d+(/|$|\?)", parts[i + 1]):  # host:PORT/db
                p = p + ":" + parts[i + 1]
                i += 1
        if p:
            out.append(p)
        i += 1
    return out


@dataclass(frozen=True)
class ServerTarget:
    """A server database: kind, the password-free URL, and the options of the module docstring."""

    kind: str  # postgresql | mysql
    url: str  # scheme://user@host:port/dbname (no password, no options)
    database: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    password_env: str | None = None
    password_file: str | None = None

    @property
    def dialect(self) -> str:
        return SERVER_DIALECTS[self.kind]

    def password(self) -> str | None:
        if self.password_file:
            try:
                return Path(self.password_file).expanduser().read_text().strip("\r\n")
            except OSError as e:
                raise TargetError(f"{self.url}: cannot read password_file {self.password_file}: "
                                  f"{e.strerror or type(e).__name__}") from None
        if self.password_env:
            if self.password_env not in os.environ:
                raise TargetError(f"{self.url}: environment variable {self.password_env} (password_env) is not set")
            return os.environ[self.password_env]
        if self.kind == "mysql":
            return os.environ.get("MYSQL_PWD")
        return None  # libpq reads PGPASSWORD / ~/.pgpass itself

    def sqlalchemy_url(self, database: str | None = None):
        from sqlalchemy.engine import make_url

        u = make_url(_DRIVERS[self.kind] + self.url[self.url.index("://"):])
        if database is not None:
            u = u.set(database=database)
        pw = self.password()
        return u.set(password=pw) if pw else u

    def with_database(self, database: str) -> ServerTarget:
        parts = urlsplit(self.url)
        return ServerTarget(self.kind, urlunsplit(parts._replace(path="/" + quote(database))), database,
                            self.include, self.exclude, self.password_env, self.password_file)

    def keeps(self, schema: str | None, table: str, default_schema: str | None) -> bool:
        names = [table] if schema in (None, default_schema) else []
        if schema:
            names.append(f"{schema}.{table}")
        if self.include and not any(fnmatch.fnmatchcase(n.lower(), p.lower()) for n in names for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(n.lower(), p.lower()) for n in names for p in self.exclude)


def parse_target(url: str, *, db_id: str | None = None) -> tuple[str, ServerTarget]:
    """(database id, target) for a server URL. Raises TargetError (never echoing a password)."""
    text = str(url).strip()
    if not is_url(text):
        raise TargetError(f"not a database URL (expected postgresql://... or mysql://...): {_redact(text)!r}")
    parts = urlsplit(text)
    scheme = parts.scheme.split("+", 1)[0].lower()
    kind = _SCHEMES[scheme]
    if parts.password is not None:
        raise TargetError(f"{_redact(text)}: do not put the password in the URL; give it in the environment "
                          f"(?password_env=VAR) or a file (?password_file=PATH)")
    if not parts.hostname:
        raise TargetError(f"{_redact(text)}: the URL needs a host")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise TargetError(f"{_redact(text)}: bad port") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise TargetError(f"{_redact(text)}: the URL needs a database name (scheme://user@host:port/DBNAME)")
    params = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in params if k in _OUR_PARAMS}
    rest = [(k, v) for k, v in params if k not in _OUR_PARAMS]
    if rest:
        raise TargetError(f"{_redact(text)}: unknown URL option(s) {', '.join(sorted({k for k, _ in rest}))}; "
                          f"known: {', '.join(_OUR_PARAMS)}")
    if ours.get("password_env") and ours.get("password_file"):
        raise TargetError(f"{_redact(text)}: give password_env or password_file, not both")
    netloc = parts.netloc.rsplit("@", 1)
    clean = urlunsplit((scheme if scheme != "postgres" else "postgresql", parts.netloc, "/" + quote(database), "", ""))
    del netloc
    split = lambda s: tuple(x.strip() for x in (s or "").split(",") if x.strip())  # noqa: E731
    target = ServerTarget(kind, clean, database, split(ours.get("include")), split(ours.get("exclude")),
                          ours.get("password_env") or None, ours.get("password_file") or None)
    ident = db_id or ours.get("id") or database
    return ident, target


def _redact(text: str) -> str:
    """The text with any ``user:password@`` password replaced by ``***``."""
    return re.sub(r"(//[^/@:]*:)[^@/]*@", r"\1***@", text)


def redact(text: str, target: ServerTarget | None = None) -> str:
    """An error message without the target's password (drivers may echo connection strings)."""
    out = _redact(str(text))
    if target is not None:
        try:
            pw = target.password()
        except TargetError:
            pw = None
        if pw:
            out = out.replace(pw, "***")
    return out


# --------------------------------------------------------------------------- engines (pooled)

_ENGINES: dict[tuple[ServerTarget, str | None], Any] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(target: ServerTarget, *, database: str | None = None, pool_size: int = 4):
    """The pooled SQLAlchemy engine of a target (one per target and process)."""
    from sqlalchemy import create_engine

    key = (target, database)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            # no pre-ping (a round trip per query): a connection that fails is invalidated and replaced
            kw: dict[str, Any] = {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": False,
                                  "pool_recycle": 1800, "hide_parameters": True}
            if target.kind == "postgresql":
                kw["connect_args"] = {"connect_timeout": 10, "application_name": "sqlarbiter",
                                      "options": "-c default_transaction_read_only=on"}
            else:
                kw["connect_args"] = {"connect_timeout": 10, "charset": "utf8mb4", "read_timeout": 120,
                                      "local_infile": False}
            eng = create_engine(target.sqlalchemy_url(database), **kw)
            _ENGINES[key] = eng
        return eng


def dispose_all() -> None:
    """Close every pooled server connection (tests; shutdown)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for e in engines:
        try:
            e.dispose()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------- execution

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

    def __init__(self, db_id: str, target: ServerTarget):
        self.db_id = db_id
        self.target = target
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
            except Exception:  # noqa: BLE001
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
            check_pg_plan(cur, sql)  # the server's own planner: no catalog, no other schema, no function scan
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
            except Exception:  # noqa: BLE001
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
                except Exception:  # noqa: BLE001
                    pass

    def _cancel_pg(self, dbapi) -> None:
        self._timed_out = True
        try:
            dbapi.cancel_safe(timeout=2.0) if hasattr(dbapi, "cancel_safe") else dbapi.cancel()
        except Exception:  # noqa: BLE001
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
            except Exception:  # noqa: BLE001
                pass


def _invalidate(raw) -> None:
    try:
        raw.invalidate()  # closed now; the pool opens a new connection in its place
    except Exception:  # noqa: BLE001
        pass


def _reset_mysql_session(dbapi) -> None:
    """``COM_RESET_CONNECTION`` on a PyMySQL connection (PyMySQL has no method for it): one round trip that
    rolls back and clears the session (user variables, ``GET_LOCK`` locks, temporary tables, prepared
    statements, session variables back to the global values, autocommit included; PyMySQL follows the server's
    status flags). Raises when the server refuses it."""
    dbapi._execute_command(_COM_RESET_CONNECTION, b"")
    dbapi._read_ok_packet()


def error_text(e: BaseException, target: ServerTarget) -> str:
    s = str(e).strip()
    first = s.splitlines()[0] if s else ""
    return redact(f"{type(e).__name__}: {first}", target)[:500]


# --------------------------------------------------------------------------- introspection


def default_schema(kind: str, insp) -> str | None:
    try:
        return insp.default_schema_name
    except Exception:  # noqa: BLE001
        return "public" if kind == "postgresql" else None


def introspect_server(db_id: str, target: ServerTarget, samples: int = 3, timeout_s: float = 10.0):
    """A `sqlbox.schema.Schema` for a server database: tables (include/exclude applied), columns with
    their declared types and comments, primary and foreign keys, row counts and `samples` sample values
    per column (read-only, bounded by `timeout_s` per query)."""
    from sqlalchemy import inspect

    from sqlbox.schema import Column, ForeignKey, Schema, Table

    eng = engine_for(target)
    insp = inspect(eng)
    dflt = default_schema(target.kind, insp)
    schemas = [dflt]
    for p in target.include:
        if "." in p:
            s = p.split(".", 1)[0]
            if not any(ch in s for ch in "*?[") and s not in schemas:
                schemas.append(s)
    tables: list[Table] = []
    conn = ServerConn(db_id, target)
    q = _quote_fn(target.kind)
    for sch in schemas:
        try:
            names = sorted(insp.get_table_names(schema=sch)) + sorted(insp.get_view_names(schema=sch))
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"{target.url}: cannot list tables of schema {sch}: {error_text(e, target)}") from None
        for name in names:
            if not target.keeps(sch, name, dflt):
                continue
            full = name if sch == dflt else f"{sch}.{name}"
            qual = q(name) if sch == dflt else f"{q(sch)}.{q(name)}"
            cols = insp.get_columns(name, schema=sch)
            try:
                pk = list(insp.get_pk_constraint(name, schema=sch).get("constrained_columns") or [])
            except Exception:  # noqa: BLE001 - views
                pk = []
            fks = []
            try:
                for fk in insp.get_foreign_keys(name, schema=sch):
                    ref = fk["referred_table"]
                    rs = fk.get("referred_schema")
                    fks.append(ForeignKey(full, tuple(fk["constrained_columns"]),
                                          ref if rs in (None, dflt, sch) else f"{rs}.{ref}",
                                          tuple(fk["referred_columns"])))
            except Exception:  # noqa: BLE001
                pass
            try:
                comment = (insp.get_table_comment(name, schema=sch) or {}).get("text") or ""
            except Exception:  # noqa: BLE001
                comment = ""
            columns = []
            for c in cols:
                sv: tuple = ()
                if samples > 0:
                    try:
                        _, rows = conn.run(f"SELECT DISTINCT {q(c['name'])} FROM {qual} WHERE {q(c['name'])} IS NOT NULL "
                                           f"LIMIT {int(samples)}", timeout_s, samples)
                        sv = tuple(r[0] for r in rows)
                    except Exception:  # noqa: BLE001
                        sv = ()
                columns.append(Column(c["name"], _type_text(c["type"]), c["name"] in pk, not c.get("nullable", True),
                                      sv, (), c.get("comment") or ""))
            rows_: list[tuple] = []
            count = None
            if samples > 0:
                try:
                    rows_ = conn.run(f"SELECT * FROM {qual} LIMIT {int(samples)}", timeout_s, samples)[1]
                except Exception:  # noqa: BLE001
                    rows_ = []
            try:
                count = conn.run(f"SELECT count(*) FROM {qual}", timeout_s, 1)[1][0][0]
            except Exception:  # noqa: BLE001
                count = None
            tables.append(Table(full, columns, pk, fks, rows_, count, comment))
    return Schema(db_id=db_id, tables=tables, kind=target.kind)


def _type_text(t) -> str:
    try:
        return str(t)
    except Exception:  # noqa: BLE001 - e.g. NullType
        return ""


def _quote_fn(kind: str):
    if kind == "mysql":
        return lambda n: "`" + str(n).replace("`", "``") + "`"
    return lambda n: '"' + str(n).replace('"', '""') + '"'


# --------------------------------------------------------------------------- loading Spider


@dataclass
class LoadReport:
    db_id: str
    tables: int = 0
    rows: int = 0
    primary_keys: int = 0
    foreign_keys: int = 0
    skipped_constraints: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _server_type(kind: str, storage: tuple[str, ...], declared: str, is_key: bool, max_len: int):
    from sqlalchemy import Float, LargeBinary, Text, types
    from sqlalchemy.dialects import mysql, postgresql

    st = set(storage)
    if not st:
        d = (declared or "").lower()
        st = {"integer"} if "int" in d else {"real"} if re.search(r"real|float|double|num|dec", d) else {"text"}
    if st == {"integer"}:
        return types.BigInteger()
    if st <= {"integer", "real"}:
        return postgresql.DOUBLE_PRECISION() if kind == "postgresql" else mysql.DOUBLE()
    if st == {"blob"}:
        return postgresql.BYTEA() if kind == "postgresql" else mysql.LONGBLOB()
    if kind == "mysql" and is_key:
        return types.String(max(1, min(max(max_len, 64), 760)))
    del Float, LargeBinary
    return Text()


def load_spider(sqlite_path: str | os.PathLike, server_url: str, db_id: str, *, replace: bool = False,
                batch: int = 2000) -> LoadReport:
    """Copy one Spider SQLite database into database `db_id` on the server named by `server_url` (any
    database in its path is only where the admin connection goes). Identifiers are lower-cased (so the
    unquoted, mixed-case names of Spider's SQL resolve); each column gets the server type of the storage
    classes its values use (integer, real, text, blob; mixed -> text); primary and foreign keys are added
    after the data when the data satisfies them (else listed in `skipped_constraints`)."""
    import sqlite3

    from sqlalchemy import Column as SaColumn
    from sqlalchemy import MetaData, Table, create_engine, text
    from sqlalchemy.engine import make_url

    from sqlbox.databases import DatabaseInfo
    from sqlbox.schema import introspect

    t0 = time.perf_counter()
    if not re.fullmatch(r"[A-Za-z0-9_]+", db_id):
        raise TargetError(f"database id {db_id!r}: only letters, digits and _ can name a server database")
    _, admin = parse_target(server_url if urlsplit(server_url).path.strip("/") else
                            server_url.rstrip("/") + ("/postgres" if server_url.startswith("postgres") else "/mysql"))
    kind = admin.kind
    schema = introspect(DatabaseInfo(db_id, Path(sqlite_path).resolve(), "sqlite"), samples=0)
    name = db_id.lower()
    admin_eng = create_engine(admin.sqlalchemy_url(), isolation_level="AUTOCOMMIT", hide_parameters=True)
    try:
        with admin_eng.connect() as c:
            if kind == "postgresql":
                exists = c.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name}).scalar()
                if exists and replace:
                    c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                    exists = False
                if exists:
                    raise TargetError(f"database {name} already exists on {admin.url} (use --replace)")
                c.execute(text(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0'))
            else:
                if replace:
                    c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                elif c.execute(text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :d"),
                               {"d": name}).scalar():
                    raise TargetError(f"database {name} already exists on {admin.url} (use --replace)")
                c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    finally:
        admin_eng.dispose()
    url = make_url(str(admin.sqlalchemy_url().set(database=name).render_as_string(hide_password=False)))
    eng = create_engine(url, hide_parameters=True)
    rep = LoadReport(db_id=db_id)
    src = sqlite3.connect(f"file:{Path(sqlite_path).resolve()}?mode=ro", uri=True)
    src.text_factory = lambda b: b.decode("utf-8", errors="replace")
    try:
        md = MetaData()
        sa_tables = {}
        keys = {t.name: {c.lower() for c in t.primary_key} | {c.lower() for fk in t.foreign_keys for c in fk.columns}
                for t in schema.tables}
        for t in schema.tables:
            for other in schema.tables:
                for fk in other.foreign_keys:
                    if fk.ref_table.lower() == t.name.lower():
                        keys[t.name] |= {c.lower() for c in fk.ref_columns}
        # SQLite compares a text column holding numbers with an integer column numerically (affinity); a
        # server would refuse or compare text: columns joined by a foreign key whose values are all integers
        # become integer columns on both sides
        as_int: set[tuple[str, str]] = set()
        for t in schema.tables:
            for fk in t.foreign_keys:
                ref = schema.table(fk.ref_table)
                for a, b in zip(fk.columns, fk.ref_columns, strict=False):
                    ca, cb = t.column(a), ref.column(b) if ref else None
                    if ca is None or cb is None or set(ca.storage) == set(cb.storage):
                        continue
                    if all(_all_int(src, tn, cn) for tn, cn in ((t.name, ca.name), (ref.name, cb.name))):
                        as_int |= {(t.name, ca.name.lower()), (ref.name, cb.name.lower())}
        for t in schema.tables:
            cols = []
            seen = set()
            for c in t.columns:
                if c.name.lower() in seen:
                    continue
                seen.add(c.name.lower())
                max_len = 0
                if kind == "mysql" and c.name.lower() in keys[t.name]:
                    max_len = src.execute(f'SELECT max(length(CAST("{c.name}" AS TEXT))) FROM "{t.name}"').fetchone()[0] or 0
                storage = ("integer",) if (t.name, c.name.lower()) in as_int else c.storage
                if "text" in storage and "blob" not in storage:
                    # text that SQLite would compare as numbers (every value a plain number, e.g. '2014',
                    # '28.5'; not '007'): a numeric column, as a DBA loading this data would declare it
                    storage = _numeric_text(src, t.name, c.name) or storage
                cols.append(SaColumn(c.name.lower(), _server_type(kind, storage, c.type, c.name.lower() in keys[t.name],
                                                                  max_len), nullable=True))
            sa_tables[t.name] = Table(t.name.lower(), md, *cols)
        md.create_all(eng)
        for t in schema.tables:
            st = sa_tables[t.name]
            conv = [_converter(col.type) for col in st.columns]
            names = [c.name for c in st.columns]
            src_cols = ", ".join(f'"{c.name}"' for c in t.columns if c.name.lower() in names)
            if not src_cols:
                continue
            cur = src.execute(f'SELECT {src_cols} FROM "{t.name}"')
            with eng.begin() as c:
                while True:
                    chunk = cur.fetchmany(batch)
                    if not chunk:
                        break
                    c.execute(st.insert(), [{n: f(v) for n, f, v in zip(names, conv, r, strict=True)} for r in chunk])
                    rep.rows += len(chunk)
            rep.tables += 1
        q = _quote_fn(kind)
        for t in schema.tables:
            if t.primary_key:
                try:
                    with eng.begin() as c:
                        c.execute(text(f"ALTER TABLE {q(t.name.lower())} ADD PRIMARY KEY "
                                       f"({', '.join(q(x.lower()) for x in t.primary_key)})"))
                    rep.primary_keys += 1
                except Exception as e:  # noqa: BLE001 - the data violates it
                    rep.skipped_constraints.append(f"{t.name} PRIMARY KEY: {str(e).splitlines()[0][:120]}")
        for t in schema.tables:
            for i, fk in enumerate(t.foreign_keys):
                try:
                    with eng.begin() as c:
                        c.execute(text(
                            f"ALTER TABLE {q(t.name.lower())} ADD CONSTRAINT {q(f'fk_{t.name.lower()}_{i}')} FOREIGN KEY "
                            f"({', '.join(q(x.lower()) for x in fk.columns)}) REFERENCES {q(fk.ref_table.lower())} "
                            f"({', '.join(q(x.lower()) for x in fk.ref_columns)})"))
                    rep.foreign_keys += 1
                except Exception as e:  # noqa: BLE001
                    rep.skipped_constraints.append(f"{t.name} FOREIGN KEY {fk.columns}: {str(e).splitlines()[0][:120]}")
    finally:
        src.close()
        eng.dispose()
    rep.seconds = time.perf_counter() - t0
    return rep


_INT_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_REAL_TEXT = re.compile(r"-?(0|[1-9][0-9]*)?\.[0-9]+|-?(0|[1-9][0-9]*)(\.[0-9]*)?[eE][-+]?[0-9]+")


def _numeric_text(src, table: str, column: str) -> tuple[str, ...] | None:
    """("integer",) / ("real",) when every non-null value of the column is a number or its plain text."""
    kinds = set()
    for (v,) in src.execute(f'SELECT DISTINCT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'):
        if isinstance(v, int):
            kinds.add("integer")
        elif isinstance(v, float):
            kinds.add("real")
        elif isinstance(v, str) and _INT_TEXT.fullmatch(v):
            kinds.add("integer")
        elif isinstance(v, str) and _REAL_TEXT.fullmatch(v):
            kinds.add("real")
        else:
            return None
    if not kinds:
        return None
    return ("integer",) if kinds == {"integer"} else ("real",)


def _all_int(src, table: str, column: str) -> bool:
    """Whether every non-null value of a SQLite column is an integer or the text of one."""
    row = src.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" IS NOT NULL AND NOT (typeof("{column}") = '
                      f"'integer' OR (typeof(\"{column}\") = 'text' AND trim(\"{column}\") GLOB '[0-9]*' AND "
                      f"trim(\"{column}\") NOT GLOB '*[^0-9]*'))").fetchone()
    return row[0] == 0


def _converter(t):
    from sqlalchemy import types

    if isinstance(t, types.BigInteger | types.Integer):
        return _to_int
    if isinstance(t, types.Float | types.Numeric):
        return _to_float
    if isinstance(t, types.LargeBinary) or type(t).__name__ in ("BYTEA", "LONGBLOB"):
        return lambda v: None if v is None else (bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode())
    return _to_text


def _to_int(v):
    return None if v is None else int(v)


def _to_float(v):
    return None if v is None else float(v)


def _to_text(v):
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace").replace("\x00", "")
    if isinstance(v, float):
        return repr(v) if not v.is_integer() else f"{v:.1f}"  # SQLite's text form of a REAL
    return str(v).replace("\x00", "")


def spider_db_ids(spider: Path, split: str | None) -> list[str]:
    """Spider database ids: those of `split` (dev/train) or every folder under database/."""
    import json

    if split == "dev":
        return sorted({e["db_id"] for e in json.loads((spider / "dev.json").read_text())})
    if split == "train":
        return sorted({e["db_id"] for e in json.loads((spider / "train_spider.json").read_text())})
    return sorted(p.name for p in (spider / "database").iterdir() if (p / f"{p.name}.sqlite").is_file())


def iter_urls(entries: Iterable[str]) -> list[str]:
    return [e for e in entries if is_url(e)]


def sqlite_to_server(tree, dialect: str, schema=None) -> str:
    """SQLite SQL for a server, with the SQLite habits sqlglot's transpile keeps: "double-quoted" names that
    are no column, alias or table become string literals (SQLite's fallback); LIKE ignores ASCII case
    (ILIKE on PostgreSQL; MySQL's default collations already do); a derived table without an alias gets
    one (PostgreSQL and MySQL require it); `SELECT DISTINCT ... ORDER BY <expr not selected>`, the tie order of
    grouped queries and (PostgreSQL) bare columns of aggregate queries as in `sqlbox.dialect` (SQLite's
    behaviour)."""
    from sqlglot import exp

    from sqlbox.dialect import add_group_tiebreak, rewrite_bare_columns, rewrite_distinct_order
    from sqlbox.guard import render

    tree = tree.copy()
    if schema is not None:
        columns = schema.column_names()
        tables = {t.lower().rsplit(".", 1)[-1] for t in schema.table_names()}
        aliases = {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
        aliases |= {t.alias.lower() for t in tree.find_all(exp.Table) if t.alias}
        aliases |= {c.alias.lower() for c in tree.find_all(exp.CTE) if c.alias}
        for col in list(tree.find_all(exp.Column)):
            ident = col.this
            if (isinstance(ident, exp.Identifier) and ident.quoted and not col.table
                    and ident.name.lower() not in columns | aliases | tables):
                col.replace(exp.Literal.string(ident.name))
    if dialect == "postgres":
        for like in list(tree.find_all(exp.Like)):
            like.replace(exp.ILike(this=like.this, expression=like.expression, escape=like.args.get("escape")))
    for i, sub in enumerate(list(tree.find_all(exp.Subquery))):
        if isinstance(sub.parent, exp.From | exp.Join) and not sub.alias:
            sub.set("alias", exp.TableAlias(this=exp.to_identifier(f"_t{i}")))
    for sel in reversed(list(tree.find_all(exp.Select))):
        add_group_tiebreak(sel)
        rewrite_distinct_order(sel)
        if dialect == "postgres":  # MySQL/MariaDB accept bare columns (no ONLY_FULL_GROUP_BY by default)
            rewrite_bare_columns(sel)
    if dialect == "postgres":
        tree = tree.transform(_pg_bare_column)
    return render(tree, dialect)


def _pg_bare_column(node):
    """`sqlbox.dialect`'s bare-column aggregates in PostgreSQL: the value from the row with the max/min
    argument (SQLite's rule) through ordered array_agg; any other bare column -> min()."""
    from sqlglot import exp

    if isinstance(node, exp.Anonymous) and str(node.this).upper() in ("ARG_MAX_NULL", "ARG_MIN_NULL"):
        col, arg = node.expressions
        order = "DESC NULLS LAST" if str(node.this).upper() == "ARG_MAX_NULL" else "ASC NULLS LAST"
        return exp.maybe_parse(f"(ARRAY_AGG({col.sql('postgres')} ORDER BY {arg.sql('postgres')} {order}))[1]",
                               dialect="postgres")
    if isinstance(node, exp.AnyValue):
        return exp.Min(this=node.this)
    return node


def prepare_sql(sql: str, dialect: str, target: ServerTarget, *, use_guard: bool = True, schema=None) -> str:
    """The SQL to run on a server for a candidate written in `dialect`, rendered from checked trees only:
    1. the candidate is guarded in `dialect` against the database's own tables (`schema`: a callable returning
       the database's Schema; without one nothing runs, since the relation allowlist could not be checked);
    2. the tree is rewritten for the server (SQLite through `sqlite_to_server`, else sqlglot's transpile of the
       tree) and rendered without comments (`sqlbox.guard.render`);
    3. that text is guarded again in the server's own dialect (the allowlists as the server's dialect reads
       them) and the rendering of this second tree is what runs.
    Raises `sqlbox.guard.Rejected` / `ParseFailure`. `use_guard=False` (tests of the server's own limits only)
    skips the checks and runs the text as translated."""
    from sqlbox.guard import Rejected, guard, parse_statements, render

    sch = schema() if schema is not None else None
    if not use_guard:
        if dialect == target.dialect:
            return sql
        stmts = parse_statements(sql, dialect)
        if len(stmts) != 1:
            raise Rejected(f"expected one statement, got {len(stmts)}")
        return sqlite_to_server(stmts[0], target.dialect, sch) if dialect == "sqlite" else \
            stmts[0].sql(dialect=target.dialect)
    if sch is None:
        raise Rejected("the database's tables are not known (its schema could not be read), so no query may run "
                       "on it")
    relations = sch.table_names()
    tree = guard(sql, dialect, relations)
    if dialect == "sqlite":
        text = sqlite_to_server(tree, target.dialect, sch)
    else:
        text = render(tree, target.dialect)
    return render(guard(text, target.dialect, relations), target.dialect)


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


def server_url_for(base_url: str, database: str) -> str:
    """`base_url` (a server URL, with or without a database and options) pointed at `database`; options
    such as password_env are kept, `id` is dropped."""
    parts = urlsplit(base_url.strip())
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "id"])
    return urlunsplit(parts._replace(path="/" + quote(database), query=query))
