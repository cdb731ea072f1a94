"""Database administration: `load_spider` copies a Spider SQLite database into a database on a PostgreSQL or
MySQL/MariaDB server (what `sqlarbiter databases load-spider` runs); `spider_db_ids` lists a Spider split's
databases."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlbox.databases import DatabaseInfo, introspect
from sqlbox.servers.targets import TargetError, parse_target, quote_fn


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
        q = quote_fn(kind)
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
                except Exception as e:  # noqa: BLE001 - the data violates the key: listed in skipped_constraints
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
