"""The sandboxed executor: runs one candidate SQL on a registered database and reports an
`ExecutionResult` (columns, a bounded row preview, row count, result fingerprints, or a classified error).
It never raises for bad candidate SQL.

Engines (same interface, chosen by `engine=`):
- `duckdb` (default): an in-memory DuckDB per (thread, database). The sqlite scanner is LOADed from the
  file the `duckdb-ext-sqlite` package installs (offline; autoload/autoinstall are off), the SQLite file
  is ATTACHed READ_ONLY, then `enable_external_access=false` and `lock_configuration=true` are set, so no
  candidate can read or write files, attach databases, load extensions or change settings. DuckDB files
  are ATTACHed READ_ONLY the same way.
- `sqlite`: Python sqlite3 on the file opened `mode=ro`, with an authorizer that allows only reads
  (SELECT, READ, RECURSIVE and non-file functions) and a progress-handler deadline. It has SQLite's exact
  semantics (the Spider/BIRD gold SQL dialect); it has no memory cap beyond the deadline.

Layers, outermost first: the SQL guard (`sqlbox.guard.guard`), a check on the engine's own parse
(DuckDB: exactly one SELECT, and in its `json_serialize_sql` tree only allowlisted table functions and no
file/environment function: the sqlite scanner's `sqlite_scan` opens files through SQLite and ignores
`enable_external_access`; sqlite3: one statement, enforced by the module), the sandbox settings above, a per-query timeout that interrupts the
engine (`conn.interrupt()` from a watchdog thread for DuckDB), a row cap and DuckDB's memory limit with no
spilling to disk (`temp_directory` unset). Connections are per thread (never shared concurrently).

SQLite semantics on DuckDB (the dialect gap; measured by `python -m benchmarks.dialect_agreement`):
- each SQLite table is exposed as a view that reads the file with `sqlite_all_varchar` and casts every
  column to the DuckDB type of what it actually holds (`Column.storage`): only integers -> BIGINT,
  integers/reals -> DOUBLE, any text -> VARCHAR (SQLite's affinity lets an INTEGER column hold 'F'), blobs
  -> BLOB; dates stay text, as in SQLite;
- `integer_division=true` (SQLite `/` on integers truncates), `scalar_subquery_error_on_multiple_rows=false`
  (SQLite takes the first row), `old_implicit_casting=true` (SQLite compares text with numbers);
- the query is rewritten: sqlglot transpile sqlite -> duckdb; double-quoted strings that name no column
  become string literals (SQLite's fallback); LIKE -> ILIKE (SQLite LIKE ignores ASCII case); bare columns
  of aggregate queries (not in GROUP BY) -> `arg_max_null/arg_min_null(col, <the min/max argument>)` when
  the query has a min()/max() (SQLite takes the bare value from that row), else `any_value(col)`;
  `SELECT DISTINCT ... ORDER BY <expr not selected>` orders by `min(expr)` over a GROUP BY of the selected
  columns.
- result columns are named as SQLite names them (`sqlite_result_names`): an unaliased expression by its text as
  written (`count(*)`, not DuckDB's `count_star()`), a column by its declared name; on the 1034 Spider dev gold
  queries both engines report identical names.

Fingerprints: every value is canonicalized, then each row is hashed; `fingerprint` hashes the sorted row
hashes (order-insensitive multiset), `ordered_fingerprint` the row hashes in order. Canonical values:
NULL; bool -> int; floats (and Decimals) that are integral and below 2**53 -> int, other floats rounded to
12 significant digits (so SQLite's and DuckDB's sums/averages agree); NaN/inf tagged; text as is (case
and whitespace matter); bytes -> hex; dates/times -> their ISO text with a space separator (what SQLite
stores). Values keep a type tag, so 1 and '1' differ. Column names do not enter the fingerprint.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlglot import exp

from core.model import ErrorKind, ExecutionResult
from sqlbox.databases import DatabaseInfo, DatabaseRegistry, UnknownDatabase
from sqlbox.guard import TABLE_FUNCTION_ALLOWLIST, ParseFailure, Rejected, guard, is_forbidden_function
from sqlbox.schema import Schema

ENGINES = ("duckdb", "sqlite")
_FETCH_CHUNK = 1000


def _fetch_capped(cur, max_rows: int) -> tuple[list[str], list[tuple]]:
    """Column names and at most max_rows + 1 rows (the extra row tells the caller the cap was hit)."""
    cols = [d[0] for d in cur.description or []]
    rows: list[tuple] = []
    while len(rows) <= max_rows:
        chunk = cur.fetchmany(min(_FETCH_CHUNK, max_rows + 1 - len(rows)))
        if not chunk:
            break
        rows.extend(chunk)
    return cols, rows
_SQLITE_MAX_VALUE_BYTES = 16_000_000  # the largest string/blob a sqlite-engine query may build


# --------------------------------------------------------------------------- canonical values


def canonical_value(v: Any) -> Any:
    """The engine-independent form of one result value (see the module docstring)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, decimal.Decimal):
        if v.is_nan() or v.is_infinite():
            return {"f": str(v)}
        if v == v.to_integral_value() and abs(v) < 2**53:
            return int(v)
        v = float(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return {"f": repr(v)}
        if v.is_integer() and abs(v) < 2**53:
            return int(v)
        return float(f"{v:.12g}")
    if isinstance(v, bytes | bytearray | memoryview):
        return {"b": bytes(v).hex()}
    if isinstance(v, _dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return {"td": v.total_seconds()}
    if isinstance(v, list | tuple):
        return [canonical_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): canonical_value(x) for k, x in v.items()}
    return {"o": str(v)}


def _json_preview(v: Any) -> Any:
    """A JSON-friendly preview value (Plans round-trip through JSON)."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() and v.is_finite() else float(v)
    if isinstance(v, bytes | bytearray | memoryview):
        b = bytes(v)
        return f"<blob {len(b)} bytes>"
    if isinstance(v, _dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return [_json_preview(x) for x in v]
    return str(v)


def row_hash(row: Sequence[Any]) -> str:
    data = json.dumps([canonical_value(v) for v in row], ensure_ascii=False, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprints(rows: Iterable[Sequence[Any]]) -> tuple[str, str]:
    """(order-insensitive multiset fingerprint, order-sensitive fingerprint) of a result."""
    hashes = [row_hash(r) for r in rows]
    ordered = hashlib.sha256(("\n".join(hashes)).encode()).hexdigest()
    multiset = hashlib.sha256(("\n".join(sorted(hashes))).encode()).hexdigest()
    return multiset, ordered


# --------------------------------------------------------------------------- sqlite -> duckdb semantics


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


def duck_type(storage: Sequence[str], declared: str) -> str:
    """The DuckDB type a SQLite column is exposed as, from the storage classes its values use."""
    s = set(storage)
    if "blob" in s:
        return "BLOB" if s == {"blob"} else "VARCHAR"
    if "text" in s:
        return "VARCHAR"
    if s == {"integer"}:
        return "BIGINT"
    if s:
        return "DOUBLE"
    d = declared.upper()  # empty column: SQLite's affinity rules on the declared type
    if "INT" in d:
        return "BIGINT"
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")) or not d:
        return "VARCHAR"
    if "BLOB" in d:
        return "BLOB"
    return "DOUBLE"


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _agg_ancestor(node: exp.Expression, stop: exp.Expression) -> bool:
    p = node.parent
    while p is not None and p is not stop:
        if isinstance(p, exp.AggFunc | exp.Window):
            return True
        if isinstance(p, exp.Select):  # a nested query: not ours
            return True
        p = p.parent
    return False


def _own_nodes(select: exp.Select, typ) -> list:
    """Nodes of a type that belong to this SELECT (not to a nested query)."""
    out = []
    for key in ("expressions", "having", "order", "where", "qualify"):
        arg = select.args.get(key)
        if arg is None:
            continue
        for root in arg if isinstance(arg, list) else [arg]:
            for n in root.find_all(typ):
                if n.parent_select is select:
                    out.append(n)
    return out


def _rewrite_bare_columns(select: exp.Select) -> None:
    """SQLite's bare columns in aggregate queries -> explicit aggregates DuckDB accepts."""
    group = select.args.get("group")
    aggs = [a for a in _own_nodes(select, exp.AggFunc)
            if not any(isinstance(p, exp.Window) for p in a.iter_expressions()) and not isinstance(a.parent, exp.Window)]
    if not aggs and group is None:
        return
    projections = list(select.expressions)
    aliases = {p.alias.lower() for p in projections if isinstance(p, exp.Alias) and p.alias}
    alias_to_table: dict[str, str] = {}
    for t in select.find_all(exp.Table):
        if t.parent_select is select:
            alias_to_table[(t.alias or t.name).lower()] = t.name.lower()

    def key(col: exp.Column) -> tuple[str | None, str]:
        q = col.table.lower() if col.table else None
        return (alias_to_table.get(q, q) if q else None, col.name.lower())

    grouped: set[tuple[str | None, str]] = set()
    grouped_exprs: set[str] = set()
    if group is not None:
        for g in group.expressions:
            target = g
            if isinstance(g, exp.Literal) and not g.is_string and g.this.isdigit():
                i = int(g.this) - 1
                target = projections[i] if 0 <= i < len(projections) else g
            elif isinstance(g, exp.Column) and not g.table and g.name.lower() in aliases:
                target = next(p for p in projections if isinstance(p, exp.Alias) and p.alias.lower() == g.name.lower())
            if isinstance(target, exp.Alias):
                target = target.this
            grouped_exprs.add(target.sql())
            for c in target.find_all(exp.Column):
                grouped.add(key(c))

    def is_grouped(c: exp.Column) -> bool:
        k = key(c)
        if k in grouped:
            return True
        if k[0] is None:
            return any(g[1] == k[1] for g in grouped)
        return (None, k[1]) in grouped

    minmax = [a for a in aggs if isinstance(a, exp.Max | exp.Min) and a.parent_select is select]
    chosen = minmax[0] if minmax else None
    for c in _own_nodes(select, exp.Column):
        if _agg_ancestor(c, select) or is_grouped(c):
            continue
        if isinstance(c.this, exp.Star):
            continue
        where = select.args.get("where")
        if where is not None and any(c is m for m in where.walk()):
            continue  # WHERE runs before grouping
        owner = next((pr for pr in projections if any(c is m for m in pr.walk())), None)
        # ORDER BY / HAVING may name a select alias
        if owner is None and not c.table and c.name.lower() in aliases:
            continue
        # a projection equal to a GROUP BY expression is grouped as a whole
        if owner is not None and (owner.this if isinstance(owner, exp.Alias) else owner).sql() in grouped_exprs:
            continue
        if chosen is not None:
            fn = "ARG_MAX_NULL" if isinstance(chosen, exp.Max) else "ARG_MIN_NULL"
            repl = exp.Anonymous(this=fn, expressions=[c.copy(), chosen.this.copy()])
        else:
            repl = exp.AnyValue(this=c.copy())
        c.replace(repl)


def _rewrite_distinct_order(select: exp.Select) -> None:
    """SQLite allows SELECT DISTINCT ... ORDER BY <expr not in the select list>; DuckDB does not.
    Rewrite to GROUP BY <select list> ORDER BY min(<expr>) (same rows, SQLite's order in practice)."""
    distinct = select.args.get("distinct")
    order = select.args.get("order")
    if not distinct or distinct.args.get("on") or order is None or select.args.get("group"):
        return
    if _own_nodes(select, exp.AggFunc):
        return
    proj_sql = {(p.this if isinstance(p, exp.Alias) else p).sql().lower() for p in select.expressions}
    aliases = {p.alias.lower() for p in select.expressions if isinstance(p, exp.Alias)}
    missing = []
    for o in order.expressions:
        e = o.this
        if e.sql().lower() in proj_sql:
            continue
        if isinstance(e, exp.Column) and not e.table and e.name.lower() in aliases:
            continue
        if isinstance(e, exp.Literal) and not e.is_string:
            continue
        # an unqualified column matching a selected column's name counts as selected
        if isinstance(e, exp.Column) and any(
                isinstance(p, exp.Column) and p.name.lower() == e.name.lower() for p in select.expressions):
            continue
        missing.append(o)
    if not missing:
        return
    for o in missing:
        o.set("this", exp.Min(this=o.this.copy()))
    select.set("distinct", None)
    select.set("group", exp.Group(expressions=[(p.this if isinstance(p, exp.Alias) else p).copy()
                                              for p in select.expressions]))


def sqlite_affinity(declared: str) -> str:
    """SQLite's column affinity for a declared type (section 3.1 of the SQLite datatype docs)."""
    d = (declared or "").upper()
    if "INT" in d:
        return "integer"
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in d or not d:
        return "blob"
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "numeric"


def _scope_tables(select: exp.Select, schema: Schema) -> dict[str, Any]:
    """alias-or-name (lower) -> schema Table, for the database tables this SELECT reads directly."""
    out: dict[str, Any] = {}
    for t in select.find_all(exp.Table):
        if t.parent_select is select and isinstance(t.this, exp.Identifier):
            st = schema.table(t.name)
            if st is not None:
                out[(t.alias or t.name).lower()] = st
    return out


def _column_of(col: exp.Column, schema: Schema):
    """The schema Column a column reference reads, when it can be resolved; else None."""
    sel = col.parent_select
    if not isinstance(sel, exp.Select):
        return None
    scope = _scope_tables(sel, schema)
    if col.table:
        t = scope.get(col.table.lower())
        return t.column(col.name) if t is not None else None
    hits = [t.column(col.name) for t in scope.values() if t.column(col.name) is not None]
    return hits[0] if len(hits) == 1 else None


def _numeric_literal(e: exp.Expression) -> bool:
    if isinstance(e, exp.Neg):
        e = e.this
    return isinstance(e, exp.Literal) and not e.is_string


_NUMERIC_TEXT = re.compile(r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$")


def _non_numeric_string(e: exp.Expression) -> bool:
    return isinstance(e, exp.Literal) and e.is_string and not _NUMERIC_TEXT.match(e.this)


def _as_sqlite_number(e: exp.Expression) -> exp.Expression:
    """SQLite's text -> number conversion in arithmetic aggregates: the longest numeric prefix
    ('1989-05-01' -> 1989), 0 when there is none."""
    prefix = exp.Anonymous(this="REGEXP_EXTRACT", expressions=[exp.cast(e.copy(), "VARCHAR"),
                                                                exp.Literal.string(_NUM_PREFIX)])
    return exp.Case(ifs=[exp.If(this=exp.Is(this=e.copy(), expression=exp.Null()), true=exp.Null())],
                    default=exp.func("COALESCE", exp.TryCast(this=prefix, to=exp.DataType.build("DOUBLE")),
                                     exp.Literal.number(0)))


_NUM_PREFIX = r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"


def _rewrite_affinity(tree: exp.Expression, schema: Schema) -> None:
    """Comparisons and sums over columns exposed as VARCHAR (text, or text mixed with numbers) follow
    SQLite's affinity rules instead of DuckDB's casts."""

    def varchar_col(e: exp.Expression):
        if not isinstance(e, exp.Column):
            return None
        c = _column_of(e, schema)
        if c is None or duck_type(c.storage, c.type) != "VARCHAR":
            return None
        return c

    def fix(col_expr: exp.Expression, c, literals: list[exp.Expression]) -> None:
        aff = sqlite_affinity(c.type)
        if aff == "text":  # the number literal gets TEXT affinity: compare as text
            for lit in literals:
                if _numeric_literal(lit):
                    lit.replace(exp.Literal.string(lit.sql()))
        elif aff in ("integer", "real", "numeric") and any(_numeric_literal(x) for x in literals):
            # numbers compare numerically; text values sort after every number
            col_expr.replace(exp.Case(
                ifs=[exp.If(this=exp.Is(this=col_expr.copy(), expression=exp.Null()), true=exp.Null())],
                default=exp.func("COALESCE", exp.TryCast(this=col_expr.copy(), to=exp.DataType.build("DOUBLE")),
                                 exp.Cast(this=exp.Literal.string("inf"), to=exp.DataType.build("DOUBLE")))))

    def numeric_col(e: exp.Expression) -> bool:
        if not isinstance(e, exp.Column):
            return False
        c = _column_of(e, schema)
        return c is not None and duck_type(c.storage, c.type) in ("BIGINT", "DOUBLE")

    for node in list(tree.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
        for a, b in ((node.this, node.expression), (node.expression, node.this)):
            c = varchar_col(a)
            if c is not None and _numeric_literal(b):
                fix(a, c, [b])
                break
            if numeric_col(a) and _non_numeric_string(b):
                # a number never equals text in SQLite (numbers sort before text); DuckDB would fail to
                # cast the text: compare as text instead
                a.replace(exp.cast(a.copy(), "VARCHAR"))
                break
            if c is not None and numeric_col(b):
                # text vs numeric column: SQLite applies numeric affinity to the text side; text that is
                # not a number then equals no number (DuckDB would fail casting it)
                a.replace(exp.TryCast(this=a.copy(), to=exp.DataType.build("DOUBLE")))
                break
    for node in list(tree.find_all(exp.Between)):
        c = varchar_col(node.this)
        if c is not None:
            fix(node.this, c, [node.args["low"], node.args["high"]])
    for node in list(tree.find_all(exp.In)):
        c = varchar_col(node.this)
        if c is not None and node.expressions:
            fix(node.this, c, list(node.expressions))
        elif node.expressions and numeric_col(node.this) and any(_non_numeric_string(x) for x in node.expressions):
            node.this.replace(exp.cast(node.this.copy(), "VARCHAR"))
    for agg in list(tree.find_all(exp.Sum, exp.Avg)):
        arg = agg.this
        if isinstance(arg, exp.Distinct) and len(arg.expressions) == 1:
            arg = arg.expressions[0]
        if varchar_col(arg) is not None:
            arg.replace(_as_sqlite_number(arg))


def _add_group_tiebreak(select: exp.Select) -> None:
    """SQLite orders tied rows of a grouped query by the group keys, in the direction of the last ORDER BY
    term (it sorts groups by key before ordering). DuckDB leaves ties arbitrary: make them explicit."""
    group = select.args.get("group")
    order = select.args.get("order")
    if group is None or order is None or not group.expressions or not order.expressions:
        return
    desc = bool(order.expressions[-1].args.get("desc"))

    have = {o.this.sql().lower() for o in order.expressions}
    extra = []
    for g in group.expressions:
        if isinstance(g, exp.Literal):
            continue
        if g.sql().lower() in have:
            continue
        extra.append(exp.Ordered(this=g.copy(), desc=desc, nulls_first=not desc))
    if extra:
        order.set("expressions", list(order.expressions) + extra)


def sqlite_to_duckdb(tree: exp.Expression, schema: Schema | None) -> str:
    """Rewrite a parsed SQLite query so DuckDB computes what SQLite would (see the module docstring)."""
    tree = tree.copy()
    columns = schema.column_names() if schema is not None else set()
    tables = {t.lower() for t in schema.table_names()} if schema is not None else set()
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    aliases |= {t.alias.lower() for t in tree.find_all(exp.Table) if t.alias}
    aliases |= {c.alias.lower() for c in tree.find_all(exp.CTE) if c.alias}
    # 1. "double-quoted" names that are no column/alias: SQLite reads them as string literals
    if schema is not None:
        for col in list(tree.find_all(exp.Column)):
            ident = col.this
            if (isinstance(ident, exp.Identifier) and ident.quoted and not col.table
                    and ident.name.lower() not in columns and ident.name.lower() not in aliases
                    and ident.name.lower() not in tables):
                col.replace(exp.Literal.string(ident.name))
    # 2. LIKE is case-insensitive for ASCII in SQLite
    for like in list(tree.find_all(exp.Like)):
        like.replace(exp.ILike(this=like.this, expression=like.expression, escape=like.args.get("escape")))
    # 3. SQLite affinity for VARCHAR-exposed columns
    if schema is not None:
        _rewrite_affinity(tree, schema)
    # 4. bare columns, DISTINCT ... ORDER BY, tie order of grouped queries; innermost queries first
    selects = list(tree.find_all(exp.Select))
    for sel in reversed(selects):
        _add_group_tiebreak(sel)
        _rewrite_distinct_order(sel)
        _rewrite_bare_columns(sel)
    # quote every identifier: SQLite table names such as SHOW are DuckDB keywords (DuckDB matches quoted
    # identifiers case-insensitively, like SQLite)
    return tree.sql(dialect="duckdb", identify=True)


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
    if isinstance(e, duckdb.OutOfMemoryException):
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


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0] if s else ''}"[:500]


# --------------------------------------------------------------------------- connections

_SQLITE_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_SQLITE_DENIED_FUNCS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "zipfile",
                        "sqlar_compress", "sqlar_uncompress", "shell", "system"}


