"""Process isolation for untrusted SQL: parsing (guard, rewrite) and execution run in warm worker processes
with OS limits, so no candidate can take the calling process (the HTTP server) down.

Each worker is a separate process (not a fork of the caller: no torch, no model, no event loop inherited)
that keeps an in-process executor with its connections open between calls: the pool's `executor`, a picklable
factory called as `executor(registry, **settings)` in the worker (`sqlbox.executor.Executor` passes itself with
isolation off; this module does not import it). Limits on every call:
- address space: `RLIMIT_AS` set once at start (`address_space_mb`); an allocation past it fails inside the
  worker (DuckDB reports out-of-memory, Python raises MemoryError) or kills it;
- CPU time: before each call the soft `RLIMIT_CPU` is set to the CPU the worker has used so far plus the
  call's budget (rounded up, plus 1 s); the kernel's SIGXCPU ends a worker that spins past it (DuckDB
  functions that ignore interrupts, a sqlglot parse that never ends);
- wall clock: the caller waits `timeout_s + grace_s` for the answer, then SIGKILLs the worker.
A killed or dead worker is replaced in the background (a fresh process, warmed before it takes work), and
the call reports TIMEOUT (wall clock or CPU limit) or TOO_LARGE (the worker died some other way, in practice
its memory limit). The caller never parses or runs candidate SQL itself.

Workers are forked from a fork server (`multiprocessing`'s "forkserver" context, preloaded with
`sqlbox.zygote`): a clean interpreter that imported DuckDB and sqlglot once, so a replacement starts in
milliseconds. Protocol: a `multiprocessing` Pipe (pickled tuples). Requests are
(op, args); answers are ("ok", value) or ("exc", class name, message). Databases travel as
`DatabaseInfo` plus the caller's `Schema`, sent once per worker and database (again if the info changes).

Quiet: the fork server and its workers write nothing to the caller's terminal (`sqlbox.zygote` points their
stdout/stderr at /dev/null unless SQLBOX_WORKER_DEBUG is set), a worker whose caller went away exits
silently, and the threads that replace killed workers never print (failures are logged at debug level),
never start once the pool is closing, and are waited for by `close` (so none is half-way through starting a
worker when the caller exits).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PKG_ROOT = str(Path(__file__).resolve().parent.parent)
_START_TIMEOUT_S = 120.0  # a cold interpreter importing duckdb and sqlglot on a loaded machine
_DEBUG = bool(os.environ.get("SQLBOX_WORKER_DEBUG"))
_WARM_DBS = 8  # a replacement worker opens the most recent databases before it takes work
_CONNECT_BUDGET_S = 60.0  # opening a database (DuckDB: load the sqlite scanner, create the typed views)


class WorkerDied(RuntimeError):
    """The worker was killed or died during a call; `kind` is the ErrorKind to report."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


_CTX_LOCK = threading.Lock()
_CTX = None


def _context():
    """The fork server that starts workers: a clean interpreter (not the caller) that has imported DuckDB,
    sqlglot and the executor once (`sqlbox.zygote`); each worker is a fork of it (milliseconds)."""
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            import multiprocessing

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["sqlbox.zygote"])
            _CTX = ctx
        return _CTX


class _Worker:
    def __init__(self, settings: dict[str, Any], executor: Callable[..., Any], start_method: str = "forkserver"):
        # "fork" (the one-shot `check`): a fork of the caller itself - no fork server to start; the caller must
        # not have opened a DuckDB connection yet (its threads do not survive a fork)
        ctx = _context() if start_method == "forkserver" else __import__("multiprocessing").get_context(start_method)
        self.rx, child = ctx.Pipe(duplex=True)
        self.tx = self.rx
        self.proc = ctx.Process(target=_main, args=(child, dict(settings), executor), name="sqlbox-worker",
                                daemon=True)
        self.proc.start()
        child.close()
        self.known: dict[str, Any] = {}  # db_id -> DatabaseInfo sent to this worker
        self.calls = 0

    def wait_ready(self, timeout: float) -> None:
        if not self.rx.poll(timeout):
            raise RuntimeError(f"sandbox worker did not start within {timeout:g} s")
        msg = self.rx.recv()
        if msg != ("ready",):
            raise RuntimeError(f"sandbox worker failed to start: {msg!r}")

    def kill(self) -> None:
        try:
            self.proc.kill()
        except (ProcessLookupError, ValueError, AttributeError):
            pass
        self.proc.join(timeout=10)
        try:
            self.rx.close()
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.tx.send(("exit", None))
            self.proc.join(timeout=2)
        except Exception:  # noqa: BLE001 - fall back to a kill
            pass
        self.kill()


