"""The database registry: which databases candidates may run on, by id.

A database is a SQLite file (`.sqlite`, `.db`, `.sqlite3`), a DuckDB file (`.duckdb`), or a database on
a PostgreSQL or MySQL/MariaDB server given by URL (`register_url`, see `sqlbox.servers.targets`), registered
under an id. `register_dir` understands the Spider/BIRD layouts (`database/<db_id>/<db_id>.sqlite`,
a folder of `<db_id>/<db_id>.sqlite`) and flat folders of database files. Schemas are introspected
(`introspect`) on first use and cached (thread-safe).

A server database's role is checked (`sqlbox.privileges.role_problems`) once, before its schema is read or a
query runs (`DatabaseRegistry.verify`): a role that can do more than read is refused (`PrivilegeError`) unless
its id is in `privileged` (the configuration's `privileged_databases`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlbox.schema import Schema, introspect_duckdb, introspect_sqlite
from sqlbox.servers.targets import ServerTarget, is_url, parse_target

SQLITE_SUFFIXES = (".sqlite", ".db", ".sqlite3")
DUCKDB_SUFFIXES = (".duckdb",)


class UnknownDatabase(LookupError):
    """Asked for a database id that is not registered; the message lists the known ids."""

    def __init__(self, db_id: str, known: list[str]):
        self.db_id = db_id
        self.known = known
        shown = ", ".join(known[:30]) + (f", ... ({len(known)} in all)" if len(known) > 30 else "")
        super().__init__(f"unknown database {db_id!r}; known: {shown or '(none registered)'}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class DatabaseInfo:
    db_id: str
    path: Path | None  # None for a server database
    kind: Literal["sqlite", "duckdb", "postgresql", "mysql"]
    target: ServerTarget | None = None  # server databases: the password-free URL and options

    @property
    def dialect(self) -> str:
        """The sqlglot dialect native to this database (what prompts name and the guard parses)."""
        return self.target.dialect if self.target is not None else self.kind

    @property
    def location(self) -> str:
        """Where it lives, for listings: the file path, or the URL without any password."""
        return self.target.url if self.target is not None else str(self.path)


def introspect(info: DatabaseInfo, samples: int = 3) -> Schema:
    """Read the schema of a registered database (read-only). `samples`: distinct sample values per
    column and sample rows per table (0 disables both)."""
    if info.kind == "sqlite":
        return introspect_sqlite(info.db_id, info.path, samples)
    if info.kind == "duckdb":
        return introspect_duckdb(info.db_id, info.path, samples)
    if info.target is not None:
        # imported here: the server stack (drivers' error classes, pools) loads only with a server database
        from sqlbox.servers.introspect import introspect_server

        return introspect_server(info.db_id, info.target, samples)
    raise ValueError(f"cannot introspect a database of kind {info.kind!r}")


def _kind_of(path: Path) -> Literal["sqlite", "duckdb"]:
    suf = path.suffix.lower()
    if suf in SQLITE_SUFFIXES:
        return "sqlite"
    if suf in DUCKDB_SUFFIXES:
        return "duckdb"
    raise ValueError(f"{path}: not a database file (expected one of "
                     f"{', '.join(SQLITE_SUFFIXES + DUCKDB_SUFFIXES)})")


class DatabaseRegistry:
    """db_id -> database file, with cached schemas. Thread-safe. `privileged`: ids of server databases that may
    use a role that can do more than read (opted in by name; `verify` then returns its problems)."""

    def __init__(self, privileged: Iterable[str] = ()) -> None:
        self._dbs: dict[str, DatabaseInfo] = {}
        self._schemas: dict[tuple[str, int], Schema] = {}
        self._lock = threading.RLock()
        self._schema_locks: dict[str, threading.Lock] = {}
        self.privileged: set[str] = set(privileged)
        self._roles: dict[DatabaseInfo, list[str]] = {}  # verified server databases -> problems (opted in only)
        self._role_locks: dict[str, threading.Lock] = {}

    def register(self, db_id: str, path: str | os.PathLike) -> DatabaseInfo:
        """Register one database file under `db_id` (re-registering an id replaces it)."""
        if not db_id or not isinstance(db_id, str):
            raise ValueError("a database id must be a non-empty string")
        p = Path(path).expanduser().resolve()
        kind = _kind_of(p)
        if not p.is_file():
            raise FileNotFoundError(f"database file not found: {p}")
        return self._put(DatabaseInfo(db_id, p, kind))

    def register_url(self, url: str, db_id: str | None = None) -> DatabaseInfo:
        """Register a server database by URL (`postgresql://user@host:port/db`, `mysql://...`; options in
        `sqlbox.servers.targets`). The id is `db_id`, else the URL's `id=` option, else the database name. Nothing
        connects until the schema or a query is needed."""
        ident, target = parse_target(url, db_id=db_id)
        return self._put(DatabaseInfo(ident, None, target.kind, target))  # type: ignore[arg-type]

    def _put(self, info: DatabaseInfo) -> DatabaseInfo:
        """`info` under its id; replacing a different entry drops that id's cached schemas."""
        with self._lock:
            old = self._dbs.get(info.db_id)
            self._dbs[info.db_id] = info
            if old is not None and old != info:
                for k in [k for k in self._schemas if k[0] == info.db_id]:
                    del self._schemas[k]
        return info

    def register_any(self, entry: str) -> list[str]:
        """Register a config/CLI entry: a server URL, a database file, or a folder of databases.
        Returns the ids registered."""
        if is_url(entry):
            return [self.register_url(entry).db_id]
        p = Path(entry).expanduser()
        if p.is_dir():
            return self.register_dir(p)
        if p.is_file():
            return [self.register(p.stem, p).db_id]
        raise FileNotFoundError(f"databases: {entry!r} is neither a database URL, a database file nor a directory")

    def server_ids(self) -> list[str]:
        with self._lock:
            return sorted(k for k, v in self._dbs.items() if v.target is not None)

    def register_dir(self, path: str | os.PathLike) -> list[str]:
        """Register every database under a folder. Accepts a Spider/BIRD root holding `database/` (or
        `dev_databases/`), a folder of `<db_id>/<db_id>.sqlite`, or a flat folder of database files.
        Returns the ids registered, sorted."""
        root = Path(path).expanduser()
        if not root.is_dir():
            raise NotADirectoryError(f"not a folder: {root}")
        for sub in ("database", "dev_databases"):
            if (root / sub).is_dir():
                root = root / sub
                break
        found: dict[str, Path] = {}
        for child in sorted(root.iterdir()):
            if child.is_dir():
                for suf in SQLITE_SUFFIXES + DUCKDB_SUFFIXES:
                    f = child / f"{child.name}{suf}"
                    if f.is_file():
                        found[child.name] = f
                        break
            elif child.is_file() and child.suffix.lower() in SQLITE_SUFFIXES + DUCKDB_SUFFIXES:
                found.setdefault(child.stem, child)
        if not found:
            raise ValueError(f"no databases found under {root} (expected <db_id>/<db_id>.sqlite or *.sqlite files)")
        for db_id, f in found.items():
            self.register(db_id, f)
        return sorted(found)

    def get(self, db_id: str) -> DatabaseInfo:
        with self._lock:
            info = self._dbs.get(db_id)
        if info is None:
            raise UnknownDatabase(db_id, self.ids())
        return info

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._dbs)

    def __contains__(self, db_id: object) -> bool:
        with self._lock:
            return db_id in self._dbs

    def __len__(self) -> int:
        with self._lock:
            return len(self._dbs)

    def verify(self, db_id: str) -> list[str]:
        """A server database's role, checked once (then cached) before it is used: [] when it can only read (and
        for files); the problems when it can do more and `db_id` is opted in (`privileged`). Raises
        `sqlbox.privileges.PrivilegeError` (saying what to change) for a role that can do more and is not opted
        in (not cached: a fixed role passes on the next call), `RoleCheckError` when the server does not answer,
        UnknownDatabase."""
        info = self.get(db_id)
        if info.target is None:
            return []
        with self._lock:
            done = self._roles.get(info)
            if done is not None:
                return list(done)
            lock = self._role_locks.setdefault(db_id, threading.Lock())
        with lock:
            with self._lock:
                done = self._roles.get(info)
            if done is not None:
                return list(done)
            from sqlbox.privileges import PrivilegeError, role_problems

            problems = role_problems(info.target)
            if problems and db_id not in self.privileged:
                raise PrivilegeError(db_id, info.target.url, problems)
            with self._lock:
                self._roles[info] = list(problems)
            return list(problems)

    def role_warnings(self, db_id: str) -> list[str]:
        """The warning every plan on `db_id` carries when it is opted in with a role that can do more than read."""
        problems = self.verify(db_id)
        if not problems:
            return []
        return [f"database {db_id!r} is used with a role that can do more than read (opted in by "
                f"privileged_databases): " + "; ".join(problems)]

    def schema(self, db_id: str) -> Schema:
        """The database's schema (introspected once, then cached; re-read if the file changed). A server
        database's role is verified first (`verify`)."""
        info = self.get(db_id)
        if info.target is not None:
            self.verify(db_id)
        key = (db_id, info.path.stat().st_mtime_ns if info.path is not None else 0)
        with self._lock:
            cached = self._schemas.get(key)
            if cached is not None:
                return cached
            lock = self._schema_locks.setdefault(db_id, threading.Lock())
        with lock:  # one introspection per database at a time; others wait for its result
            with self._lock:
                cached = self._schemas.get(key)
            if cached is not None:
                return cached
            schema = introspect(info)
            with self._lock:
                for k in [k for k in self._schemas if k[0] == db_id]:
                    del self._schemas[k]
                self._schemas[key] = schema
            return schema


def register_path(registry: DatabaseRegistry, entry: str | os.PathLike) -> list[str]:
    """Register a server URL, a database file (under its file name) or every database under a folder
    (`register_dir`). Returns the ids registered."""
    return registry.register_any(str(entry))


def registry_for(entries: list[str | os.PathLike] | tuple[str | os.PathLike, ...] = (),
                 privileged: Iterable[str] = ()) -> DatabaseRegistry:
    """The demo database as `demo` (built if needed), then each entry (a server URL, file or folder, see
    `register_path`) in order; a later entry replaces an id already registered. `privileged`: server database
    ids opted in to a role that can do more than read."""
    from sqlbox.demo import DEMO_DB_ID, build_demo

    reg = DatabaseRegistry(privileged)
    reg.register(DEMO_DB_ID, build_demo())
    for entry in entries:
        register_path(reg, entry)
    return reg
