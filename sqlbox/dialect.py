"""SQLite semantics on DuckDB (the dialect gap; measured by `python -m benchmarks.dialect_agreement`).

- each SQLite table is exposed as a view that reads the file with `sqlite_all_varchar` and casts every
  column to the DuckDB type of what it actually holds (`duck_type` of `Column.storage`): only integers ->
  BIGINT, integers/reals -> DOUBLE, any text -> VARCHAR (SQLite's affinity lets an INTEGER column hold 'F'),
  blobs -> BLOB; dates stay text, as in SQLite (the views are created by `sqlbox.engines.DuckConn`);
- `integer_division=true` (SQLite `/` on integers truncates), `scalar_subquery_error_on_multiple_rows=false`
  (SQLite takes the first row), `old_implicit_casting=true` (SQLite compares text with numbers) (set by the
  engine);
- the query is rewritten (`sqlite_to_duckdb`): sqlglot transpile sqlite -> duckdb; double-quoted strings that
  name no column become string literals (SQLite's fallback); `x LIKE p` -> `lower(x) LIKE lower(p)` (SQLite LIKE
  ignores ASCII case; DuckDB's ILIKE backtracks exponentially on some patterns, its LIKE does not);
  comparisons and sums over VARCHAR-exposed columns follow SQLite's affinity rules; bare columns of aggregate
  queries (not in GROUP BY) -> `arg_max_null/arg_min_null(col, <the min/max argument>)` when the query has a
  min()/max() (SQLite takes the bare value from that row), else `any_value(col)`; `SELECT DISTINCT ... ORDER BY
  <expr not selected>` orders by `min(expr)` over a GROUP BY of the selected columns; tied rows of grouped
  queries are ordered by the group keys;
- result columns are named as SQLite names them (`sqlite_result_names`): an unaliased expression by its text as
  written (`count(*)`, not DuckDB's `count_star()`), a column by its declared name; on the 1034 Spider dev gold
  queries both engines report identical names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlglot import exp

from sqlbox.schema import Schema


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


def quote_ident(name: str) -> str:
    """A double-quoted identifier (embedded quotes doubled)."""
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


def rewrite_bare_columns(select: exp.Select) -> None:
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


def rewrite_distinct_order(select: exp.Select) -> None:
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


def add_group_tiebreak(select: exp.Select) -> None:
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
    # 2. LIKE is case-insensitive for ASCII in SQLite: lower(x) LIKE lower(p). (Not ILIKE: DuckDB's ILIKE
    # matcher backtracks exponentially on patterns such as '%a%a...%b', where its LIKE stays linear.)
    for like in list(tree.find_all(exp.Like)):
        like.replace(exp.Like(this=exp.Lower(this=like.this), expression=exp.Lower(this=like.expression),
                              escape=like.args.get("escape")))
    # 3. SQLite affinity for VARCHAR-exposed columns
    if schema is not None:
        _rewrite_affinity(tree, schema)
    # 4. bare columns, DISTINCT ... ORDER BY, tie order of grouped queries; innermost queries first
    selects = list(tree.find_all(exp.Select))
    for sel in reversed(selects):
        add_group_tiebreak(sel)
        rewrite_distinct_order(sel)
        rewrite_bare_columns(sel)
    # quote every identifier: SQLite table names such as SHOW are DuckDB keywords (DuckDB matches quoted
    # identifiers case-insensitively, like SQLite)
    return tree.sql(dialect="duckdb", identify=True, comments=False)



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