class WorkerPool:
    """Up to `size` warm sandbox workers; `call` runs one op on an idle worker (waiting for one if all are
    busy). Thread-safe. `executor`: what each worker runs, a picklable factory called there as
    `executor(registry, **settings)` (an in-process executor, e.g. `partial(Executor, isolation="none")`)."""

    def __init__(self, settings: dict[str, Any], *, executor: Callable[..., Any], size: int = 2,
                 timeout_s: float = 5.0, grace_s: float = 0.25, address_space_mb: int = 2560,
                 start_method: str = "forkserver"):
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.executor = executor
        self.settings = dict(settings, address_space_mb=int(address_space_mb))
        self.size = int(size)
        self.start_method = start_method  # "forkserver" (the service), "fork" (a one-shot command)
        self.timeout_s = float(timeout_s)
        self.grace_s = float(grace_s)
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._count = 0  # workers alive or starting
        self._closed = False
        self._all: set[_Worker] = set()
        self.kills = 0  # workers killed or found dead (for tests and metrics)
        self._dbs: dict[str, tuple[str, Any, Any]] = {}  # databases seen, most recent last (warmed on replace)
        self._starters: set[threading.Thread] = set()  # replacement threads in flight

    # -- lifecycle
    def _spawn(self) -> _Worker:
        w = _Worker(self.settings, self.executor, self.start_method)
        try:
            w.wait_ready(_START_TIMEOUT_S)
        except BaseException:
            w.kill()
            raise
        with self._lock:
            self._all.add(w)
        return w

    def _replace_in_background(self) -> None:
        def run() -> None:
            try:
                start()
            except BaseException as e:  # never a traceback on the caller's stderr (logged at debug level)
                log.debug("replacing a sandbox worker failed: %s: %s", type(e).__name__, e, exc_info=True)
            finally:
                with self._lock:
                    self._starters.discard(threading.current_thread())

        def start() -> None:
            try:
                w = self._spawn()
            except Exception as e:  # the next call starts one itself
                if not self._closed:
                    log.warning("could not start a replacement sandbox worker: %s: %s", type(e).__name__, e)
                    log.debug("replacement worker start failed", exc_info=True)
                with self._lock:
                    self._count = max(0, self._count - 1)
                return
            if self._closed:
                self._discard(w, close=True)
                return
            with self._lock:
                warm = list(self._dbs.values())[-_WARM_DBS:]
            try:
                for db in warm:  # open the recent databases before taking work
                    self._register(w, db, replace=False)
            except WorkerDied:  # it died warming up: no new replacement (no restart loop); calls start one
                with self._lock:
                    self._count = max(0, self._count - 1)
                return
            except Exception:  # noqa: BLE001 - it opens that database on demand instead
                pass
            if self._closed:
                self._discard(w, close=True)
                return
            self._idle.put(w)

        with self._lock:
            if self._closed:  # closing: no new worker (the slot goes with the pool)
                self._count = max(0, self._count - 1)
                return
            t = threading.Thread(target=run, name="sqlbox-worker-start", daemon=True)
            self._starters.add(t)
        t.start()

    def _acquire(self) -> _Worker:
        if self._closed:
            raise RuntimeError("the sandbox worker pool is closed")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._count < self.size
            if grow:
                self._count += 1
        if grow:
            try:
                return self._spawn()
            except BaseException:
                with self._lock:
                    self._count -= 1
                raise
        return self._idle.get(timeout=_START_TIMEOUT_S + 60)

    def _discard(self, w: _Worker, *, close: bool = False) -> None:
        with self._lock:
            self._all.discard(w)
        (w.close if close else w.kill)()

    def warm(self, n: int | None = None) -> None:
        """Start workers now (at most `size`), so the first calls do not pay the start."""
        ws = []
        for _ in range(min(n or self.size, self.size)):
            ws.append(self._acquire())
        for w in ws:
            self._idle.put(w)

    def start_in_background(self, n: int = 1) -> None:
        """Start up to `n` workers in background threads and return at once: a one-shot command that will need
        the sandbox later starts it now, beside its other start-up work (the fork server is another process), so
        its first call finds a worker idle or nearly ready instead of paying the whole start."""
        for _ in range(n):
            with self._lock:
                if self._closed or self._count >= self.size:
                    return
                self._count += 1
            self._replace_in_background()

    def close(self, wait_s: float = 10.0) -> None:
        """Stop every worker. Replacement starts in flight are waited for (up to `wait_s`; each sees the pool
        closed and stops its new worker), so none is left half-way through a start when the caller exits."""
        with self._lock:
            self._closed = True
            starters = list(self._starters)
        deadline = time.monotonic() + wait_s
        for t in starters:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            ws = list(self._all)
            self._all.clear()
            self._count = 0
        for w in ws:
            w.close()
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break

    @property
    def alive(self) -> int:
        with self._lock:
            return len(self._all)

    # -- calls
    def call(self, op: str, args: tuple, *, db: tuple[str, Any, Any] | None = None,
             budget_s: float | None = None) -> Any:
        """Run `op(*args)` in a worker within `budget_s` (default: timeout_s) + grace. `db` = (db_id, info,
        schema) makes sure the worker knows that database first. Raises the worker's exception again (same
        class name and message, as `RemoteError` unless it is one of the sandbox's own) or `WorkerDied`."""
        budget = self.timeout_s if budget_s is None else float(budget_s)
        w = self._acquire()
        ok = False
        try:
            if db is not None:
                with self._lock:
                    self._dbs.pop(db[0], None)
                    self._dbs[db[0]] = db
                    while len(self._dbs) > 64:
                        self._dbs.pop(next(iter(self._dbs)))
                self._register(w, db, keep_on_error=True)
            self._send(w, ("cpu", budget), (op, args))
            out = self._answer(w, budget)
            ok = True
            return out
        finally:
            if ok:
                w.calls += 1
                self._idle.put(w)

    def _register(self, w: _Worker, db: tuple[str, Any, Any], keep_on_error: bool = False,
                  replace: bool = True) -> None:
        """Make sure `w` knows `db` and has its connection open (outside any call's budget)."""
        db_id, info, schema, env = db
        if w.known.get(db_id) != info:
            self._send(w, ("cpu", _CONNECT_BUDGET_S), ("register", (db_id, info, schema, env)), replace=replace)
            self._answer(w, _CONNECT_BUDGET_S, keep_on_error=keep_on_error, replace=replace)
            w.known[db_id] = info

    def _send(self, w: _Worker, *msgs: tuple, replace: bool = True) -> None:
        try:
            for m in msgs:
                w.tx.send(m)
        except OSError:
            self._lost(w, replace)
            raise WorkerDied("too_large", "the sandbox worker had died; replaced") from None

    def _answer(self, w: _Worker, budget: float, keep_on_error: bool = True, replace: bool = True) -> Any:
        deadline = time.monotonic() + budget + self.grace_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not w.rx.poll(left):
                    self._lost(w, replace)
                    raise WorkerDied("timeout", f"timed out after {budget:g} s (sandbox worker killed)")
                msg = w.rx.recv()
                if msg[0] == "ok":
                    return msg[1]
                if msg[0] == "exc":
                    # a worker that raised stays usable; put it back (the caller's finally does not)
                    if keep_on_error:
                        w.calls += 1
                        self._idle.put(w)
                    raise _rebuild(msg[1], msg[2])
        except (EOFError, OSError, BrokenPipeError):
            w.proc.join(timeout=2)
            code = w.proc.exitcode
            self._lost(w, replace)
            if code == -signal.SIGXCPU:
                raise WorkerDied("timeout", f"CPU time limit reached after {budget:g} s (sandbox worker killed)") from None
            raise WorkerDied("too_large", f"the sandbox worker died (exit {code}): memory limit of "
                                          f"{self.settings['address_space_mb']} MB or a crash; replaced") from None

    def _lost(self, w: _Worker, replace: bool = True) -> None:
        self.kills += 1
        self._discard(w)
        if not replace:
            return  # the caller accounts for the slot
        if self._closed:
            with self._lock:
                self._count = max(0, self._count - 1)
            return
        self._replace_in_background()


