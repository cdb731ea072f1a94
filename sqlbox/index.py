"""The schema index of a registered database, for schema linking (`sqlbox.linking`).

It holds, for every table and column, a short text document (names split into words, declared type,
key role, a few sample values, and BIRD's column descriptions where a `database_description/*.csv`
folder sits beside the database file), their all-MiniLM-L6-v2 embeddings (`core.runtime.embeddings`),
and a value index for literal matching: the distinct short text values of every text column, mapped
to the columns that hold them (exact lookups by normalised value; fuzzy lookups through `rapidfuzz`).

Built once per schema and cached in memory and on disk under `core.settings.cache_dir()/schema_index/`,
keyed by a hash of the schema (tables, columns, types, keys, row counts), the descriptions and the index
version: a changed schema gets a new key, hence a rebuild - an incremental one: the embeddings of documents
whose text did not change and the values of tables whose signature (columns, types, samples, row count) did
not change are taken from the database's previous index, so a changed table re-indexes that table only.

A build has two stages: the lexical one (documents, values, BM25 over the documents; seconds) and the
embeddings. `schema_index(..., wait=False)` never waits for a build past `wait_s`: it answers with the
finished index, else the lexical stage of the build in flight (started in the background if none is; `link`
then ranks by BM25 and says so), else None. `warm_index` builds ahead of need (`serve` start-up,
`sqlarbiter databases warm`).
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
    table_emb: np.ndarray | None  # None: the lexical stage only (embeddings still being built)
    column_emb: np.ndarray | None
    values: dict[str, list[int]]  # normalised value -> column indices holding it
    build_s: float = 0.0
    from_cache: bool = False
    table_sigs: dict[str, str] = field(default_factory=dict)  # table -> signature (incremental rebuilds)
    reused: dict[str, int] = field(default_factory=dict)  # what an incremental build took from the previous index
    _value_list: list[str] = field(default_factory=list, repr=False)
    _bm25: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._value_list = list(self.values)
        self.table_pos = {t.lower(): i for i, t in enumerate(self.tables)}
        self.columns_of: dict[str, list[int]] = {}
        for i, (t, _) in enumerate(self.columns):
            self.columns_of.setdefault(t.lower(), []).append(i)

    @property
    def value_list(self) -> list[str]:
        return self._value_list

    @property
    def embedded(self) -> bool:
        return self.table_emb is not None and self.column_emb is not None

    def lexical_scores(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores of `text` against the table and the column documents, each scaled to [0, 1] by its max
        (stand-ins for the cosine similarities while the embeddings are not built)."""
        if self._bm25 is None:
            import bm25s

            tb, cb = bm25s.BM25(), bm25s.BM25()
            tb.index([_tokens(d) for d in self.table_docs] or [[""]], show_progress=False)
            cb.index([_tokens(d) for d in self.column_docs] or [[""]], show_progress=False)
            self._bm25 = (tb, cb)
        q = _tokens(text)
        out = []
        for bm, n in zip(self._bm25, (len(self.tables), len(self.columns)), strict=True):
            sc = np.asarray(bm.get_scores(q), dtype=np.float64)[:n] if n else np.zeros(0)
            m = float(sc.max()) if len(sc) else 0.0
            out.append(sc / m if m > 0 else sc)
        return out[0], out[1]

    def stats(self) -> dict[str, Any]:
        return {"tables": len(self.tables), "columns": len(self.columns), "values": len(self.values),
                "build_s": round(self.build_s, 3), "from_cache": self.from_cache, "embedded": self.embedded,
                **({"reused": self.reused} if self.reused else {})}


_TOK = re.compile(r"[a-z0-9]+")
_TOK_STOP = frozenset("a an the of in on at to for from by with and or is are was were what which who how many "
                      "list show give find me all each e g".split())


def _tokens(text: str) -> list[str]:
    toks = [w for w in _TOK.findall(_CAMEL.sub(" ", text).lower().replace("_", " ")) if w not in _TOK_STOP]
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in toks]


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