def _sqlite_authorizer(action, arg1, arg2, dbname, source):
    if action not in _SQLITE_ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _SQLITE_DENIED_FUNCS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class _SqliteConn:
    engine = "sqlite"

    def __init__(self, info: DatabaseInfo):
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
        self.con.set_authorizer(_sqlite_authorizer)
        self.deadline = 0.0

    def run(self, sql: str, timeout_s: float, max_rows: int):
        self.deadline = time.monotonic() + timeout_s
        self.con.set_progress_handler(lambda: 1 if time.monotonic() > self.deadline else 0, 2000)
        try:
            cur = self.con.execute(sql)  # sqlite3 itself refuses more than one statement
            try:
                return _fetch_capped(cur, max_rows)
            finally:
                cur.close()
        finally:
            self.con.set_progress_handler(None, 0)

    def timed_out(self) -> bool:
        return time.monotonic() > self.deadline

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
                except Exception:  # pragma: no cover - an interrupt on a closed connection
                    pass


_WATCHDOG = _Watchdog()


class _DuckConn:
    engine = "duckdb"

    def __init__(self, info: DatabaseInfo, schema: Schema, *, memory_limit: str, threads: int):
        import duckdb

        self._duckdb = duckdb
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
                    expr = _qi(col.name) if dt == "VARCHAR" else f"TRY_CAST({_qi(col.name)} AS {dt})"
                    cols.append(f"{expr} AS {_qi(col.name)}")
                if cols:
                    c.execute(f"CREATE VIEW main.{_qi(t.name)} AS SELECT {', '.join(cols)} FROM src.{_qi(t.name)}")
        else:
            c.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
            c.execute("USE src")
        for stmt in ("SET integer_division = true", "SET scalar_subquery_error_on_multiple_rows = false",
                     "SET old_implicit_casting = true", "SET temp_directory = ''",
                     "SET enable_external_access = false", "SET lock_configuration = true"):
            c.execute(stmt)

    def check_statement(self, sql: str) -> None:
        """The sandbox's own check: DuckDB's parser must see exactly one SELECT."""
        stmts = self.con.extract_statements(sql)
        if len(stmts) != 1:
            raise Rejected(f"sandbox: expected one statement, got {len(stmts)}")
        if stmts[0].type != self._duckdb.StatementType.SELECT:
            raise Rejected(f"sandbox: only SELECT statements may run, not {stmts[0].type.name}")
        # DuckDB's own parse tree: table functions must be on the allowlist, and no file/env function may
        # appear anywhere. (Needed: the sqlite scanner's sqlite_scan/sqlite_attach open files through
        # SQLite itself and ignore enable_external_access.)
        tree = json.loads(self.con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
        if tree.get("error"):
            raise Rejected(f"sandbox: {tree.get('error_message') or 'cannot serialize the statement'}")
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                name = node.get("function_name")
                if isinstance(name, str):
                    if is_forbidden_function(name):
                        raise Rejected(f"sandbox: function {name}() is not allowed")
                if node.get("type") == "TABLE_FUNCTION":
                    fname = str((node.get("function") or {}).get("function_name", "")).lower()
                    if fname not in TABLE_FUNCTION_ALLOWLIST:
                        raise Rejected(f"sandbox: table function {fname}() is not allowed")
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)

    def run(self, sql: str, timeout_s: float, max_rows: int):
        self._timed_out = False
        self.check_statement(sql)

        def fire():
            self._timed_out = True
            self.con.interrupt()

        token = _WATCHDOG.schedule(time.monotonic() + timeout_s, fire)
        try:
            return _fetch_capped(self.con.execute(sql), max_rows)
        finally:
            _WATCHDOG.cancel(token)

    def timed_out(self) -> bool:
        return self._timed_out

    def close(self):
        self.con.close()