class RemoteError(RuntimeError):
    """An unexpected exception inside a worker (its class name is in the message)."""


def _rebuild(cls_name: str, message: str) -> BaseException:
    from sqlbox.databases import UnknownDatabase
    from sqlbox.guard import ParseFailure, Rejected, UnknownRelation

    if cls_name == "UnknownRelation":
        return UnknownRelation(message)
    if cls_name == "ParseFailure":
        return ParseFailure(message)
    if cls_name == "Rejected":
        return Rejected(message)
    if cls_name == "UnknownDatabase":
        return UnknownDatabase(message, [])
    return RemoteError(f"{cls_name}: {message}")


# --------------------------------------------------------------------------- the worker side


def _limit_cpu(extra_s: float) -> None:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    used = ru.ru_utime + ru.ru_stime
    soft = int(math.ceil(used + extra_s)) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _main(conn: Connection, settings: dict[str, Any], executor: Callable[..., Any]) -> None:  # pragma: no cover - runs in the worker
    rx = tx = conn
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C is the caller's; it kills us
    mb = int(settings.pop("address_space_mb"))
    if mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mb * 1024 * 1024, mb * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        from sqlbox.engines import SQLITE_HEAP_BYTES, limit_sqlite_heap

        # SQLite's own allocations (the sqlite engine's values, sorts, temporary b-trees) stop at a bound
        # well inside the address space; past it a query fails with TOO_LARGE instead of the worker dying
        limit_sqlite_heap(min(SQLITE_HEAP_BYTES, mb * 1024 * 1024 // 4) if mb > 0 else SQLITE_HEAP_BYTES)
        from sqlbox.databases import DatabaseRegistry
        from sqlbox.guard import analyze

        registry = DatabaseRegistry()
        schemas: dict[str, Any] = {}
        registry.schema = lambda db_id: schemas[db_id]  # the caller's schema, never re-introspected here
        ex = executor(registry, **settings)
    except BaseException as e:  # noqa: BLE001 - a worker that cannot start reports why to its pool, whatever it was
        try:
            tx.send(("failed", f"{type(e).__name__}: {e}"))
        except OSError:  # the caller went away
            pass
        return
    try:
        tx.send(("ready",))
    except OSError:  # the pool closed while this worker started
        return
    while True:
        try:
            op, args = rx.recv()
        except (EOFError, OSError):  # the caller closed the pipe or exited: leave quietly
            return
        if op == "exit":
            return
        if _DEBUG:
            import faulthandler

            print(f"[worker {os.getpid()}] {op} {str(args)[:80]}", file=sys.stderr, flush=True)
            faulthandler.dump_traceback_later(1.2, exit=False)
        if op == "cpu":
            _limit_cpu(float(args))
            continue
        recycle = False
        try:
            if op == "register":
                db_id, info, schema, env = args
                os.environ.update(env)  # a server's credentials as the caller sees them now (not at fork time)
                registry._dbs[db_id] = info  # the caller validated the file
                schemas[db_id] = schema
                ex._drop(db_id)
                ex._conn(db_id)  # open it now: the first candidate's budget is for the candidate
                out: Any = None
            elif op == "execute":
                db_id, sql, dialect = args
                out = ex.execute(db_id, sql, dialect=dialect)
            elif op == "prepare":
                db_id, sql, dialect = args
                out = ex.prepare(db_id, sql, dialect=dialect)
            elif op == "analyze":
                out = analyze(*args)
            else:
                raise ValueError(f"unknown op {op!r}")
            msg: tuple = ("ok", out)
        except MemoryError:
            msg, recycle = ("exc", "MemoryError", "out of memory in the sandbox worker"), True
        except BaseException as e:  # noqa: BLE001 - report, stay up
            reason = getattr(e, "reason", None) or (e.args[0] if isinstance(e, LookupError) and e.args else str(e))
            msg = ("exc", type(e).__name__, str(reason)[:2000])
        try:
            tx.send(msg)
        except OSError:  # the caller went away
            return
        except Exception:  # noqa: BLE001 - unpicklable result
            try:
                tx.send(("exc", "RuntimeError", "the sandbox worker could not send its answer"))
            except OSError:
                return
        if recycle:
            os._exit(3)
