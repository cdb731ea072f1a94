"""The schema index of a registered database, for schema linking (`sqlbox.linking`).

It holds, for every table and column, a short text document (names split into words, declared type,
key role, a few sample values, and BIRD's column descriptions where a `database_description/*.csv`
folder sits beside the database file), their all-MiniLM-L6-v2 embeddings (`core.runtime.embeddings`),
and a value index for literal matching: the distinct short text values of every text column, mapped
to the columns that hold them (exact lookups by normalised value; fuzzy lookups through `rapidfuzz`).

Built once per schema and cached in memory and on disk under `core.settings.cache_dir()/schema_index/`,
keyed by a hash of the schema (tables, columns, types, keys, row counts), the descriptions and the index
version: a changed schema gets a new key, hence a rebuild.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.settings import env_flag
from sqlbox.schema import Schema, Table

if TYPE_CHECKING:  # pragma: no cover
    from sqlbox.databases import DatabaseInfo

INDEX_VERSION = "idx-1"
VALUE_MAX_LEN = 64  # longer values are not indexed (free text)
VALUES_PER_COLUMN = 2000  # distinct values read per column, at most
NS_SEP = "__"  # a prefixed table name `<namespace>__<table>` (sqlbox.merged) reads as "namespace: table"

_TEXT_TYPE = re.compile(r"char|text|clob|string|varchar", re.I)
_NUMERIC_TYPE = re.compile(r"int|real|float|double|num|dec|bool|date|time", re.I)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def words(name: str) -> str:
    """An identifier as words: `singer_in_concert` -> `singer in concert`, `StuID` -> `stu id`."""
    return re.sub(r"[_\s]+", " ", _CAMEL.sub(" ", name)).strip().lower()


def table_words(name: str) -> str:
    if NS_SEP in name:
        ns, t = name.split(NS_SEP, 1)
        return f"{words(ns)}: {words(t)}"
    return words(name)


def normalize_value(v: str) -> str:
    return " ".join(str(v).lower().split())


def read_descriptions(db_path: Path) -> dict[tuple[str, str], str]:
    """BIRD's `database_description/<table>.csv` beside the database file: (table, column) lower-cased ->
    'column name: description; values: ...'. Empty when the folder is absent."""
    d = db_path.parent / "database_description"
    out: dict[tuple[str, str], str] = {}
    if not d.is_dir():
        return out
    for f in sorted(d.glob("*.csv")):
        try:
            text = f.read_bytes().decode("utf-8-sig", errors="replace")
        except OSError:
            continue
        for row in csv.DictReader(text.splitlines()):
            col = (row.get("original_column_name") or "").strip()
            if not col:
                continue
            parts = [p.strip() for p in (row.get("column_name"), row.get("column_description"),
                                         row.get("value_description")) if p and p.strip()]
            desc = "; ".join(parts)
            desc = " ".join(desc.split())[:300]
            if desc:
                out[(f.stem.lower(), col.lower())] = desc
    return out


@dataclass
class SchemaIndex:
    """Documents, embeddings and the value index of one schema. Row i of `column_emb` is `columns[i]`."""

    key: str
    tables: list[str]
    table_docs: list[str]
    columns: list[tuple[str, str]]  # (table, column)
    column_docs: list[str]
    table_emb: np.ndarray
    column_emb: np.ndarray
    values: dict[str, list[int]]  # normalised value -> column indices holding it
    build_s: float = 0.0
    from_cache: bool = False
    _value_list: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._value_list = list(self.values)
        self.table_pos = {t.lower(): i for i, t in enumerate(self.tables)}
        self.columns_of: dict[str, list[int]] = {}
        for i, (t, _) in enumerate(self.columns):
            self.columns_of.setdefault(t.lower(), []).append(i)

    @property
    def value_list(self) -> list[str]:
        return self._value_list

    def stats(self) -> dict[str, Any]:
        return {"tables": len(self.tables), "columns": len(self.columns), "values": len(self.values),
                "build_s": round(self.build_s, 3), "from_cache": self.from_cache}


def schema_key(schema: Schema, descriptions: dict[tuple[str, str], str]) -> str:
    h = hashlib.sha256(INDEX_VERSION.encode())
    for t in schema.tables:
        h.update(f"T{t.name}\0{t.row_count}\0{','.join(t.primary_key)}\n".encode())
        for c in t.columns:
            h.update(f"C{c.name}\0{c.type}\0{c.samples!r}\n".encode())
        for fk in t.foreign_keys:
            h.update(f"F{fk.columns}\0{fk.ref_table}\0{fk.ref_columns}\n".encode())
    for k in sorted(descriptions):
        h.update(f"D{k}\0{descriptions[k]}\n".encode())
    return h.hexdigest()[:20]


def _column_doc(t: Table, c, desc: str | None, keys: set[str]) -> str:
    role = " primary key" if c.name in t.primary_key else (" foreign key" if c.name.lower() in keys else "")
    doc = f"{table_words(t.name)} . {words(c.name)} ({(c.type or 'any').lower()}{role})"
    if desc:
        doc += f": {desc}"
    samples = [str(v) for v in c.samples if isinstance(v, str | int | float) and len(str(v)) <= 40][:3]
    if samples:
        doc += " e.g. " + ", ".join(samples)
    return doc


def _table_doc(t: Table) -> str:
    return f"{table_words(t.name)} ; columns: " + ", ".join(words(c.name) for c in t.columns)


def _is_text_column(c) -> bool:
    if c.storage:
        return "text" in c.storage
    return bool(_TEXT_TYPE.search(c.type or "")) or not (c.type or "")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_values(info: DatabaseInfo, schema: Schema, columns: list[tuple[str, str]]) -> dict[str, list[int]]:
    """normalised value -> indices into `columns`, for the text columns' distinct short values."""
    text_cols = {(t.name, c.name) for t in schema.tables for c in t.columns if _is_text_column(c)}
    out: dict[str, list[int]] = {}

    def add(i: int, vals) -> None:
        for (v,) in vals:
            if not isinstance(v, str):
                continue
            n = normalize_value(v)
            if n and len(n) <= VALUE_MAX_LEN and not n.replace(".", "").replace("-", "").isdigit():
                lst = out.setdefault(n, [])
                if not lst or lst[-1] != i:
                    lst.append(i)

    def query(t: str, c: str) -> str:
        return (f"SELECT DISTINCT {_q(c)} FROM {_q(t)} WHERE {_q(c)} IS NOT NULL "
                f"AND length({_q(c)}) <= {VALUE_MAX_LEN} LIMIT {VALUES_PER_COLUMN}")

    if info.kind == "sqlite":
        con = sqlite3.connect(f"{info.path.resolve().as_uri()}?mode=ro", uri=True)
        con.text_factory = lambda b: b.decode("utf-8", errors="replace")
        try:
            for i, (t, c) in enumerate(columns):
                if (t, c) in text_cols:
                    try:
                        add(i, con.execute(query(t, c)).fetchall())
                    except sqlite3.Error:
                        continue
        finally:
            con.close()
    else:
        import duckdb

        con = duckdb.connect(str(info.path), read_only=True)
        try:
            for i, (t, c) in enumerate(columns):
                if (t, c) in text_cols:
                    try:
                        add(i, con.execute(query(t, c)).fetchall())
                    except duckdb.Error:
                        continue
        finally:
            con.close()
    return out