# --------------------------------------------------------------------------- the executor


class Executor:
    """Run candidate SQL on registered databases, sandboxed. Thread-safe: each thread gets its own
    connection per database (at most `max_connections` per thread, least recently used closed first)."""

    def __init__(self, registry: DatabaseRegistry, *, engine: Literal["duckdb", "sqlite"] = "duckdb",
                 timeout_s: float = 5.0, max_rows: int = 10_000, preview_rows: int = 20,
                 memory_limit: str = "1GB", threads: int = 1, use_guard: bool = True,
                 max_connections: int = 16):
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
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
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

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
        if self.engine == "sqlite":
            c = _SqliteConn(info)
        else:
            c = _DuckConn(info, self.registry.schema(db_id) if info.kind == "sqlite" else Schema(db_id),
                          memory_limit=self.memory_limit, threads=self.threads)
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
            except Exception:
                pass

    def close(self) -> None:
        """Close every connection this executor opened (in all threads). A later `execute` reopens lazily."""
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except Exception:
                pass
        self._local = threading.local()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- translation
    def prepare(self, db_id: str, sql: str, *, dialect: str = "sqlite") -> str:
        """The SQL this executor's engine would run for `sql` (after the guard and dialect handling).
        Raises Rejected/ParseFailure/UnknownDatabase."""
        tree = guard(sql, dialect) if self.use_guard else None
        if self.engine == "duckdb":
            if dialect == "duckdb":
                return sql
            if tree is None:
                tree = _parse_one(sql, dialect)
            schema = self.registry.schema(db_id) if self.registry.get(db_id).kind == "sqlite" else None
            if dialect == "sqlite":
                return sqlite_to_duckdb(tree, schema)
            return tree.sql(dialect="duckdb")
        if dialect == "sqlite":
            return sql
        if tree is None:
            tree = _parse_one(sql, dialect)
        return tree.sql(dialect="sqlite")

    # -- execution
    def execute(self, db_id: str, sql: str, *, dialect: str = "sqlite") -> ExecutionResult:
        """Run one candidate. Never raises for bad SQL: failures come back with `error_kind` set.
        Raises UnknownDatabase for an unregistered db_id (a caller error, not the candidate's)."""
        t0 = time.perf_counter()

        def fail(kind: ErrorKind, msg: str, executed: str | None = None) -> ExecutionResult:
            return ExecutionResult(ok=False, error_kind=kind, error=msg, engine=self.engine, executed_sql=executed,
                                   elapsed_ms=(time.perf_counter() - t0) * 1000)

        self.registry.get(db_id)  # UnknownDatabase propagates
        try:
            executed = self.prepare(db_id, sql, dialect=dialect)
        except ParseFailure as e:
            return fail(ErrorKind.PARSE, e.reason)
        except Rejected as e:
            return fail(ErrorKind.REJECTED, e.reason)
        except UnknownDatabase:
            raise
        except Exception as e:  # a translation bug must not take the pipeline down
            return fail(ErrorKind.INTERNAL, f"translation failed: {_first_line(e)}")
        try:
            conn = self._conn(db_id)
        except Exception as e:
            return fail(ErrorKind.INTERNAL, f"cannot open database {db_id!r}: {_first_line(e)}", executed)
        try:
            cols, rows = conn.run(executed, self.timeout_s, self.max_rows)
        except Rejected as e:
            return fail(ErrorKind.REJECTED, e.reason, executed)
        except Exception as e:
            timed_out = conn.timed_out()
            kind = (_classify_sqlite if conn.engine == "sqlite" else _classify_duckdb)(e, timed_out)
            if kind in (ErrorKind.INTERNAL, ErrorKind.TIMEOUT):
                self._drop(db_id)  # start clean after an interrupt or a fault
            msg = f"timed out after {self.timeout_s:g} s" if kind == ErrorKind.TIMEOUT else _first_line(e)
            return fail(kind, msg, executed)
        if conn.engine == "duckdb" and dialect == "sqlite":
            cols = sqlite_result_names(sql, cols, lambda name, db_id=db_id: self._declared_name(db_id, name))
        truncated = len(rows) > self.max_rows
        rows = rows[: self.max_rows]
        fp, ofp = fingerprints(rows)
        res = ExecutionResult(
            ok=True, columns=cols, rows=[[_json_preview(v) for v in r] for r in rows[: self.preview_rows]],
            row_count=len(rows), truncated=truncated, elapsed_ms=(time.perf_counter() - t0) * 1000,
            fingerprint=fp, ordered_fingerprint=ofp, engine=self.engine, executed_sql=executed)
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