def table_sig(t: Table) -> str:
    """What the values of a table depend on: an unchanged signature reuses the previous index's values."""
    h = hashlib.sha256(f"{t.name}\0{t.row_count}".encode())
    for c in t.columns:
        h.update(f"{c.name}\0{c.type}\0{c.storage!r}\0{c.samples!r}\n".encode())
    return h.hexdigest()[:16]


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


def read_values(info: DatabaseInfo, schema: Schema, columns: list[tuple[str, str]],
                only: set[str] | None = None) -> dict[str, list[int]]:
    """normalised value -> indices into `columns`, for the text columns' distinct short values (of the tables
    in `only`, when given)."""
    text_cols = {(t.name, c.name) for t in schema.tables for c in t.columns if _is_text_column(c)
                 and (only is None or t.name in only)}
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


def _load(db_id: str, key: str, *, js: Path | None = None) -> SchemaIndex | None:
    npz, js_ = _cache_files(db_id, key)
    js = js or js_
    npz = js.with_suffix(".npz")
    if not (npz.is_file() and js.is_file()):
        return None
    try:
        meta = json.loads(js.read_text())
        with np.load(npz) as z:
            te, ce = z["table_emb"], z["column_emb"]
        return SchemaIndex(key=key, tables=meta["tables"], table_docs=meta["table_docs"],
                           columns=[tuple(x) for x in meta["columns"]], column_docs=meta["column_docs"],
                           table_emb=te, column_emb=ce, values=meta["values"], build_s=meta.get("build_s", 0.0),
                           from_cache=True, table_sigs=meta.get("table_sigs", {}))
    except (OSError, ValueError, KeyError):
        return None  # a corrupt cache entry is rebuilt