def _cache_files(db_id: str, key: str) -> tuple[Path, Path]:
    from core.settings import cache_dir

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", db_id)[:80]
    d = cache_dir() / "schema_index"
    return d / f"{safe}-{key}.npz", d / f"{safe}-{key}.json"


def _load(db_id: str, key: str) -> SchemaIndex | None:
    npz, js = _cache_files(db_id, key)
    if not (npz.is_file() and js.is_file()):
        return None
    try:
        meta = json.loads(js.read_text())
        with np.load(npz) as z:
            te, ce = z["table_emb"], z["column_emb"]
        return SchemaIndex(key=key, tables=meta["tables"], table_docs=meta["table_docs"],
                           columns=[tuple(x) for x in meta["columns"]], column_docs=meta["column_docs"],
                           table_emb=te, column_emb=ce, values=meta["values"], build_s=meta.get("build_s", 0.0),
                           from_cache=True)
    except (OSError, ValueError, KeyError):
        return None  # a corrupt cache entry is rebuilt


def _save(db_id: str, idx: SchemaIndex) -> None:
    npz, js = _cache_files(db_id, idx.key)
    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp_n = npz.with_name(f"{npz.stem}.{os.getpid()}.tmp.npz")
    tmp_j = js.with_name(f"{js.name}.{os.getpid()}.tmp")
    np.savez(tmp_n, table_emb=idx.table_emb, column_emb=idx.column_emb)
    tmp_j.write_text(json.dumps({"tables": idx.tables, "table_docs": idx.table_docs, "columns": idx.columns,
                                 "column_docs": idx.column_docs, "values": idx.values, "build_s": idx.build_s}))
    os.replace(tmp_n, npz)
    os.replace(tmp_j, js)


