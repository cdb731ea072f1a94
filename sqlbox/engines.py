"""The execution engines behind `sqlbox.executor.Executor`: one connection to one database, sandboxed.

Both engines have the same interface (`Connection`): `run(sql, timeout_s, max_rows)` -> (column names, at
most max_rows + 1 rows), `timed_out()`, `classify(error)` -> `ErrorKind`, `close()`. `open_connection`
picks one by name.
- `duckdb` (`DuckConn`, the default): an in-memory DuckDB. The sqlite scanner is LOADed from the file the
  `duckdb-ext-sqlite` package installs (offline; autoload/autoinstall are off), the SQLite file is ATTACHed
  READ_ONLY and exposed as typed views (`sqlbox.dialect`), then `enable_external_access=false` and
  `lock_configuration=true` are set, so no candidate can read or write files, attach databases, load
  extensions or change settings. DuckDB files are ATTACHed READ_ONLY the same way. Before running, the
  connection checks DuckDB's own parse: exactly one SELECT, and in its `json_serialize_sql` tree only
  allowlisted table functions and no file/environment function (the sqlite scanner's `sqlite_scan` opens
  files through SQLite and ignores `enable_external_access`). A watchdog thread interrupts a query at its
  deadline (`conn.interrupt()`); DuckDB's memory limit applies with no spilling to disk (`temp_directory`
  unset).
- `sqlite` (`SqliteConn`): Python sqlite3 on the file opened `mode=ro`, with an authorizer that allows only
  reads (SELECT, READ, RECURSIVE and non-file functions), one statement (enforced by the module) and a
  progress-handler deadline. It has SQLite's exact semantics (the Spider/BIRD gold SQL dialect). Its
  memory is bounded by `setlimit` (one value at most 16 MB, short SQL, no attached databases, no sorter
  threads, short LIKE patterns) and, in a sandbox worker, by SQLite's process-wide hard heap limit
  (`limit_sqlite_heap`, set by `sqlbox.isolation`); running out of it is TOO_LARGE.
Every engine's rows go through `sqlbox.fetch.fetch_capped`: at most max_rows + 1 rows, fetched one at a time
(no engine hands over a chunk of huge rows at once), and at most `MAX_RESULT_BYTES` of values in all; a bigger
result raises `ResultTooLarge` (ErrorKind.TOO_LARGE).
A connection is used by one thread at a time (the executor keeps them per thread).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from core.model import ErrorKind
from sqlbox.databases import DatabaseInfo
from sqlbox.dialect import duck_type, quote_ident
from sqlbox.fetch import ResultTooLarge, fetch_capped
from sqlbox.functions import table_functions
from sqlbox.guard import Rejected, UnknownRelation, is_forbidden_function
from sqlbox.schema import Schema

ENGINES = ("duckdb", "sqlite")
_SQLITE_MAX_VALUE_BYTES = 16_000_000  # the largest string/blob a sqlite-engine query may build
SQLITE_HEAP_BYTES = 512 * 2**20  # SQLite's hard heap limit in a sandbox worker (process-wide)


class Connection(Protocol):
    """What the executor needs from an engine's connection to one database."""

    engine: str

    def run(self, sql: str, timeout_s: float, max_rows: int) -> tuple[list[str], list[tuple]]:
        """Column names and at most max_rows + 1 rows; raises for a failing query (see `classify`)."""
        ...

    def timed_out(self) -> bool:
        """Whether the last `run` hit its deadline."""
        ...

    def classify(self, e: Exception) -> ErrorKind:
        """The kind of a failure `run` raised."""
        ...

    def close(self) -> None: ...


def open_connection(engine: str, info: DatabaseInfo, schema: Schema | None = None, *, memory_limit: str = "1GB",
                    threads: int = 1) -> Connection:
    """A sandboxed connection of `engine` to `info`'s database. The DuckDB engine exposes a SQLite file's tables
    through `schema` (its introspected schema; required then); the sqlite engine ignores schema, memory_limit and
    threads."""
    if engine == "sqlite":
        return SqliteConn(info, schema.table_names() if schema is not None else None)
    if engine != "duckdb":
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if schema is None:
        if info.kind == "sqlite":
            raise ValueError(f"the duckdb engine needs the schema of sqlite database {info.db_id!r}")
        schema = Schema(info.db_id, kind="duckdb")
    return DuckConn(info, schema, memory_limit=memory_limit, threads=threads)


