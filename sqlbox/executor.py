"""The sandboxed executor: runs one candidate SQL on a registered database and reports an
`ExecutionResult` (columns, a bounded row preview, row count, result fingerprints, or a classified error).
It never raises for bad candidate SQL.

Layers, outermost first: the SQL guard (`sqlbox.guard.guard`); for the DuckDB engine, the rewrite that gives
SQLite semantics (`sqlbox.dialect`); the engine's connection (`sqlbox.engines`: `duckdb`, the default, or
`sqlite`, chosen by `engine=`), with its own parse check, sandbox settings, a per-query timeout that
interrupts the engine, a row cap and (DuckDB) a memory limit. Connections are per thread (never shared
concurrently). Results are canonicalized and fingerprinted by `sqlbox.values`; on DuckDB their columns are
renamed as SQLite would name them (`sqlbox.dialect.sqlite_result_names`).

What runs is what was checked: every engine gets SQL rendered from the guard's checked tree, comments
dropped (`sqlbox.guard.render`), never the candidate's text.

Server databases (PostgreSQL, MySQL/MariaDB, registered by URL) run on the server itself, whatever
`engine` says: the SQL is guarded in its dialect against the database's own tables, rewritten for the server,
guarded again in the server's dialect (`sqlbox.servers.translate.prepare_sql`), and run by
`sqlbox.servers.execute.ServerConn`
in a read-only, bounded, rolled-back transaction. Before a server database's first query, this (the parent)
process checks its role (`DatabaseRegistry.verify`): a role that can do more than read raises
`sqlbox.privileges.PrivilegeError` (a configuration error, like UnknownDatabase) unless opted in.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

from core.model import ErrorKind, ExecutionResult
from sqlbox.databases import DatabaseRegistry, UnknownDatabase
from sqlbox.dialect import sqlite_result_names, sqlite_to_duckdb
from sqlbox.engines import ENGINES, open_connection
from sqlbox.guard import ParseFailure, Rejected, UnknownRelation, guard, parse_one, render
from sqlbox.values import fingerprints, json_preview

ISOLATIONS = ("process", "none")


class Executor:
    """Run candidate SQL on registered databases, sandboxed. Thread-safe: each thread gets its own
    connection per database (at most `max_connections` per thread, least recently used closed first)."""

    def __init__(self, registry: DatabaseRegistry, *, engine: Literal["duckdb", "sqlite"] = "duckdb",
                 timeout_s: float = 5.0, max_rows: int = 10_000, preview_rows: int = 20,
                 memory_limit: str = "1GB", threads: int = 1, use_guard: bool = True,
                 max_connections: int = 16, isolation: Literal["process", "none"] = "process",
                 workers: int = 2, address_space_mb: int = 2560, grace_s: float = 0.25, verify_roles: bool = True,
                 start_method: str = "forkserver"):
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
        if isolation not in ISOLATIONS:
            raise ValueError(f"unknown isolation {isolation!r}; choose one of: {', '.join(ISOLATIONS)}")
        if timeout_s <= 0 or max_rows < 1 or preview_rows < 0:
            raise ValueError("timeout_s must be > 0, max_rows >= 1, preview_rows >= 0")
        self.registry = registry
        self.engine = engine
        self.timeout_s = float(timeout_s)
        self.max_rows = int(max_rows)
        self.preview_rows = int(preview_rows)
        self.memory_limit = memory_limit
        self.threads = threads
        self.use_guard = use_guard
        self.max_connections = max_connections
        self.verify_roles = verify_roles  # False only in the sandbox workers: their parent verified the role
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self.isolation = isolation
        self.pool = None
        if isolation == "process":
            from sqlbox.isolation import WorkerPool

            self.pool = WorkerPool(
                {"engine": engine, "timeout_s": self.timeout_s, "max_rows": self.max_rows,
                 "preview_rows": self.preview_rows, "memory_limit": memory_limit, "threads": threads,
                 "use_guard": use_guard, "max_connections": max_connections, "verify_roles": False},
                executor=partial(Executor, isolation="none"), size=workers, timeout_s=self.timeout_s,
                grace_s=grace_s, address_space_mb=address_space_mb,
                start_method=start_method)  # "fork": a one-shot command's worker, forked from the caller itself

    # -- connections
    def _conn(self, db_id: str):
        conns: OrderedDict[str, Any] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = OrderedDict()
        info = self.registry.get(db_id)
        c = conns.get(db_id)
        if c is not None and getattr(c, "_info", None) == info:
            conns.move_to_end(db_id)
            return c
        if c is not None:
            self._drop(db_id)
        if info.target is not None:
            from sqlbox.servers.execute import ServerConn

            c = ServerConn(db_id, info.target, plan_check=self.use_guard)  # off: testing the server's own layers
        else:
            schema = self.registry.schema(db_id) if info.kind == "sqlite" else None
            c = open_connection(self.engine, info, schema, memory_limit=self.memory_limit, threads=self.threads)
        c._info = info
        conns[db_id] = c
        with self._lock:
            self._all.append(c)
        while len(conns) > self.max_connections:
            old_id = next(iter(conns))
            self._drop(old_id)
        return c

    def _drop(self, db_id: str) -> None:
        conns = getattr(self._local, "conns", None)
        c = conns.pop(db_id, None) if conns else None
        if c is not None:
            with self._lock:
                if c in self._all:
                    self._all.remove(c)
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing is best effort, whatever the engine's connection raises
                pass

    def close(self) -> None:
        """Close every connection this executor opened (in all threads) and stop its sandbox workers. A later
        `execute` reopens lazily (and starts workers again)."""
        if self.pool is not None:
            self.pool.close()
            from sqlbox.isolation import WorkerPool

            old = self.pool
            self.pool = WorkerPool(old.settings, executor=old.executor, size=old.size, timeout_s=old.timeout_s,
                                   grace_s=old.grace_s, address_space_mb=old.settings["address_space_mb"],
                                   start_method=old.start_method)
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing is best effort, whatever the engine's connection raises
                pass
        self._local = threading.local()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- translation
    def _verify(self, db_id: str) -> None:
        """A server database's role, checked once before it is used (`DatabaseRegistry.verify`): raises
        PrivilegeError (refused) or RoleCheckError (the server did not answer)."""
        if self.verify_roles and self.registry.get(db_id).target is not None:
            self.registry.verify(db_id)

    def _db(self, db_id: str) -> tuple[str, Any, Any, dict[str, str]]:
        info = self.registry.get(db_id)  # UnknownDatabase propagates
        if info.target is not None:  # a server: its schema when it can be read (the server reports the rest)
            self._verify(db_id)  # PrivilegeError / RoleCheckError propagate: nothing runs unverified
            try:
                schema = self.registry.schema(db_id)
            except Exception:  # noqa: BLE001 - an unreachable server fails in the worker, with its (redacted) error
                schema = None
            return db_id, info, schema, _credentials_env(info.target)
        return db_id, info, (self.registry.schema(db_id) if info.kind == "sqlite" else None), {}

    def _relations(self, db_id: str) -> list[str] | None:
        info = self.registry.get(db_id)
        if info.kind != "sqlite":
            return None  # a DuckDB file: its own tables are checked by the engine
        return self.registry.schema(db_id).table_names()

    def analyze(self, sql: str, dialect: str = "sqlite") -> dict:
        """`sqlbox.guard.analyze` (guard verdict, canonical SQL, dedup key), in a sandbox worker when isolated:
        a parse that runs past the timeout or the memory limit is reported as a parse failure."""
        from sqlbox.guard import analyze

        if self.pool is None:
            return analyze(sql, dialect)
        from sqlbox.isolation import WorkerDied

        try:
            return self.pool.call("analyze", (sql, dialect))
        except WorkerDied as e:
            return {"rejected": None, "parse_failed": True, "normalized": None, "dedup_key": None,
                    "error": e.message}

    def prepare(self, db_id: str, sql: str, *, dialect: str = "sqlite") -> str:
        """The SQL this executor's engine would run for `sql` (after the guard and dialect handling).
        Raises Rejected/ParseFailure/UnknownDatabase (and, isolated, `sqlbox.isolation.WorkerDied` for a parse
        past the limits)."""
        if self.pool is not None:
            return self.pool.call("prepare", (db_id, sql, dialect), db=self._db(db_id))
        target = self.registry.get(db_id).target
        if target is not None:
            from sqlbox.servers.translate import prepare_sql

            self._verify(db_id)

            return prepare_sql(sql, dialect, target, use_guard=self.use_guard,
                               schema=lambda: self.registry.schema(db_id))
        if not self.use_guard:  # tests of the sandbox's own layers: the text as translated, unchecked
            return self._translate(db_id, sql, dialect, parse_one(sql, dialect) if dialect != self.engine else None,
                                   raw=sql)
        return self._translate(db_id, sql, dialect, guard(sql, dialect, self._relations(db_id)))

    def _translate(self, db_id: str, sql: str, dialect: str, tree, raw: str | None = None) -> str:
        """The engine's SQL for a parsed candidate: rendered from the tree (comments dropped), through the
        SQLite->DuckDB rewrite when the candidate is SQLite and the engine DuckDB. `raw` (unchecked text) runs
        as is when it is already in the engine's dialect."""
        if tree is None:
            return raw if raw is not None else sql
        if self.engine == "duckdb":
            if dialect == "sqlite":
                schema = self.registry.schema(db_id) if self.registry.get(db_id).kind == "sqlite" else None
                return sqlite_to_duckdb(tree, schema)
            return render(tree, "duckdb")
        return render(tree, "sqlite")

    # -- execution
    def execute(self, db_id: str, sql: str, *, dialect: str = "sqlite") -> ExecutionResult:
        """Run one candidate. Never raises for bad SQL: failures come back with `error_kind` set.
        Raises UnknownDatabase for an unregistered db_id and `sqlbox.privileges.PrivilegeError` for a server
        database whose role can do more than read (caller/configuration errors, not the candidate's)."""
        t0 = time.perf_counter()

        info = self.registry.get(db_id)  # UnknownDatabase propagates
        engine = info.kind if info.target is not None else self.engine

        def fail(kind: ErrorKind, msg: str, executed: str | None = None) -> ExecutionResult:
            if info.target is not None:
                from sqlbox.servers.targets import redact

                msg = redact(msg, info.target)
            return ExecutionResult(ok=False, error_kind=kind, error=msg, engine=engine, executed_sql=executed,
                                   elapsed_ms=(time.perf_counter() - t0) * 1000)

        if info.target is not None and self.verify_roles:
            from sqlbox.privileges import RoleCheckError

            try:
                self._verify(db_id)  # PrivilegeError propagates
            except RoleCheckError as e:
                return fail(ErrorKind.INTERNAL, str(e))
        if self.pool is not None:
            from sqlbox.isolation import RemoteError, WorkerDied

            db = self._db(db_id)  # UnknownDatabase propagates
            try:
                res = self.pool.call("execute", (db_id, sql, dialect), db=db)
            except WorkerDied as e:
                return fail(ErrorKind.TIMEOUT if e.kind == "timeout" else ErrorKind.TOO_LARGE, e.message)
            except RemoteError as e:
                return fail(ErrorKind.INTERNAL, str(e)[:500])
            res.elapsed_ms = (time.perf_counter() - t0) * 1000
            return res
        self.registry.get(db_id)  # UnknownDatabase propagates
        try:
            executed = self.prepare(db_id, sql, dialect=dialect)
        except ParseFailure as e:
            return fail(ErrorKind.PARSE, e.reason)
        except UnknownRelation as e:
            return fail(ErrorKind.BINDER, e.reason)
        except Rejected as e:
            return fail(ErrorKind.REJECTED, e.reason)
        except UnknownDatabase:
            raise
        except Exception as e:  # noqa: BLE001 - a translation bug must not take the pipeline down
            return fail(ErrorKind.INTERNAL, f"translation failed: {_first_line(e)}")
        try:
            conn = self._conn(db_id)
        except Exception as e:  # noqa: BLE001 - whatever the engine raises on open is reported, never raised
            return fail(ErrorKind.INTERNAL, f"cannot open database {db_id!r}: {_first_line(e)}", executed)
        try:
            if executed != sql and dialect == "sqlite" and hasattr(conn, "compile"):
                # SQLite itself must accept the candidate's own text: sqlglot repairs some broken SQL (clause
                # order, CONCAT) that SQLite refuses, and a broken candidate fails as it would on SQLite
                conn.compile(sql)
            cols, rows = conn.run(executed, self.timeout_s, self.max_rows)
        except UnknownRelation as e:
            return fail(ErrorKind.BINDER, e.reason, executed)
        except Rejected as e:
            return fail(ErrorKind.REJECTED, e.reason, executed)
        except Exception as e:  # noqa: BLE001 - every engine error is a result: classified by the engine, never raised
            kind = conn.classify(e)
            if kind in (ErrorKind.INTERNAL, ErrorKind.TIMEOUT):
                self._drop(db_id)  # start clean after an interrupt or a fault
            msg = f"timed out after {self.timeout_s:g} s" if kind == ErrorKind.TIMEOUT else _first_line(e)
            return fail(kind, msg, executed)
        if conn.engine in ("duckdb", "sqlite") and dialect == "sqlite" and executed != sql:
            # the engine ran the rendering of the checked tree: name the columns as SQLite would for the text
            cols = sqlite_result_names(sql, cols, lambda name, db_id=db_id: self._declared_name(db_id, name))
        truncated = len(rows) > self.max_rows
        rows = rows[: self.max_rows]
        fp, ofp = fingerprints(rows)
        res = ExecutionResult(
            ok=True, columns=cols, rows=[[json_preview(v) for v in r] for r in rows[: self.preview_rows]],
            row_count=len(rows), truncated=truncated, elapsed_ms=(time.perf_counter() - t0) * 1000,
            fingerprint=fp, ordered_fingerprint=ofp, engine=engine, executed_sql=executed)
        return res

    def _declared_name(self, db_id: str, name: str) -> str | None:
        """A column's name as declared in `db_id`'s schema (case-insensitive; the first table that has it)."""
        low = name.lower()
        for t in self.registry.schema(db_id).tables:
            for c in t.columns:
                if c.name.lower() == low:
                    return c.name
        return None

    def execute_many(self, db_id: str, sqls: Sequence[str], *, dialect: str = "sqlite") -> list[ExecutionResult]:
        """Run several candidates on one database, in order, on this thread's connection."""
        return [self.execute(db_id, s, dialect=dialect) for s in sqls]



def _credentials_env(target: Any) -> dict[str, str]:
    """The environment variables a server target reads its password from, as this process sees them now: the
    sandbox workers fork from a server started earlier, so they get these with the database."""
    import os

    names = [n for n in (target.password_env, "PGPASSWORD", "MYSQL_PWD") if n]
    return {n: os.environ[n] for n in names if n in os.environ}


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0] if s else ''}"[:500]



