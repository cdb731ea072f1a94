"""A server database's schema, read through SQLAlchemy's inspector (tables, columns, keys, comments) and a few
bounded, read-only sample queries."""

from __future__ import annotations

from sqlbox.schema import Column, ForeignKey, Schema, Table
from sqlbox.servers.execute import ServerConn
from sqlbox.servers.pool import engine_for
from sqlbox.servers.targets import ServerTarget, error_text, quote_fn


def default_schema(kind: str, insp) -> str | None:
    try:
        return insp.default_schema_name
    except Exception:  # noqa: BLE001 - an inspector that cannot say: the dialect's default
        return "public" if kind == "postgresql" else None


def introspect_server(db_id: str, target: ServerTarget, samples: int = 3, timeout_s: float = 10.0):
    """A `sqlbox.schema.Schema` for a server database: tables (include/exclude applied), columns with
    their declared types and comments, primary and foreign keys, row counts and `samples` sample values
    per column (read-only, bounded by `timeout_s` per query)."""
    from sqlalchemy import inspect

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
    q = quote_fn(target.kind)
    for sch in schemas:
        try:
            names = sorted(insp.get_table_names(schema=sch)) + sorted(insp.get_view_names(schema=sch))
        except Exception as e:  # noqa: BLE001 - whatever the driver raises, redacted and re-raised
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
            except Exception:  # noqa: BLE001 - no foreign keys when the server will not list them
                pass
            try:
                comment = (insp.get_table_comment(name, schema=sch) or {}).get("text") or ""
            except Exception:  # noqa: BLE001 - no comment when the server will not give it
                comment = ""
            columns = []
            for c in cols:
                sv: tuple = ()
                if samples > 0:
                    try:
                        _, rows = conn.run(f"SELECT DISTINCT {q(c['name'])} FROM {qual} WHERE {q(c['name'])} IS NOT NULL "
                                           f"LIMIT {int(samples)}", timeout_s, samples)
                        sv = tuple(r[0] for r in rows)
                    except Exception:  # noqa: BLE001 - samples are optional: whatever the query raises, none
                        sv = ()
                columns.append(Column(c["name"], _type_text(c["type"]), c["name"] in pk, not c.get("nullable", True),
                                      sv, (), c.get("comment") or ""))
            rows_: list[tuple] = []
            count = None
            if samples > 0:
                try:
                    rows_ = conn.run(f"SELECT * FROM {qual} LIMIT {int(samples)}", timeout_s, samples)[1]
                except Exception:  # noqa: BLE001 - samples are optional: whatever the query raises, none
                    rows_ = []
            try:
                count = conn.run(f"SELECT count(*) FROM {qual}", timeout_s, 1)[1][0][0]
            except Exception:  # noqa: BLE001 - a row count is optional: whatever the query raises, unknown
                count = None
            tables.append(Table(full, columns, pk, fks, rows_, count, comment))
    return Schema(db_id=db_id, tables=tables, kind=target.kind)


def _type_text(t) -> str:
    try:
        return str(t)
    except Exception:  # noqa: BLE001 - e.g. NullType
        return ""