_NAME_TOKENS = frozenset({"VAR", "IDENTIFIER"})
_LITERALS = frozenset({"STRING", "NUMBER", "NULL", "TRUE", "FALSE"})
_IMPLICIT_ALIAS_AFTER = frozenset({"R_PAREN", "VAR", "IDENTIFIER", "NUMBER", "STRING"})
_STOP_AT = frozenset({"FROM", "WHERE", "GROUP_BY", "HAVING", "ORDER_BY", "LIMIT", "UNION", "INTERSECT", "EXCEPT",
                      "WINDOW", "SEMICOLON"})


def sqlite_result_names(sql: str, names: list[str], declared: Callable[[str], str | None] | None = None) -> list[str]:
    """The column names SQLite would report for `sql`, given the names DuckDB reported for the same columns.

    SQLite names an unaliased expression by its text as written (`count(*)`, `max(age)`, `age + 1`); DuckDB by its
    own rendering (`count_star()`, `max(age)`, `(age + 1)`). Column references and aliases get the same name in both,
    so only the expressions of the first top-level SELECT list are renamed. A `*` in that list, or anything this
    token scan does not follow, leaves DuckDB's names unchanged. `declared(name)` gives a column's declared name
    (case-insensitive lookup) for column references the DuckDB rewrite wrapped (bare columns -> any_value(...))."""
    from sqlglot.dialects.sqlite import SQLite

    try:
        toks = SQLite().tokenize(sql)
    except Exception:  # noqa: BLE001 - naming is cosmetic; never fail a query over it
        return names
    depth, start = 0, None
    for i, t in enumerate(toks):
        kind = t.token_type.name
        if kind == "L_PAREN":
            depth += 1
        elif kind == "R_PAREN":
            depth -= 1
        elif kind == "SELECT" and depth == 0:
            start = i + 1
            break
    if start is None:
        return names
    while start < len(toks) and toks[start].token_type.name in ("DISTINCT", "ALL"):
        start += 1
    items: list[list] = [[]]
    depth = 0
    for t in toks[start:]:
        kind = t.token_type.name
        if depth == 0 and kind in _STOP_AT:
            break
        if kind == "L_PAREN":
            depth += 1
        elif kind == "R_PAREN":
            depth -= 1
        if depth == 0 and kind == "COMMA":
            items.append([])
            continue
        items[-1].append(t)
    if len(items) != len(names) or any(not it for it in items):
        return names
    out = list(names)
    for k, it in enumerate(items):
        kinds = [t.token_type.name for t in it]
        if kinds[-1] == "STAR":
            return names  # `*` / `t.*`: the list does not map one to one onto the result columns
        depth, aliased = 0, False
        for kk in kinds:
            depth += (kk == "L_PAREN") - (kk == "R_PAREN")
            aliased |= depth == 0 and kk == "ALIAS"
        if aliased or (len(kinds) > 1 and kinds[-1] in _NAME_TOKENS and kinds[-2] in _IMPLICIT_ALIAS_AFTER):
            continue  # `expr AS name` / `expr name`: both engines report the alias
        if len(kinds) % 2 == 1 and all(
                (kk == "DOT") if j % 2 else (kk in _NAME_TOKENS or (kk not in _LITERALS and it[j].text.isidentifier()))
                for j, kk in enumerate(kinds)):
            # a column reference: both engines report the declared name, unless the rewrite wrapped the column
            # (bare columns -> any_value(...)); then the declared name looked up, else the name as written
            if names[k].lower() != it[-1].text.lower():
                out[k] = (declared(it[-1].text) if declared else None) or it[-1].text
            continue
        out[k] = sql[it[0].start:it[-1].end + 1]
    return out


def _parse_one(sql: str, dialect: str) -> exp.Expression:
    from sqlbox.guard import _parse

    stmts = _parse(sql, dialect)
    if len(stmts) != 1:
        raise Rejected(f"expected one statement, got {len(stmts)}")
    return stmts[0]
