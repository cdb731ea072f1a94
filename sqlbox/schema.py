"""Database schemas: `Schema` (tables, columns, declared types, primary keys, foreign keys, a few sample values
per column), read from SQLite and DuckDB files (`introspect_sqlite`, `introspect_duckdb`; any registered
database: `sqlbox.databases.introspect`), the prompt serialization generators
read (`schema_to_prompt`, CREATE TABLE style within a token budget), and the structural features the
router reads (`schema_features`).

For SQLite files, every column also records the storage classes its non-null values actually use
(`Column.storage`, e.g. ``("integer",)`` or ``("integer", "text")``): SQLite's type affinity lets a
column declared INTEGER hold text, and the executor maps each column to a DuckDB type from what the
column really holds.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

STORAGE_CLASSES = ("integer", "real", "text", "blob")
_SIMPLE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Column:
    name: str
    type: str = ""  # declared type, as written in the DDL ("" when none)
    primary_key: bool = False
    not_null: bool = False
    samples: tuple[Any, ...] = ()  # a few distinct non-null values
    storage: tuple[str, ...] = ()  # storage classes present among non-null values (SQLite only)
    comment: str = ""  # the column's comment (servers)


@dataclass(frozen=True)
class ForeignKey:
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    sample_rows: list[tuple[Any, ...]] = field(default_factory=list)
    row_count: int | None = None
    comment: str = ""  # the table's comment (servers)

    def column(self, name: str) -> Column | None:
        low = name.lower()
        return next((c for c in self.columns if c.name.lower() == low), None)


@dataclass
class Schema:
    db_id: str
    tables: list[Table] = field(default_factory=list)
    kind: str = "sqlite"

    def table(self, name: str) -> Table | None:
        """Case-insensitive lookup (SQL identifiers are case-insensitive in SQLite and DuckDB)."""
        low = name.lower()
        return next((t for t in self.tables if t.name.lower() == low), None)

    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]

    def column_names(self) -> set[str]:
        """Every column name, lower-cased."""
        return {c.name.lower() for t in self.tables for c in t.columns}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the API): tuples become lists, sample values are JSON scalars."""
        d = asdict(self)
        for t in d["tables"]:
            t["sample_rows"] = [[_json_value(v) for v in r] for r in t["sample_rows"]]
            for c in t["columns"]:
                c["samples"] = [_json_value(v) for v in c["samples"]]
                c["storage"] = list(c["storage"])
            for fk in t["foreign_keys"]:
                fk["columns"] = list(fk["columns"])
                fk["ref_columns"] = list(fk["ref_columns"])
        return d


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return f"<blob {len(bytes(v))} bytes>"
    return str(v)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- introspection


# a registered database of any kind: `sqlbox.databases.introspect`; servers: `sqlbox.servers.introspect`