def build_index(info: DatabaseInfo, schema: Schema, *, descriptions: dict[tuple[str, str], str] | None = None,
                with_values: bool = True) -> SchemaIndex:
    """Build the index of a schema now (no cache)."""
    from core.runtime.embeddings import encode

    t0 = time.perf_counter()
    if descriptions is None:
        descriptions = read_descriptions(info.path)
    key = schema_key(schema, descriptions)
    tables, tdocs, cols, cdocs = [], [], [], []
    for t in schema.tables:
        keys = {c.lower() for fk in t.foreign_keys for c in fk.columns}
        tables.append(t.name)
        tdocs.append(_table_doc(t))
        for c in t.columns:
            cols.append((t.name, c.name))
            cdocs.append(_column_doc(t, c, descriptions.get((t.name.lower(), c.name.lower())), keys))
    values = read_values(info, schema, cols) if with_values else {}
    te, ce = encode(tdocs), encode(cdocs)
    return SchemaIndex(key=key, tables=tables, table_docs=tdocs, columns=cols, column_docs=cdocs,
                       table_emb=te, column_emb=ce, values=values, build_s=time.perf_counter() - t0)


_MEM: dict[tuple[str, str], SchemaIndex] = {}
_MEM_LOCK = threading.Lock()
_BUILD_LOCKS: dict[str, threading.Lock] = {}


def schema_index(info: DatabaseInfo, schema: Schema, *, use_disk: bool = True, rebuild: bool = False) -> SchemaIndex:
    """The cached index of a database's schema: memory, then disk, else built (once per key; concurrent
    callers wait for the one build). `rebuild`: build it afresh now (and cache the result)."""
    descriptions = read_descriptions(info.path)
    key = schema_key(schema, descriptions)
    mk = (info.db_id, key)
    with _MEM_LOCK:
        if mk in _MEM and not rebuild:
            return _MEM[mk]
        lock = _BUILD_LOCKS.setdefault(info.db_id, threading.Lock())
    with lock:
        with _MEM_LOCK:
            if mk in _MEM and not rebuild:
                return _MEM[mk]
        idx = None
        if use_disk and not rebuild and env_flag("SQLARBITER_INDEX_CACHE"):
            idx = _load(info.db_id, key)
        if idx is None:
            idx = build_index(info, schema, descriptions=descriptions)
            if use_disk:
                try:
                    _save(info.db_id, idx)
                except OSError:  # a read-only cache dir only costs rebuilding
                    pass
        with _MEM_LOCK:
            for k in [k for k in _MEM if k[0] == info.db_id]:
                del _MEM[k]
            _MEM[mk] = idx
        return idx