def limit_sqlite_heap(nbytes: int = SQLITE_HEAP_BYTES) -> None:
    """Cap SQLite's heap for this whole process (`PRAGMA hard_heap_limit`; it only ever lowers the limit):
    an allocation past it fails the query with SQLITE_NOMEM. The sandbox workers set it at start; the
    calling process does not (it would bound every SQLite user in it)."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute(f"PRAGMA hard_heap_limit = {int(nbytes)}")
    finally:
        con.close()


def sqlite_extension_path() -> Path:
    """The sqlite scanner shipped by the duckdb-ext-sqlite package (found through the installed files)."""
    try:
        files = importlib.metadata.files("duckdb-ext-sqlite") or []
        for f in files:
            if f.name.endswith(".duckdb_extension") and "sqlite" in f.name:
                p = Path(f.locate())
                if p.is_file():
                    return p
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("duckdb_ext")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for p in Path(base).rglob("sqlite_scanner.duckdb_extension"):
            return p
    raise RuntimeError("the DuckDB sqlite scanner is not installed (pip install duckdb-ext-sqlite)")


# --------------------------------------------------------------------------- errors

_SQLITE_BINDER = re.compile(r"no such (table|column|function)|ambiguous column|has no column|"
                            r"wrong number of arguments|misuse of aggregate|not an aggregate|"
                            r"aggregate functions are not allowed|ORDER BY term|GROUP BY term|"
                            r"SELECTs to the left and right", re.I)
_SQLITE_PARSE = re.compile(r"syntax error|incomplete input|unrecognized token", re.I)


def _classify_sqlite(e: Exception, timed_out: bool) -> ErrorKind:
    msg = str(e)
    if timed_out or "interrupted" in msg:
        return ErrorKind.TIMEOUT
    if isinstance(e, ResultTooLarge | MemoryError):
        return ErrorKind.TOO_LARGE
    if "not authorized" in msg or "prohibited" in msg:
        return ErrorKind.REJECTED
    if _SQLITE_PARSE.search(msg):
        return ErrorKind.PARSE
    if _SQLITE_BINDER.search(msg):
        return ErrorKind.BINDER
    if "out of memory" in msg or "too big" in msg or "full" in msg:
        return ErrorKind.TOO_LARGE
    return ErrorKind.RUNTIME


def _classify_duckdb(e: Exception, timed_out: bool) -> ErrorKind:
    import duckdb

    if timed_out or isinstance(e, duckdb.InterruptException):
        return ErrorKind.TIMEOUT
    if isinstance(e, duckdb.OutOfMemoryException | ResultTooLarge | MemoryError):
        return ErrorKind.TOO_LARGE
    if isinstance(e, duckdb.PermissionException):
        return ErrorKind.REJECTED
    if isinstance(e, duckdb.ParserException):
        return ErrorKind.PARSE
    if isinstance(e, duckdb.BinderException | duckdb.CatalogException):
        return ErrorKind.BINDER
    if isinstance(e, duckdb.InternalException | duckdb.FatalException | duckdb.ConnectionException):
        return ErrorKind.INTERNAL
    if "memory" in str(e).lower() and "limit" in str(e).lower():
        return ErrorKind.TOO_LARGE
    return ErrorKind.RUNTIME



# --------------------------------------------------------------------------- connections

_SQLITE_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_SQLITE_DENIED_FUNCS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "zipfile",
                        "sqlar_compress", "sqlar_uncompress", "shell", "system"}


def _sqlite_authorizer(relations: frozenset[str] | None):
    """Reads only (SELECT, READ, RECURSIVE, non-file functions); with `relations`, READ only of those tables
    in the `main` database (no sqlite_master/sqlite_schema, no pragma_* table-valued functions)."""

    def authorize(action, arg1, arg2, dbname, source):
        if action not in _SQLITE_ALLOWED_ACTIONS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _SQLITE_DENIED_FUNCS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_READ and relations is not None and dbname is not None:
            # (a CTE's rows come with no database name; every stored table, view or virtual table has one)
            if dbname != "main" or (arg1 or "").lower() not in relations:
                return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    return authorize


class SqliteConn:
    engine = "sqlite"

    def __init__(self, info: DatabaseInfo, relations: list[str] | None = None):
        if info.kind != "sqlite":
            raise ValueError(f"the sqlite engine cannot open {info.kind} database {info.db_id!r}")
        uri = f"file:{info.path.as_posix()}?mode=ro"
        self.con = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        self.con.text_factory = lambda b: b.decode("utf-8", errors="replace")
        self.con.execute("PRAGMA query_only = ON")
        self.con.execute("PRAGMA trusted_schema = OFF")
        # bound single values and statements: one huge string concatenation is a single VM step, which
        # the progress-handler deadline cannot interrupt
        self.con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _SQLITE_MAX_VALUE_BYTES)
        self.con.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 1_000_000)
        self.con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)  # (the authorizer refuses ATTACH as well)
        self.con.setlimit(sqlite3.SQLITE_LIMIT_WORKER_THREADS, 0)  # no sorter threads beside the query's
        self.con.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 10_000)  # LIKE/GLOB: one VM step each
        self.con.set_authorizer(_sqlite_authorizer(
            frozenset(r.lower() for r in relations) if relations is not None else None))
        self.deadline = 0.0

    def run(self, sql: str, timeout_s: float, max_rows: int):
        self.deadline = time.monotonic() + timeout_s
        self.con.set_progress_handler(lambda: 1 if time.monotonic() > self.deadline else 0, 2000)
        try:
            cur = self.con.execute(sql)  # sqlite3 itself refuses more than one statement
            try:
                return fetch_capped(cur, max_rows)
            finally:
                cur.close()
        except MemoryError:  # SQLITE_NOMEM: the worker's heap limit (or the process is out of memory)
            raise ResultTooLarge("out of memory: the query needs more memory than the sandbox allows "
                                 f"(SQLite heap limit {SQLITE_HEAP_BYTES // 2**20} MB in a worker)") from None
        finally:
            self.con.set_progress_handler(None, 0)

    def compile(self, sql: str) -> None:
        """Compile `sql` without running it (EXPLAIN, under the same authorizer); raises SQLite's error."""
        self.deadline = time.monotonic() + 3600  # nothing runs: a failure here is never a timeout
        self.con.execute("EXPLAIN " + sql).close()

    def timed_out(self) -> bool:
        return time.monotonic() > self.deadline

    def classify(self, e: Exception) -> ErrorKind:
        return _classify_sqlite(e, self.timed_out())

    def close(self):
        self.con.close()