def introspect_sqlite(db_id: str, path, samples: int) -> Schema:
    """A SQLite file's schema (opened read-only), with `samples` sample values per column and rows per table."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.text_factory = lambda b: b.decode("utf-8", errors="replace")
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        tables: list[Table] = []
        pks: dict[str, list[str]] = {}
        for name in names:
            info = con.execute(f"PRAGMA table_info({_q(name)})").fetchall()
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            pks[name.lower()] = pk
            cols = [(r[1], r[2] or "", bool(r[5]), bool(r[3])) for r in info]
            storage: dict[str, tuple[str, ...]] = {}
            if cols:
                probes = ", ".join(
                    f"max(typeof({_q(c[0])}) = '{sc}')" for c in cols for sc in STORAGE_CLASSES)
                row = con.execute(f"SELECT count(*), {probes} FROM {_q(name)}").fetchone()
                row_count = row[0]
                flags = row[1:]
                for i, c in enumerate(cols):
                    f = flags[i * 4:(i + 1) * 4]
                    storage[c[0]] = tuple(sc for sc, x in zip(STORAGE_CLASSES, f, strict=True) if x)
            else:
                row_count = con.execute(f"SELECT count(*) FROM {_q(name)}").fetchone()[0]
            col_samples: dict[str, tuple] = {}
            rows: list[tuple] = []
            if samples > 0 and cols:
                for c in cols:
                    col_samples[c[0]] = tuple(r[0] for r in con.execute(
                        f"SELECT DISTINCT {_q(c[0])} FROM {_q(name)} WHERE {_q(c[0])} IS NOT NULL LIMIT {int(samples)}"))
                rows = [tuple(r) for r in con.execute(f"SELECT * FROM {_q(name)} LIMIT {int(samples)}")]
            tables.append(Table(
                name=name,
                columns=[Column(n, t, p, nn, col_samples.get(n, ()), storage.get(n, ())) for n, t, p, nn in cols],
                primary_key=pk, sample_rows=rows, row_count=row_count))
        by_low = {t.name.lower(): t for t in tables}
        for t in tables:
            groups: dict[int, list[tuple]] = {}
            for r in con.execute(f"PRAGMA foreign_key_list({_q(t.name)})").fetchall():
                groups.setdefault(r[0], []).append(r)
            for rs in groups.values():
                rs.sort(key=lambda r: r[1])
                ref = rs[0][2]
                ref_t = by_low.get(ref.lower())
                ref_name = ref_t.name if ref_t else ref
                to = [r[4] for r in rs]
                if any(x is None for x in to):  # REFERENCES t without columns: the referenced primary key
                    to = list(pks.get(ref.lower(), [])) or [r[3] for r in rs]
                t.foreign_keys.append(ForeignKey(t.name, tuple(r[3] for r in rs), ref_name, tuple(to)))
        return Schema(db_id=db_id, tables=tables, kind="sqlite")
    finally:
        con.close()


def introspect_duckdb(db_id: str, path, samples: int) -> Schema:
    """A DuckDB file's schema (attached read-only), with `samples` sample values per column and rows per table."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True, config={"enable_external_access": False,
                                                           "autoload_known_extensions": False,
                                                           "autoinstall_known_extensions": False})
    try:
        tnames = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT internal "
            "ORDER BY table_name").fetchall()]
        cons = con.execute(
            "SELECT table_name, constraint_type, constraint_column_names, referenced_table, "
            "referenced_column_names FROM duckdb_constraints() WHERE schema_name = 'main'").fetchall()
        tables = []
        for name in tnames:
            pk: list[str] = []
            fks: list[ForeignKey] = []
            for tn, ctype, ccols, rt, rcols in cons:
                if tn != name:
                    continue
                if ctype == "PRIMARY KEY":
                    pk = list(ccols)
                elif ctype == "FOREIGN KEY":
                    fks.append(ForeignKey(name, tuple(ccols), rt, tuple(rcols or ())))
            info = con.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position", [name]).fetchall()
            cols = []
            for cn, dt, nullable in info:
                sv: tuple = ()
                if samples > 0:
                    sv = tuple(r[0] for r in con.execute(  # first-seen order, deterministic
                        f"SELECT {_q(cn)} FROM {_q(name)} WHERE {_q(cn)} IS NOT NULL GROUP BY {_q(cn)} "
                        f"ORDER BY min(rowid) LIMIT {int(samples)}").fetchall())
                cols.append(Column(cn, dt, cn in pk, nullable == "NO", sv))
            rows = [tuple(r) for r in con.execute(
                f"SELECT * FROM {_q(name)} ORDER BY rowid LIMIT {int(samples)}").fetchall()] if samples > 0 else []
            n = con.execute(f"SELECT count(*) FROM {_q(name)}").fetchone()[0]
            tables.append(Table(name, cols, pk, fks, rows, n))
        return Schema(db_id=db_id, tables=tables, kind="duckdb")
    finally:
        con.close()


# --------------------------------------------------------------------------- prompt serialization

TokenCounter = Callable[[str], Any]


def approx_tokens(text: str) -> int:
    """The default token estimate: about four characters per token."""
    return (len(text) + 3) // 4


def _count(count_tokens: TokenCounter | None, text: str) -> int:
    if count_tokens is None:
        return approx_tokens(text)
    n = count_tokens(text)
    if isinstance(n, int):
        return n
    ids = getattr(n, "input_ids", None)
    if ids is None and isinstance(n, dict):
        ids = n.get("input_ids")
    return len(ids if ids is not None else n)


def _ident(name: str) -> str:
    return name if _SIMPLE_IDENT.match(name) else _q(name)


def _fmt_value(v: Any, width: int = 40) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes | bytearray | memoryview):
        return f"<blob {len(bytes(v))} bytes>"
    s = str(v).replace("\n", " ").replace("*/", "* /")
    return s if len(s) <= width else s[: width - 3] + "..."


def _comment(text: str) -> str:
    return f" /* {_fmt_value(text, 120)} */" if text else ""


