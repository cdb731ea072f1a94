"""The SQL guard: decides whether candidate SQL is a single read-only query, and canonicalizes it.

`guard(sql)` parses with sqlglot and raises `Rejected` (with the reason) for anything else:
- not exactly one statement, or a statement that is not a query (SELECT / UNION / INTERSECT / EXCEPT,
  optionally under WITH): DDL, DML, ATTACH/DETACH, COPY, PRAGMA, INSTALL/LOAD, SET/RESET, CALL,
  EXPORT/IMPORT, VACUUM, transactions, ... (sqlglot parses unknown statements as `Command`: rejected);
- a data-modifying node anywhere inside (e.g. DML inside a CTE, SELECT ... INTO);
- file or environment access: functions such as read_csv*, read_parquet, read_json*, read_text,
  read_blob, glob, sqlite_scan/sqlite_attach, parquet_scan, getenv, current_setting, load_extension,
  readfile/writefile, duckdb_* / pragma_* introspection functions, query/query_table (run a SQL string);
  table names that look like file paths or URLs (DuckDB's replacement scans would read them);
- table-valued functions other than an allowlist: `unnest`, and `range` / `generate_series` only when
  every argument is a numeric literal and they produce at most `MAX_SERIES_ROWS` rows (unbounded or
  computed bounds are rejected: they could run forever before the row cap applies);
- inputs over `MAX_SQL_CHARS` characters or nested too deeply to parse.

SQL that sqlglot cannot parse raises `ParseFailure` (a subclass of `Rejected`, so callers that only
want "safe or not" catch one type; the executor reports it as a parse error).

The guard is the first layer only: the executor's sandbox (read-only attach, no external access, a
statement-type check, timeouts, a memory limit) holds even for SQL the guard lets through.

`normalize(sql)` returns (canonical SQL, dedup key); `transpile(sql, read, write)` converts dialects.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Collection

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.dialects.sqlite import SQLite
from sqlglot.errors import ErrorLevel, ParseError, TokenError

from sqlbox.functions import NILADIC_KEYWORDS, SAFE_TYPES, safe_names, table_functions

MAX_SQL_CHARS = 20_000
MAX_SERIES_ROWS = 1_000_000


class Rejected(ValueError):
    """The SQL is not a single read-only query (or touches files, settings, extensions); `reason` says why."""

    kind = "rejected"

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ParseFailure(Rejected):
    """sqlglot could not parse the SQL."""

    kind = "parse"


class UnknownRelation(Rejected):
    """The query names a table its database does not have (reported like the engine's "no such table")."""

    kind = "binder"


class _QuietCommandFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # the guard reports these itself
        return "Falling back to parsing as a 'Command'" not in record.getMessage()


logging.getLogger("sqlglot").addFilter(_QuietCommandFallback())

# Statement / clause node types that are never allowed anywhere in a candidate.
_FORBIDDEN_NODES: dict[str, str] = {
    "Insert": "INSERT", "Update": "UPDATE", "Delete": "DELETE", "Merge": "MERGE", "Create": "CREATE",
    "Drop": "DROP", "Alter": "ALTER", "AlterColumn": "ALTER", "TruncateTable": "TRUNCATE",
    "Command": "a non-query command", "Pragma": "PRAGMA", "Set": "SET", "SetItem": "SET",
    "Copy": "COPY", "Attach": "ATTACH", "Detach": "DETACH", "Use": "USE", "Transaction": "a transaction",
    "Commit": "COMMIT", "Rollback": "ROLLBACK", "Install": "INSTALL", "LoadData": "LOAD DATA",
    "Describe": "DESCRIBE", "Summarize": "SUMMARIZE", "Show": "SHOW", "Into": "SELECT ... INTO",
    "Grant": "GRANT", "Revoke": "REVOKE", "Analyze": "ANALYZE", "Cache": "CACHE", "Uncache": "UNCACHE",
    "Refresh": "REFRESH", "Kill": "KILL", "Lock": "a locking clause (FOR UPDATE/SHARE)", "Export": "EXPORT",
    "Hint": "an optimizer hint (/*+ ... */: MySQL's SET_VAR hint changes settings)",
}
_FORBIDDEN_TYPES = tuple((getattr(exp, n), label) for n, label in _FORBIDDEN_NODES.items() if hasattr(exp, n))
_FORBIDDEN_CLASSES = tuple(typ for typ, _ in _FORBIDDEN_TYPES)
# String literals whose escapes sqlglot and an engine read differently: PostgreSQL's E'a\'' (sqlglot's tokenizer
# takes '' as the escape, PostgreSQL the backslash, so the rest of the line is a string to one and code to the other).
_AMBIGUOUS_LITERALS = tuple(getattr(exp, n) for n in ("ByteString",) if hasattr(exp, n))

# The DuckDB engine's second opinion over DuckDB's own parse (`sqlbox.engines.DuckConn.check_statement`):
# functions that read files, the environment or settings, load code, or run SQL strings. The guard itself
# allowlists (`sqlbox.functions`); this list only backs it up on DuckDB's reading of the same query.
_FORBIDDEN_FUNCS = {
    "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema",
    "read_json", "read_json_auto", "read_json_objects", "read_json_objects_auto", "read_ndjson",
    "read_ndjson_auto", "read_ndjson_objects", "read_text", "read_blob", "read_xlsx", "glob", "sqlite_scan",
    "sqlite_attach", "sqlite_query", "getenv", "current_setting", "load_extension", "readfile", "writefile",
    "edit", "fts3_tokenizer", "query", "query_table", "iceberg_scan", "delta_scan", "postgres_scan",
    "postgres_query", "mysql_query", "system", "shell", "pg_read_file", "pg_read_binary_file",
    "lo_import", "lo_export", "json_execute_serialized_sql", "enable_logging", "checkpoint",
    "force_checkpoint", "which_secret", "set_variable", "getvariable", "sniff_csv", "read_xls",
}
_FORBIDDEN_PREFIXES = ("read_", "duckdb_", "pragma_", "sqlite_", "parquet_", "postgres_", "mysql_", "st_read")
_HARMLESS = {"sqlite_version", "sqlite_source_id", "sqlite_compileoption_used"}
_PATHLIKE = re.compile(r"[/\\~:]|\.(csv|tsv|parquet|json|jsonl|ndjson|txt|gz|zst|xlsx?|db|sqlite3?|duckdb)$", re.I)


def _func_name(node: exp.Func) -> str:
    """The function's name as the allowlists compare it: unquoted, case-folded, without a schema qualifier."""
    if isinstance(node, exp.Anonymous):
        this = node.this
        return (this.name if isinstance(this, exp.Identifier) else str(this)).strip().lower()
    if isinstance(node, exp.GenerateSeries):  # and sqlglot's ExplodingGenerateSeries (PostgreSQL's FROM form)
        return "generate_series"
    try:
        return node.sql_name().lower()
    except Exception:  # noqa: BLE001  # pragma: no cover - defensive: every Func has a sql_name
        return type(node).__name__.lower()


def is_forbidden_function(name: str) -> bool:
    """Whether a function (scalar or table) reads files, the environment or settings, or runs SQL strings."""
    n = name.lower()
    return n in _FORBIDDEN_FUNCS or (n.startswith(_FORBIDDEN_PREFIXES) and n not in _HARMLESS)


def _literal_number(e: exp.Expression) -> float | None:
    if isinstance(e, exp.Neg):
        v = _literal_number(e.this)
        return None if v is None else -v
    if isinstance(e, exp.Paren):
        return _literal_number(e.this)
    if isinstance(e, exp.Literal) and not e.is_string:
        try:
            return float(e.this)
        except ValueError:
            return None
    return None


def _check_series(node: exp.Expression, name: str) -> None:
    """range/generate_series in FROM: only with literal bounds and a bounded number of rows."""
    if isinstance(node, exp.GenerateSeries):
        args = [node.args.get("start"), node.args.get("end"), node.args.get("step")]
        args = [a for a in args if a is not None]
    else:
        args = list(node.expressions)
    nums = [_literal_number(a) for a in args]
    if not args or any(v is None for v in nums):
        raise Rejected(f"{name}() is only allowed with numeric literal arguments")
    if len(nums) == 1:
        start, stop, step = 0.0, nums[0], 1.0
    else:
        start, stop = nums[0], nums[1]
        step = nums[2] if len(nums) > 2 else 1.0
    if step == 0:
        raise Rejected(f"{name}() with step 0 never ends")
    n = (stop - start) / step
    if n > MAX_SERIES_ROWS:
        raise Rejected(f"{name}() would produce more than {MAX_SERIES_ROWS} rows")


def parse_statements(sql: str, dialect: str, tokens: list | None = None) -> list[exp.Expression | None]:
    """The statements of `sql` parsed by sqlglot in `dialect`, under the guard's input limits (a string, at
    most MAX_SQL_CHARS, no NUL, bounded nesting). Raises `Rejected` or `ParseFailure`; checks nothing else."""
    if not isinstance(sql, str):
        raise Rejected(f"SQL must be a string, not {type(sql).__name__}")
    if len(sql) > MAX_SQL_CHARS:
        raise Rejected(f"SQL is longer than {MAX_SQL_CHARS} characters")
    if "\x00" in sql:
        raise Rejected("SQL contains a NUL character")
    try:
        d = Dialect.get_or_raise(dialect)
        stmts = d.parser(error_level=ErrorLevel.RAISE).parse(tokens if tokens is not None else d.tokenize(sql), sql)
    except (ParseError, TokenError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ParseFailure(f"cannot parse SQL: {msg}") from None
    except RecursionError:
        raise Rejected("SQL is nested too deeply") from None
    # a trailing comment after the last ';' parses as an empty `Semicolon` statement: not a statement
    return [s for s in stmts if s is not None and not isinstance(s, _EMPTY_STATEMENT)]


_EMPTY_STATEMENT = tuple(getattr(exp, n) for n in ("Semicolon",) if hasattr(exp, n))


def refuse_ambiguous_text(sql: str, dialect: str, tokens: list | None = None) -> list:
    """Refuse text that an engine could read differently from sqlglot, whatever the dialect (a candidate checked
    in one dialect may run on another engine): MySQL/MariaDB executable comments (`/*! ... */`, `/*M! ... */`),
    `--` not followed by white space (a comment to sqlglot, code to MySQL: `--1`), `#` comments, and anything
    between tokens that is neither white space nor a plain comment (nested comments, which PostgreSQL nests and
    others do not). Comments are dropped from what runs anyway (`render`); these are refused so that no reader
    of the candidate can be misled either. Raises `Rejected` (`ParseFailure` when the text does not tokenize);
    returns the tokens."""
    if tokens is None:
        tokens = tokenize(sql, dialect)
    pos = 0
    for tok in tokens:
        _check_gap(sql[pos:tok.start])
        pos = max(pos, tok.end + 1)
    _check_gap(sql[pos:])
    return tokens


def _non_string_quoted(sql: str, tokens) -> frozenset[str]:
    """SQLite: names quoted with backticks or brackets somewhere in the text. SQLite reads an unknown
    "double-quoted" name as a string literal but never a `backticked` or [bracketed] one; sqlglot's tree keeps
    only "quoted", so `render` re-quotes these names with backticks to keep SQLite's reading."""
    out = set()
    for tok in tokens:
        if tok.token_type.name == "IDENTIFIER" and sql[tok.start:tok.start + 1] in ("`", "["):
            out.add(tok.text.lower())
    return frozenset(out)


def tokenize(sql: str, dialect: str) -> list:
    """sqlglot's tokens of `sql` in `dialect` (under the input limits of `parse_statements`); `ParseFailure` when
    the text does not tokenize."""
    if not isinstance(sql, str):
        raise Rejected(f"SQL must be a string, not {type(sql).__name__}")
    if len(sql) > MAX_SQL_CHARS:
        raise Rejected(f"SQL is longer than {MAX_SQL_CHARS} characters")
    try:
        return Dialect.get_or_raise(dialect).tokenize(sql)
    except (ParseError, TokenError) as e:
        raise ParseFailure(f"cannot parse SQL: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _check_gap(gap: str) -> None:
    i, n = 0, len(gap)
    while i < n:
        ch = gap[i]
        if ch.isspace():
            i += 1
        elif gap.startswith("--", i):
            if i + 2 < n and not gap[i + 2].isspace():
                raise Rejected("'--' must be followed by white space: MySQL reads '--x' as code, not a comment")
            j = gap.find("\n", i)
            i = n if j < 0 else j + 1
        elif gap.startswith("/*", i):
            if gap.startswith(("/*!", "/*M!", "/*m!"), i):
                raise Rejected("executable comments (/*! ... */) are not allowed: MySQL runs their text")
            if gap.startswith("/*+", i):
                raise Rejected("optimizer hints (/*+ ... */) are not allowed: MySQL's SET_VAR hint changes settings")
            j = gap.find("*/", i + 2)
            if j < 0:
                raise Rejected("unterminated comment")
            if "/*" in gap[i + 2:j]:
                raise Rejected("nested comments are not allowed: engines disagree on where they end")
            i = j + 2
        elif ch == "#":
            raise Rejected("'#' comments are not allowed: engines disagree on whether '#' starts a comment")
        else:
            raise Rejected(f"unexpected text between tokens ({gap[i:i + 20]!r}): engines could read it differently")


def render(tree: exp.Expression, dialect: str) -> str:
    """The SQL that runs for a checked tree: sqlglot's rendering in `dialect`, without comments. Bare identifiers
    that an engine would evaluate as a function (`user`, `current_role`, ...: PostgreSQL reads `SELECT user` as
    the session's account) are quoted, so they stay the column or table they were checked as."""
    def quote_niladic(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Identifier) and not node.quoted and node.name.lower() in NILADIC_KEYWORDS:
            return exp.Identifier(this=node.name.lower(), quoted=True)
        return node

    if dialect not in ("sqlite", "duckdb") and any(
            not i.quoted and i.name.lower() in NILADIC_KEYWORDS for i in tree.find_all(exp.Identifier)):
        tree = tree.transform(quote_niladic)
    return tree.sql(dialect=_SQLite if dialect == "sqlite" else dialect, comments=False)


class _SQLite(SQLite):
    """sqlglot's SQLite, rendering a CTE's column list (`WITH c(x) AS ...`), which SQLite has and sqlglot's
    SQLite generator drops (it knows SQLite has no column list on a FROM alias), and names the text quoted with
    backticks or brackets in backticks (see `_non_string_quoted`)."""

    class Generator(SQLite.Generator):
        def identifier_sql(self, expression: exp.Identifier) -> str:
            if expression.quoted and expression.meta.get("backtick"):
                return "`" + expression.this.replace("`", "``") + "`"
            return super().identifier_sql(expression)

        def tablealias_sql(self, expression: exp.TableAlias) -> str:
            if isinstance(expression.parent, exp.CTE) and expression.columns:
                cols = self.expressions(expression, key="columns", flat=True)
                return f"{self.sql(expression, 'this')}({cols})"
            return super().tablealias_sql(expression)


def parse_one(sql: str, dialect: str) -> exp.Expression:
    """`parse_statements` for exactly one statement (else `Rejected`); no read-only check (that is `guard`)."""
    stmts = parse_statements(sql, dialect)
    if len(stmts) != 1:
        raise Rejected(f"expected one statement, got {len(stmts)}")
    return stmts[0]


def guard(sql: str, dialect: str = "sqlite", relations: Collection[str] | None = None) -> exp.Expression:
    """Return the checked tree if `sql` is a single read-only query; raise `Rejected` (or its subclass
    `ParseFailure`) with the reason otherwise. What runs is rendered from the returned tree (`render`), never
    the text. The checks, in order:
    - text an engine could read differently from sqlglot is refused before parsing (`refuse_ambiguous_text`);
    - exactly one statement, a query, with no data-modifying, locking, INTO, SET, ... node anywhere;
    - every function call is on `sqlbox.functions`' allowlist for `dialect` (names compared unquoted,
      case-folded and without a schema qualifier; a qualified allowed call is made unqualified);
    - table functions: only the dialect's allowlisted ones, with bounded literal arguments; no table name that
      looks like a file path;
    - no session or system variables (`@x`, `@@x`), no parameters;
    - `relations`: when given, the only tables the query may name besides its own CTEs: nothing in a
      catalog (`information_schema.*`, `pg_catalog.*`, `mysql.*`, `sqlite_master`, `duckdb_tables`, ...),
      no other database's or schema's table, no table the database does not have."""
    tokens = tokenize(sql, dialect)
    stmts = parse_statements(sql, dialect, tokens)
    if not stmts:
        raise Rejected("empty SQL: no statement")
    if len(stmts) > 1:
        raise Rejected(f"multiple statements ({len(stmts)}); exactly one query is allowed")
    root = stmts[0]
    for node in root.walk():
        if isinstance(node, _FORBIDDEN_CLASSES):
            label = next(lb for typ, lb in _FORBIDDEN_TYPES if isinstance(node, typ))
            raise Rejected(f"{label} is not allowed: only read-only queries may run")
        if isinstance(node, exp.Var) and str(node.this).startswith("@"):
            raise Rejected("session or system variables (@...) are not allowed")
        if isinstance(node, _AMBIGUOUS_LITERALS):
            raise Rejected("escape-string literals (E'...') are not allowed: engines disagree on their escapes "
                           "(write the string as a plain '...' literal)")
        if isinstance(node, exp.Parameter | exp.SessionParameter | exp.Placeholder) or (
                isinstance(node, exp.Identifier) and not node.quoted and node.name[:1] in ("$", "@", ":", "?")):
            raise Rejected("session or system variables and parameters (@..., $1, ?) are not allowed")
    inner = root
    while isinstance(inner, exp.Subquery | exp.Paren):
        inner = inner.this
    if not isinstance(inner, exp.Query):
        raise Rejected(f"not a query ({type(inner).__name__}); only SELECT queries may run")
    for key in ("into", "locks"):
        if root.args.get(key):
            raise Rejected(f"{key.upper()} clause is not allowed: only read-only queries may run")
    refuse_ambiguous_text(sql, dialect, tokens)
    if dialect == "sqlite":
        names = _non_string_quoted(sql, tokens)
        if names:
            for ident in root.find_all(exp.Identifier):
                if ident.quoted and ident.name.lower() in names:
                    ident.meta["backtick"] = True
    for sel in root.find_all(exp.Select):
        if not sel.expressions:
            raise ParseFailure("cannot parse SQL: SELECT without a column list")
        if sel.args.get("into") or sel.args.get("locks"):
            raise Rejected("SELECT ... INTO / FOR UPDATE is not allowed: only read-only queries may run")
    table_funcs = table_functions(dialect)
    for node in list(root.walk()):
        if isinstance(node, exp.Table):
            src = node.this
            if isinstance(src, exp.Func) or isinstance(src, exp.Unnest):
                name = _func_name(src) if isinstance(src, exp.Func) else "unnest"
                if name not in table_funcs or isinstance(node.args.get("db"), exp.Identifier):
                    shown = ", ".join(sorted(table_funcs)) or "none"
                    raise Rejected(f"table function {name}() is not allowed (allowed on {dialect}: {shown})")
                if name != "unnest":
                    _check_series(src, name)
            elif isinstance(src, exp.Literal) or (isinstance(src, exp.Identifier) and _PATHLIKE.search(src.name)):
                raise Rejected(f"table name {node.name!r} looks like a file path; only database tables may be read")
    _check_functions(root, dialect)
    if relations is not None:
        check_relations(root, relations)
    return root


def _is_table_source(node: exp.Expression) -> bool:
    parent = node.parent
    return isinstance(parent, exp.Table) and parent.this is node or (
        isinstance(node, exp.Unnest) and isinstance(parent, exp.From | exp.Join))


def _check_functions(root: exp.Expression, dialect: str) -> None:
    """Every function call on the allowlist of `sqlbox.functions` for `dialect`; a schema-qualified call of an
    allowed name becomes unqualified (the engine's built-in)."""
    names = safe_names(dialect)
    for node in list(root.find_all(exp.Func)):
        if _is_table_source(node):
            continue  # checked against the table-function list
        if isinstance(node, exp.Anonymous):
            name = _func_name(node)
            if name not in names:
                raise Rejected(f"function {name}() is not allowed: a query may call only the scalar, aggregate and "
                               f"window functions of analytical queries ({dialect} allowlist)")
        elif type(node).__name__ not in SAFE_TYPES:
            raise Rejected(f"function {_func_name(node)}() is not allowed: a query may call only the scalar, "
                           f"aggregate and window functions of analytical queries")
        parent = node.parent
        if isinstance(parent, exp.Dot) and parent.expression is node:
            parent.replace(node)  # pg_catalog.lower(x) -> lower(x): the built-in, not a same-named function
    for col in root.find_all(exp.Column):
        # `sch.fn(...)` parsed as a column path in some dialects: a call through a qualifier is never allowed
        if isinstance(col.this, exp.Func):
            raise Rejected(f"function {_func_name(col.this)}() may not be qualified")


def check_relations(root: exp.Expression, relations: Collection[str]) -> None:
    """Raise `Rejected` unless every table `root` names is one of `relations` (case-insensitive) or one of
    its CTEs, unqualified; table functions are checked by `guard`."""
    allowed = {r.lower() for r in relations}
    ctes = {c.alias_or_name.lower() for c in root.find_all(exp.CTE) if c.alias_or_name}
    for node in root.find_all(exp.Table):
        src = node.this
        if not isinstance(src, exp.Identifier):
            continue  # a table function (allowlisted by guard) or unnest
        qual = ".".join(p for p in (node.catalog, node.db) if p)
        name = src.name
        if qual:
            if f"{qual}.{name}".lower() in allowed:
                continue  # a registered table outside the default schema (a server's include=schema.table)
            raise Rejected(f"table {qual}.{name} is not allowed: a query may read only its database's own tables "
                           f"(no catalog, no other schema or database)")
        if name.lower() not in allowed and name.lower() not in ctes:
            shown = ", ".join(sorted(relations)[:30]) + (" ..." if len(relations) > 30 else "")
            raise UnknownRelation(f"no such table: {name} (a query may read only its database's tables: {shown})")


def analyze(sql: str, dialect: str = "sqlite") -> dict:
    """The guard's verdict and the canonical form in one parse-heavy call (what the planner's candidate pool
    needs; run in a sandbox worker by `Executor.analyze`): {"rejected": reason | None, "parse_failed": bool,
    "normalized": str | None, "dedup_key": str | None}."""
    out: dict = {"rejected": None, "parse_failed": False, "normalized": None, "dedup_key": None}
    try:
        guard(sql, dialect)
    except ParseFailure:
        out["parse_failed"] = True
    except Rejected as e:
        out["rejected"] = str(e) or "rejected by the SQL guard"
        return out
    except Exception:  # noqa: BLE001 - sqlglot failed in an unexpected way: the executor reports it
        out["parse_failed"] = True
    try:
        out["normalized"], out["dedup_key"] = normalize(sql, dialect)
    except Exception:  # noqa: BLE001 - the dedup key is best effort: a candidate whose normalization fails keeps none
        pass
    return out


# --------------------------------------------------------------------------- canonical forms


def _strip_table_aliases(tree: exp.Expression) -> exp.Expression:
    """Replace table aliases by table names in each SELECT where every table appears once."""
    for select in list(tree.find_all(exp.Select)):
        tables = [t for t in select.find_all(exp.Table)
                  if t.parent_select is select and isinstance(t.this, exp.Identifier)]
        names = [t.name.lower() for t in tables]
        if not tables or len(set(names)) != len(names):
            continue
        mapping: dict[str, str] = {}
        for t in tables:
            if t.alias:
                mapping[t.alias.lower()] = t.name
                t.set("alias", None)
        single = tables[0].name.lower() if len(tables) == 1 else None
        for col in select.find_all(exp.Column):
            q = col.table
            if q and q.lower() in mapping:
                col.set("table", exp.to_identifier(mapping[q.lower()]))
            if single and col.table and col.table.lower() == single and col.parent_select is select:
                col.set("table", None)  # one table: the qualifier adds nothing
    return tree


def _lower_identifiers(tree: exp.Expression) -> exp.Expression:
    def fn(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Identifier):
            return exp.Identifier(this=node.name.lower(), quoted=node.args.get("quoted", False))
        return node

    return tree.transform(fn)


def normalize(sql: str, dialect: str = "sqlite") -> tuple[str, str]:
    """(canonical SQL, dedup key). The canonical form is sqlglot's formatting in `dialect` (keywords
    upper-case, single spaces, no trailing semicolon). The dedup key is a SHA-256 prefix of a further
    reduced form: identifiers lower-cased (SQLite identifiers are case-insensitive), table aliases
    replaced by table names where each table appears once, comments dropped; string literals keep their
    case. SQL that does not parse gets its whitespace-collapsed text as canonical form. Never raises for
    string input."""
    text = sql.strip().rstrip(";").strip()
    try:
        stmts = parse_statements(text, dialect)
    except Rejected:
        stmts = []
    if len(stmts) != 1:
        canon = " ".join(text.split())
        return canon, hashlib.sha256(("raw:" + canon).encode()).hexdigest()[:24]
    tree = stmts[0]
    canon = tree.sql(dialect=dialect)
    try:
        reduced = _lower_identifiers(_strip_table_aliases(tree.copy())).sql(dialect=dialect, comments=False)
    except Exception:  # noqa: BLE001 - defensive: a reduction bug must not lose the candidate
        reduced = canon
    return canon, hashlib.sha256(("sql:" + reduced).encode()).hexdigest()[:24]


def transpile(sql: str, read: str = "sqlite", write: str = "duckdb") -> str:
    """Translate one statement between dialects with sqlglot. Raises `ParseFailure` when it does not parse."""
    try:
        out = sqlglot.transpile(sql, read=read, write=write, error_level=ErrorLevel.RAISE)
    except (ParseError, TokenError) as e:
        raise ParseFailure(f"cannot parse SQL: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if len(out) != 1:
        raise Rejected(f"expected one statement, got {len(out)}")
    return out[0]