class _Watchdog:
    """One daemon thread that fires deadline callbacks (`conn.interrupt()`); cheaper than a Timer thread
    per query."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Any] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def schedule(self, deadline: float, callback) -> int:
        import heapq

        with self._cv:
            self._next += 1
            token = self._next
            self._callbacks[token] = callback
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sqlarbiter-watchdog", daemon=True)
                self._thread.start()
            self._cv.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._cv:
            self._callbacks.pop(token, None)

    def _loop(self) -> None:
        import heapq

        while True:
            with self._cv:
                while self._heap and self._heap[0][1] not in self._callbacks:
                    heapq.heappop(self._heap)  # cancelled
                if not self._heap:
                    self._cv.wait(timeout=60)
                    continue
                deadline, token = self._heap[0]
                now = time.monotonic()
                if now < deadline:
                    self._cv.wait(timeout=deadline - now)
                    continue
                heapq.heappop(self._heap)
                cb = self._callbacks.pop(token, None)
            if cb is not None:
                try:
                    cb()
                except Exception:  # noqa: BLE001  # pragma: no cover - the watchdog thread outlives any callback (an interrupt on a closed connection)
                    pass


_WATCHDOG = _Watchdog()


class DuckConn:
    engine = "duckdb"

    def __init__(self, info: DatabaseInfo, schema: Schema, *, memory_limit: str, threads: int):
        import duckdb

        self._duckdb = duckdb
        self.relations = frozenset(t.lower() for t in schema.table_names())
        self.con = duckdb.connect(":memory:", config={
            "autoload_known_extensions": False, "autoinstall_known_extensions": False,
            "allow_unsigned_extensions": False, "threads": int(threads), "memory_limit": str(memory_limit),
        })
        try:
            self._setup(info, schema)
        except BaseException:
            self.con.close()
            raise
        self._timed_out = False

    def _setup(self, info: DatabaseInfo, schema: Schema) -> None:
        c = self.con
        path = str(info.path).replace("'", "''")
        if info.kind == "sqlite":
            ext = str(sqlite_extension_path()).replace("'", "''")
            c.execute(f"LOAD '{ext}'")
            c.execute(f"ATTACH '{path}' AS src (TYPE sqlite, READ_ONLY)")
            c.execute("SET sqlite_all_varchar = true")
            for t in schema.tables:
                cols = []
                for col in t.columns:
                    dt = duck_type(col.storage, col.type)
                    expr = quote_ident(col.name) if dt == "VARCHAR" else f"TRY_CAST({quote_ident(col.name)} AS {dt})"
                    cols.append(f"{expr} AS {quote_ident(col.name)}")
                if cols:
                    c.execute(f"CREATE VIEW main.{quote_ident(t.name)} AS SELECT {', '.join(cols)} FROM src.{quote_ident(t.name)}")
        else:
            c.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
            c.execute("USE src")
            if not schema.tables:  # no introspected schema: the attached database's own tables
                self.relations = frozenset(r[0].lower() for r in c.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src'").fetchall())
        for stmt in ("SET integer_division = true", "SET scalar_subquery_error_on_multiple_rows = false",
                     "SET old_implicit_casting = true", "SET temp_directory = ''",
                     "SET enable_external_access = false", "SET lock_configuration = true"):
            c.execute(stmt)

    def check_statement(self, sql: str) -> None:
        """The sandbox's own check: DuckDB's parser must see exactly one SELECT."""
        if "\x00" in sql:  # DuckDB's parser ends a string there: the checked text would not be the text that runs
            raise Rejected("sandbox: the statement holds a NUL character")
        stmts = self.con.extract_statements(sql)
        if len(stmts) != 1:
            raise Rejected(f"sandbox: expected one statement, got {len(stmts)}")
        if stmts[0].type != self._duckdb.StatementType.SELECT:
            raise Rejected(f"sandbox: only SELECT statements may run, not {stmts[0].type.name}")
        # DuckDB's own parse tree: table functions must be on the allowlist, and no file/env function may
        # appear anywhere. (Needed: the sqlite scanner's sqlite_scan/sqlite_attach open files through
        # SQLite itself and ignore enable_external_access.)
        # the statement as an ordinary string literal, not a bound parameter: binding a Python value makes the DuckDB
        # module import numpy and pandas (about 0.5 s of a one-shot `check`); in a standard literal only the quote
        # is special, so doubling it keeps the text byte for byte
        literal = "'" + sql.replace("'", "''") + "'"
        tree = json.loads(self.con.execute(f"SELECT json_serialize_sql({literal})").fetchone()[0])
        if tree.get("error"):
            raise Rejected(f"sandbox: {tree.get('error_message') or 'cannot serialize the statement'}")
        ctes: set[str] = set()
        tables: list[tuple[str, str, str]] = []
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for entry in (node.get("cte_map") or {}).get("map", []) if isinstance(node.get("cte_map"), dict) else []:
                    if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                        ctes.add(entry["key"].lower())
                if node.get("type") == "BASE_TABLE":
                    tables.append((str(node.get("catalog_name") or ""), str(node.get("schema_name") or ""),
                                   str(node.get("table_name") or "")))
                name = node.get("function_name")
                if isinstance(name, str):
                    if is_forbidden_function(name):
                        raise Rejected(f"sandbox: function {name}() is not allowed")
                if node.get("type") == "TABLE_FUNCTION":
                    fname = str((node.get("function") or {}).get("function_name", "")).lower()
                    if fname not in table_functions("duckdb"):
                        raise Rejected(f"sandbox: table function {fname}() is not allowed")
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        # relations by allowlist: the database's own tables (and the query's CTEs), unqualified
        for catalog, schema_name, table in tables:
            if catalog or schema_name:
                raise Rejected(f"sandbox: table {'.'.join(p for p in (catalog, schema_name, table) if p)} is not "
                               f"allowed: only the database's own tables may be read")
            if table.lower() not in self.relations and table.lower() not in ctes:
                raise UnknownRelation(f"sandbox: no such table: {table} (only the database's own tables may be read)")

    def run(self, sql: str, timeout_s: float, max_rows: int):
        self._timed_out = False
        self.check_statement(sql)

        def fire():
            self._timed_out = True
            self.con.interrupt()

        token = _WATCHDOG.schedule(time.monotonic() + timeout_s, fire)
        try:
            return fetch_capped(self.con.execute(sql), max_rows)
        finally:
            _WATCHDOG.cancel(token)

    def timed_out(self) -> bool:
        return self._timed_out

    def classify(self, e: Exception) -> ErrorKind:
        return _classify_duckdb(e, self.timed_out())

    def close(self):
        self.con.close()