def _previous(db_id: str) -> SchemaIndex | None:
    """The database's most recent index (memory, else disk), whatever its key: what an incremental build reuses."""
    with _MEM_LOCK:
        mem = [v for k, v in _MEM.items() if k[0] == db_id and v.embedded]
    if mem:
        return mem[-1]
    npz, _ = _cache_files(db_id, "x")
    prefix = npz.name[: -len("x.npz")]
    try:
        files = sorted((f for f in npz.parent.glob(f"{prefix}*.json") if ".tmp" not in f.name
                        and re.fullmatch(r"[0-9a-f]{20}", f.stem[len(prefix):])),
                       key=lambda f: f.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for f in files[:1]:
        return _load(db_id, f.stem[len(prefix):], js=f)
    return None


def _save(db_id: str, idx: SchemaIndex) -> None:
    npz, js = _cache_files(db_id, idx.key)
    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp_n = npz.with_name(f"{npz.stem}.{os.getpid()}.tmp.npz")
    tmp_j = js.with_name(f"{js.name}.{os.getpid()}.tmp")
    np.savez(tmp_n, table_emb=idx.table_emb, column_emb=idx.column_emb)
    tmp_j.write_text(json.dumps({"tables": idx.tables, "table_docs": idx.table_docs, "columns": idx.columns,
                                 "column_docs": idx.column_docs, "values": idx.values, "build_s": idx.build_s,
                                 "table_sigs": idx.table_sigs}))
    os.replace(tmp_n, npz)
    os.replace(tmp_j, js)


def encode_docs(docs: list[str], known: dict[str, np.ndarray] | None = None,
                batch_size: int | None = None) -> tuple[np.ndarray, int]:
    """Embeddings of `docs`: those in `known` (doc text -> vector) are reused, the rest encoded once per distinct
    text, in length-sorted batches. Returns (embeddings, how many were encoded)."""
    from core.runtime.embeddings import EMBED_DIM, ENCODE_BATCH, encode

    known = known or {}
    todo = list(dict.fromkeys(d for d in docs if d not in known))
    new = dict(zip(todo, encode(todo, batch_size=batch_size or ENCODE_BATCH), strict=True)) if todo else {}
    if not docs:
        return np.zeros((0, EMBED_DIM), dtype=np.float32), 0
    return np.stack([new[d] if d in new else known[d] for d in docs]).astype(np.float32), len(todo)


def build_index(info: DatabaseInfo, schema: Schema, *, descriptions: dict[tuple[str, str], str] | None = None,
                with_values: bool = True, previous: SchemaIndex | None = None,
                on_lexical: Any = None) -> SchemaIndex:
    """Build the index of a schema now (no cache). `previous` (an index of the same database): documents whose
    text is unchanged keep its embeddings and tables whose signature is unchanged keep its values.
    `on_lexical(index)`, when given, is called with the lexical stage (no embeddings) before they are encoded."""
    t0 = time.perf_counter()
    if descriptions is None:
        descriptions = read_descriptions(info.path)
    key = schema_key(schema, descriptions)
    tables, tdocs, cols, cdocs = [], [], [], []
    sigs: dict[str, str] = {}
    for t in schema.tables:
        keys = {c.lower() for fk in t.foreign_keys for c in fk.columns}
        tables.append(t.name)
        tdocs.append(_table_doc(t))
        sigs[t.name] = table_sig(t)
        for c in t.columns:
            cols.append((t.name, c.name))
            cdocs.append(_column_doc(t, c, descriptions.get((t.name.lower(), c.name.lower())), keys))
    reused: dict[str, int] = {}
    values: dict[str, list[int]] = {}
    if with_values:
        same = set()
        if previous is not None and previous.table_sigs:
            same = {t for t in tables if previous.table_sigs.get(t) == sigs[t]}
        if same:
            pos = {c: i for i, c in enumerate(cols)}
            for v, idxs in previous.values.items():
                new = [pos[c] for c in (tuple(previous.columns[i]) for i in idxs) if c[0] in same and c in pos]
                if new:
                    values[v] = new
            reused["tables_values"] = len(same)
        changed = set(tables) - same
        if changed:
            for v, idxs in read_values(info, schema, cols, only=changed).items():
                lst = values.setdefault(v, [])
                lst.extend(i for i in idxs if i not in lst)
                lst.sort()
    lex = SchemaIndex(key=key, tables=tables, table_docs=tdocs, columns=cols, column_docs=cdocs, table_emb=None,
                      column_emb=None, values=values, build_s=time.perf_counter() - t0, table_sigs=sigs)
    if on_lexical is not None:
        on_lexical(lex)
    known: dict[str, np.ndarray] = {}
    if previous is not None and previous.embedded:
        known.update(zip(previous.table_docs, previous.table_emb, strict=True))
        known.update(zip(previous.column_docs, previous.column_emb, strict=True))
    te, n_t = encode_docs(tdocs, known)
    ce, n_c = encode_docs(cdocs, known)
    if previous is not None:
        reused["docs_encoded"] = n_t + n_c
        reused["docs_reused"] = len(tdocs) + len(cdocs) - n_t - n_c
    return SchemaIndex(key=key, tables=tables, table_docs=tdocs, columns=cols, column_docs=cdocs,
                       table_emb=te, column_emb=ce, values=values, build_s=time.perf_counter() - t0,
                       table_sigs=sigs, reused=reused)


_MEM: dict[tuple[str, str], SchemaIndex] = {}
_MEM_LOCK = threading.Lock()
_BUILD_LOCKS: dict[str, threading.Lock] = {}


class _Build:
    """A build in flight: its lexical stage once ready, then the finished index (or the error)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lexical: SchemaIndex | None = None
        self.lexical_ready = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None


_BUILDS: dict[tuple[str, str], _Build] = {}


def build_state(db_id: str) -> str:
    """'ready' (an index in memory), 'building' (lexical stage ready or not), or 'none'."""
    with _MEM_LOCK:
        if any(k[0] == db_id for k in _MEM):
            return "ready"
        b = [v for k, v in _BUILDS.items() if k[0] == db_id]
    if b:
        return "building (lexical stage ready)" if b[0].lexical_ready.is_set() else "building"
    return "none"


def schema_index(info: DatabaseInfo, schema: Schema, *, use_disk: bool = True, rebuild: bool = False,
                 wait: bool = True, wait_s: float = 0.0) -> SchemaIndex | None:
    """The cached index of a database's schema: memory, then disk, else built (once per key; concurrent
    callers wait for the one build). `rebuild`: build it afresh now (and cache the result).

    `wait=False` (the request path): never waits past `wait_s` seconds for a build; answers the finished index,
    else the lexical stage of the build in flight (a build is started in the background when none is), else
    None (the lexical stage is not ready either)."""
    descriptions = read_descriptions(info.path)
    key = schema_key(schema, descriptions)
    mk = (info.db_id, key)
    with _MEM_LOCK:
        if mk in _MEM and not rebuild:
            return _MEM[mk]
        lock = _BUILD_LOCKS.setdefault(info.db_id, threading.Lock())
        build = _BUILDS.get(mk)
    if not wait:
        if build is None and use_disk and env_flag("SQLARBITER_INDEX_CACHE"):
            idx = _load(info.db_id, key)
            if idx is not None:
                with _MEM_LOCK:
                    _MEM[mk] = idx
                return idx
        if build is None:
            build = _start_background(info, schema, mk, use_disk)
        deadline = time.monotonic() + max(wait_s, 0.0)
        build.lexical_ready.wait(max(deadline - time.monotonic(), 0.0))
        build.done.wait(max(deadline - time.monotonic(), 0.0))
        with _MEM_LOCK:
            if mk in _MEM:
                return _MEM[mk]
        return build.lexical
    with lock:
        with _MEM_LOCK:
            if mk in _MEM and not rebuild:
                return _MEM[mk]
        idx = None
        if use_disk and not rebuild and env_flag("SQLARBITER_INDEX_CACHE"):
            idx = _load(info.db_id, key)
        if idx is None:
            with _MEM_LOCK:
                b = _BUILDS.setdefault(mk, _Build())

            def lexical_ready(lex: SchemaIndex) -> None:
                b.lexical = lex
                b.lexical_ready.set()

            try:
                prev = _previous(info.db_id) if use_disk or rebuild else None
                idx = build_index(info, schema, descriptions=descriptions, previous=prev, on_lexical=lexical_ready)
            except BaseException as e:
                b.error = e
                raise
            finally:
                b.lexical_ready.set()
                with _MEM_LOCK:
                    if not b.done.is_set() and b.error is not None:
                        _BUILDS.pop(mk, None)
            if use_disk:
                try:
                    _save(info.db_id, idx)
                except OSError:  # a read-only cache dir only costs rebuilding
                    pass
        with _MEM_LOCK:
            for k in [k for k in _MEM if k[0] == info.db_id]:
                del _MEM[k]
            _MEM[mk] = idx
            b = _BUILDS.pop(mk, None)
        if b is not None:
            b.done.set()
        return idx


def _start_background(info: DatabaseInfo, schema: Schema, mk: tuple[str, str], use_disk: bool) -> _Build:
    with _MEM_LOCK:
        b = _BUILDS.get(mk)
        if b is not None:
            return b
        b = _BUILDS[mk] = _Build()

    def run() -> None:
        try:
            schema_index(info, schema, use_disk=use_disk)
        except Exception as e:  # noqa: BLE001 - a failed background build is logged; the next request retries
            import logging

            logging.getLogger(__name__).warning("schema index of %s failed: %s: %s", info.db_id, type(e).__name__, e)
            b.error = e
            b.lexical_ready.set()
            b.done.set()
            with _MEM_LOCK:
                if _BUILDS.get(mk) is b:
                    del _BUILDS[mk]

    threading.Thread(target=run, name=f"schema-index-{info.db_id}", daemon=True).start()
    return b


def warm_index(info: DatabaseInfo, schema: Schema) -> SchemaIndex:
    """Build (or load) the index now, ahead of need."""
    return schema_index(info, schema)