def _render(tables: list[tuple[Table, list[Column]]], sample_rows: int) -> str:
    parts = []
    for t, cols in tables:
        keep = {c.name for c in cols}
        lines = [f"  {_ident(c.name)}{' ' + c.type if c.type else ''}{_comment(c.comment)}" for c in cols]
        if t.primary_key:
            lines.append(f"  PRIMARY KEY ({', '.join(_ident(c) for c in t.primary_key)})")
        for fk in t.foreign_keys:
            lines.append(f"  FOREIGN KEY ({', '.join(_ident(c) for c in fk.columns)}) REFERENCES "
                         f"{_ident(fk.ref_table)}({', '.join(_ident(c) for c in fk.ref_columns)})")
        text = (f"-- {_fmt_value(t.comment, 200)}\n" if t.comment else "") + \
            f"CREATE TABLE {_ident(t.name)} (\n" + ",\n".join(lines) + "\n);"
        if sample_rows > 0 and t.sample_rows:
            idx = [i for i, c in enumerate(t.columns) if c.name in keep]
            rows = t.sample_rows[:sample_rows]
            body = "\n".join(" | ".join(_fmt_value(r[i]) for i in idx if i < len(r)) for r in rows)
            header = " | ".join(t.columns[i].name for i in idx)
            text += f"\n/* {len(rows)} example rows from {_ident(t.name)}:\n{header}\n{body}\n*/"
        parts.append(text)
    return "\n\n".join(parts)


def _key_columns(t: Table, schema: Schema) -> set[str]:
    keys = {c.lower() for c in t.primary_key}
    for fk in t.foreign_keys:
        keys.update(c.lower() for c in fk.columns)
    for other in schema.tables:
        for fk in other.foreign_keys:
            if fk.ref_table.lower() == t.name.lower():
                keys.update(c.lower() for c in fk.ref_columns)
    return keys


def schema_to_prompt(schema: Schema, *, sample_rows: int = 0, max_tokens: int | None = None,
                     count_tokens: TokenCounter | None = None) -> str:
    """Serialize a schema as CREATE TABLE statements with PRIMARY KEY / FOREIGN KEY clauses, optionally
    followed by `sample_rows` example rows per table in a comment.

    With `max_tokens`, the text is shrunk deterministically until it fits: first the sample rows go;
    then, one at a time, the last non-key column of the table with the most remaining columns (ties: the
    later table); when only key columns remain, the last table. It never drops below one table, so a
    single table whose key columns alone exceed the budget comes back over budget. `count_tokens` is a
    callable text -> int (or -> a list of ids, or a tokenizer returning `input_ids`); the default is
    `approx_tokens` (~len/4).
    """
    current = [(t, list(t.columns)) for t in schema.tables]
    text = _render(current, sample_rows)
    if max_tokens is None or _count(count_tokens, text) <= max_tokens:
        return text
    if sample_rows:
        sample_rows = 0
        text = _render(current, 0)
    keys = {t.name: _key_columns(t, schema) for t in schema.tables}
    while _count(count_tokens, text) > max_tokens:
        best = None
        for i, (t, cols) in enumerate(current):
            removable = [j for j, c in enumerate(cols) if c.name.lower() not in keys[t.name]]
            if removable and (best is None or len(cols) >= len(current[best[0]][1])):
                best = (i, removable[-1])
        if best is not None:
            i, j = best
            cols = list(current[i][1])
            del cols[j]
            current[i] = (current[i][0], cols)
        elif len(current) > 1:
            current.pop()
        else:
            break
        text = _render(current, 0)
    return text


# --------------------------------------------------------------------------- router features


def schema_features(schema: Schema) -> dict[str, Any]:
    """Structural features of a schema, for routers: sizes, key counts, column type mix."""
    n_cols = [len(t.columns) for t in schema.tables]
    rows = [t.row_count or 0 for t in schema.tables]
    numeric = re.compile(r"int|real|float|double|num|dec|bool", re.I)
    n_numeric = sum(1 for t in schema.tables for c in t.columns if numeric.search(c.type or ""))
    n_total = sum(n_cols)
    return {
        "n_tables": len(schema.tables),
        "n_columns": n_total,
        "n_foreign_keys": sum(len(t.foreign_keys) for t in schema.tables),
        "n_primary_keys": sum(1 for t in schema.tables if t.primary_key),
        "n_composite_keys": sum(1 for t in schema.tables if len(t.primary_key) > 1),
        "max_columns_per_table": max(n_cols, default=0),
        "mean_columns_per_table": (n_total / len(n_cols)) if n_cols else 0.0,
        "n_numeric_columns": n_numeric,
        "n_text_columns": n_total - n_numeric,
        "n_mixed_type_columns": sum(1 for t in schema.tables for c in t.columns  # text mixed with numbers
                                    if "text" in c.storage and {"integer", "real"} & set(c.storage)),
        "total_rows": sum(rows),
        "max_table_rows": max(rows, default=0),
        "prompt_tokens": approx_tokens(schema_to_prompt(schema)),
    }
