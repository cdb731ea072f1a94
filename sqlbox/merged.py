"""A large-schema stress database: every table of a folder of SQLite databases in ONE database file,
under prefixed names (`<db_id>__<table>`), and the rewriting of SQL written for one of the source
databases to the merged names (sqlglot).

The merged file is a SQLite database (Spider's gold SQL is SQLite dialect and the project's EX
comparison, `eval.exec_match`, runs SQLite): each source table is created from its own DDL with the
table name and the REFERENCES targets renamed, so declared types (hence SQLite's type affinity),
primary keys, foreign keys and indexes are kept, and its rows are copied in rowid order with their
storage classes unchanged. The registry and the executor (DuckDB engine through its SQLite scanner, or
SQLite) use it like any other database. It is built once into `core.settings.cache_dir()/merged/`,
keyed by a hash of the source files (names, sizes, modification times), and rebuilt when they change;
the file is named `spider_merged.sqlite`, so registering it by path gives the id `spider_merged`.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

SEP = "__"
MERGED_DB_ID = "spider_merged"

_IDENT = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|\'[^\']+\'|[\w$]+)'
_CREATE_TABLE = re.compile(r"^(\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?)(" + _IDENT + ")", re.I)
_REFERENCES = re.compile(r"(\bREFERENCES\s+)(" + _IDENT + ")", re.I)
_CREATE_INDEX = re.compile(r"^(\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?)(" + _IDENT + r")(\s+ON\s+)("
                           + _IDENT + ")", re.I)


def merged_name(db_id: str, table: str) -> str:
    """The merged database's name of `table` of database `db_id`."""
    return f"{db_id}{SEP}{table}"


def split_name(name: str) -> tuple[str | None, str]:
    """(db_id, table) of a merged name; (None, name) when it has no prefix."""
    if SEP in name:
        a, b = name.split(SEP, 1)
        return a, b
    return None, name


def _unquote(ident: str) -> str:
    if ident[:1] in "\"'`[" and len(ident) >= 2:
        inner = ident[1:-1]
        return inner.replace('""', '"') if ident[0] == '"' else inner
    return ident


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def source_databases(database_dir: str | os.PathLike) -> dict[str, Path]:
    """db_id -> file for a Spider-layout folder (`<db_id>/<db_id>.sqlite`), sorted by id."""
    root = Path(database_dir)
    if (root / "database").is_dir():
        root = root / "database"
    out = {d.name: d / f"{d.name}.sqlite" for d in sorted(root.iterdir())
           if d.is_dir() and (d / f"{d.name}.sqlite").is_file()}
    if not out:
        raise ValueError(f"no <db_id>/<db_id>.sqlite databases under {root}")
    return out


def sources_digest(dbs: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for db_id, f in sorted(dbs.items()):
        st = f.stat()
        h.update(f"{db_id}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def default_merged_path(database_dir: str | os.PathLike) -> Path:
    from core.settings import cache_dir

    return cache_dir() / "merged" / sources_digest(source_databases(database_dir)) / f"{MERGED_DB_ID}.sqlite"


def build_merged(database_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 force: bool = False) -> Path:
    """Build (or reuse) the merged database of every database under `database_dir`; returns its path.
    Written to a temporary file and renamed, so a concurrent reader never sees a half-built file."""
    dbs = source_databases(database_dir)
    path = Path(out) if out is not None else default_merged_path(database_dir)
    if path.is_file() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp.resolve().as_uri(), uri=True)
    con.text_factory = bytes  # copy text byte for byte (some Spider files hold invalid UTF-8)
    try:
        for db_id, f in dbs.items():
            if SEP in db_id:
                raise ValueError(f"database id {db_id!r} contains the separator {SEP!r}")
            con.execute("ATTACH DATABASE ? AS src", (f"{f.resolve().as_uri()}?mode=ro",))
            try:
                rows = con.execute("SELECT type, name, tbl_name, sql FROM src.sqlite_master "
                                   "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
                rows = [tuple(x.decode() if isinstance(x, bytes) else x for x in r) for r in rows]
                tables = {name.lower(): name for typ, name, _, _ in rows if typ == "table"}

                def ren(m: re.Match, db_id=db_id, tables=tables) -> str:
                    ref = _unquote(m.group(2))
                    return m.group(1) + _q(merged_name(db_id, tables.get(ref.lower(), ref)))

                for typ, name, _tbl, sql in rows:
                    if typ == "table":
                        ddl, n = _CREATE_TABLE.subn(ren, sql, count=1)
                        if n != 1:
                            raise ValueError(f"{f}: cannot rename table {name!r} in its DDL")
                        ddl = _REFERENCES.sub(ren, ddl)
                        con.execute(ddl)
                        con.execute(f"INSERT INTO main.{_q(merged_name(db_id, name))} "
                                    f"SELECT * FROM src.{_q(name)} ORDER BY rowid")
                    elif typ == "index":
                        m = _CREATE_INDEX.match(sql)
                        if m is None:
                            continue
                        idx = _q(merged_name(db_id, _unquote(m.group(2))))
                        tgt = _q(merged_name(db_id, tables.get(_unquote(m.group(4)).lower(), _unquote(m.group(4)))))
                        con.execute(m.group(1) + idx + m.group(3) + tgt + sql[m.end():])
                con.commit()
            finally:
                con.execute("DETACH DATABASE src")
        con.commit()
    finally:
        con.close()
    os.replace(tmp, path)
    return path


def table_map(database_dir: str | os.PathLike) -> dict[str, list[str]]:
    """db_id -> its table names, read from the source files."""
    out: dict[str, list[str]] = {}
    for db_id, f in source_databases(database_dir).items():
        con = sqlite3.connect(f"{f.resolve().as_uri()}?mode=ro", uri=True)
        try:
            out[db_id] = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        finally:
            con.close()
    return out


class RewriteError(ValueError):
    """SQL that sqlglot cannot parse (or that is not one statement)."""


def rewrite_sql(sql: str, db_id: str, tables: Iterable[str], *, dialect: str = "sqlite") -> str:
    """Rewrite SQL written for database `db_id` (whose tables are `tables`) to the merged names.
    A table referenced without an alias gets its original name as alias, so column references
    qualified with the table name (``singer.name``) keep resolving. CTE names are left alone."""
    import sqlglot
    from sqlglot import exp

    by_low = {t.lower(): t for t in tables}
    try:
        trees = sqlglot.parse(sql, read=dialect)
    except sqlglot.errors.ParseError as e:
        raise RewriteError(f"cannot parse: {e}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise RewriteError(f"expected one statement, got {len(trees)}")
    tree = trees[0]
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    for t in list(tree.find_all(exp.Table)):
        name = t.name
        if not name or t.args.get("db") or name.lower() in ctes or name.lower() not in by_low:
            continue
        orig = by_low[name.lower()]
        if not t.alias:
            t.set("alias", exp.TableAlias(this=exp.to_identifier(name, quoted=not re.match(r"^\w+$", name))))
        t.set("this", exp.to_identifier(merged_name(db_id, orig), quoted=True))
    return tree.sql(dialect=dialect)
