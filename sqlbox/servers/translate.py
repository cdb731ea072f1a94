"""What runs on a server for a candidate: `prepare_sql` guards the candidate in its dialect against the database's
own tables (`sqlbox.guard`, allowlists of `sqlbox.functions`), rewrites the tree for the server
(`sqlite_to_server`: the SQLite habits sqlglot's transpile keeps), renders it, and guards that text again in the
server's own dialect; only the rendering of that second checked tree runs."""

from __future__ import annotations

from sqlglot import exp

from sqlbox.dialect import add_group_tiebreak, rewrite_bare_columns, rewrite_distinct_order
from sqlbox.guard import Rejected, guard, parse_statements, render
from sqlbox.servers.targets import ServerTarget


def sqlite_to_server(tree, dialect: str, schema=None) -> str:
    """SQLite SQL for a server, with the SQLite habits sqlglot's transpile keeps: "double-quoted" names that
    are no column, alias or table become string literals (SQLite's fallback); LIKE ignores ASCII case
    (ILIKE on PostgreSQL; MySQL's default collations already do); a derived table without an alias gets
    one (PostgreSQL and MySQL require it); `SELECT DISTINCT ... ORDER BY <expr not selected>`, the tie order of
    grouped queries and (PostgreSQL) bare columns of aggregate queries as in `sqlbox.dialect` (SQLite's
    behaviour)."""
    tree = tree.copy()
    if schema is not None:
        columns = schema.column_names()
        tables = {t.lower().rsplit(".", 1)[-1] for t in schema.table_names()}
        aliases = {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
        aliases |= {t.alias.lower() for t in tree.find_all(exp.Table) if t.alias}
        aliases |= {c.alias.lower() for c in tree.find_all(exp.CTE) if c.alias}
        for col in list(tree.find_all(exp.Column)):
            ident = col.this
            if (isinstance(ident, exp.Identifier) and ident.quoted and not col.table
                    and ident.name.lower() not in columns | aliases | tables):
                col.replace(exp.Literal.string(ident.name))
    if dialect == "postgres":
        for like in list(tree.find_all(exp.Like)):
            like.replace(exp.ILike(this=like.this, expression=like.expression, escape=like.args.get("escape")))
    for i, sub in enumerate(list(tree.find_all(exp.Subquery))):
        if isinstance(sub.parent, exp.From | exp.Join) and not sub.alias:
            sub.set("alias", exp.TableAlias(this=exp.to_identifier(f"_t{i}")))
    for sel in reversed(list(tree.find_all(exp.Select))):
        add_group_tiebreak(sel)
        rewrite_distinct_order(sel)
        if dialect == "postgres":  # MySQL/MariaDB accept bare columns (no ONLY_FULL_GROUP_BY by default)
            rewrite_bare_columns(sel)
    if dialect == "postgres":
        tree = tree.transform(_pg_bare_column)
    return render(tree, dialect)


def _pg_bare_column(node):
    """`sqlbox.dialect`'s bare-column aggregates in PostgreSQL: the value from the row with the max/min
    argument (SQLite's rule) through ordered array_agg; any other bare column -> min()."""
    if isinstance(node, exp.Anonymous) and str(node.this).upper() in ("ARG_MAX_NULL", "ARG_MIN_NULL"):
        col, arg = node.expressions
        order = "DESC NULLS LAST" if str(node.this).upper() == "ARG_MAX_NULL" else "ASC NULLS LAST"
        return exp.maybe_parse(f"(ARRAY_AGG({col.sql('postgres')} ORDER BY {arg.sql('postgres')} {order}))[1]",
                               dialect="postgres")
    if isinstance(node, exp.AnyValue):
        return exp.Min(this=node.this)
    return node


def prepare_sql(sql: str, dialect: str, target: ServerTarget, *, use_guard: bool = True, schema=None) -> str:
    """The SQL to run on a server for a candidate written in `dialect`, rendered from checked trees only:
    1. the candidate is guarded in `dialect` against the database's own tables (`schema`: a callable returning
       the database's Schema; without one nothing runs, since the relation allowlist could not be checked);
    2. the tree is rewritten for the server (SQLite through `sqlite_to_server`, else sqlglot's transpile of the
       tree) and rendered without comments (`sqlbox.guard.render`);
    3. that text is guarded again in the server's own dialect (the allowlists as the server's dialect reads
       them) and the rendering of this second tree is what runs.
    Raises `sqlbox.guard.Rejected` / `ParseFailure`. `use_guard=False` (tests of the server's own limits only)
    skips the checks and runs the text as translated."""
    sch = schema() if schema is not None else None
    if not use_guard:
        if dialect == target.dialect:
            return sql
        stmts = parse_statements(sql, dialect)
        if len(stmts) != 1:
            raise Rejected(f"expected one statement, got {len(stmts)}")
        return sqlite_to_server(stmts[0], target.dialect, sch) if dialect == "sqlite" else \
            stmts[0].sql(dialect=target.dialect)
    if sch is None:
        raise Rejected("the database's tables are not known (its schema could not be read), so no query may run "
                       "on it")
    relations = sch.table_names()
    tree = guard(sql, dialect, relations)
    if dialect == "sqlite":
        text = sqlite_to_server(tree, target.dialect, sch)
    else:
        text = render(tree, target.dialect)
    return render(guard(text, target.dialect, relations), target.dialect)
