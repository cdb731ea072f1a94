"""A SQL grammar per database, generated from its schema, for schema-constrained decoding.

`sql_grammar(schema)` returns an EBNF grammar (the GBNF-style dialect xgrammar and vLLM's
`guided_grammar` / `structured_outputs.grammar` read) of the SQLite SELECT dialect that Spider and BIRD
use, in which:

- table and column names are terminals taken from the schema (case-insensitive, bare when they are
  simple identifiers, or quoted with "", `` or []), so a query can only name tables and columns that
  exist; `rowid` is accepted as a column;
- table aliases (`singer AS T1`, `singer T1`), output aliases (`count(*) AS cnt`: AS is required, since a bare
  alias would let any word follow any expression and makes the grammar's token mask twice as slow to compute),
  CTE and subquery names are free identifiers; a qualifier (`T1.`) is a table name or a short alias (at most 4 characters, as T1, s, sic),
  so a long made-up name cannot pass as one; an unqualified name in ORDER BY / HAVING
  may also be an output alias (a free identifier there) - the only place a free name stands for a column;
- literals are free: numbers, '...' strings and "..." strings (SQLite reads a "..." that names no
  column as a string, as much of Spider's gold SQL does);
- a run of whitespace is at most 16 characters, and `T1.name` has no space around its dot (a small model
  otherwise drifts into endless tabs or newlines, which the grammar would accept);
- no "--" outside a string or a quoted name: a minus (binary or unary) is never directly followed by a unary
  minus (`a - -b` and `- -b` need their space; `a--b` is a comment in SQL, and "\n--" is the step boundary of
  `step_grammar`); the `_nm` rules are their namesakes that do not start with "-";
- functions are SQLite's core, aggregate, date and math functions (`FUNCTIONS`), plus CAST, CASE, EXISTS,
  IN, BETWEEN, LIKE/GLOB, IS [NOT], window functions with OVER (...), WITH (CTEs), compound queries.

`wrap="fence"` wraps the query as the generator prompt asks the model to answer (```sql ... ```), so
the grammar's end is the answer's end and sampling stops there; `wrap="none"` is the bare query (used to
measure coverage and by servers that get the bare grammar). `accepts(grammar, sql)` checks a string with
xgrammar itself (the engine that enforces the grammar while sampling).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from sqlbox.schema import Schema

GRAMMAR_VERSION = "sqlite-v3"

_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# SQLite functions (core, aggregate, date/time, math; a few common extensions SQLite builds ship).
FUNCTIONS = (
    "abs", "avg", "char", "coalesce", "count", "date", "datetime", "glob", "group_concat", "hex", "ifnull", "iif",
    "instr", "julianday", "length", "like", "likelihood", "lower", "ltrim", "max", "min", "nullif", "printf",
    "format", "quote", "random", "replace", "round", "rtrim", "sign", "soundex", "strftime", "substr", "substring",
    "sum", "time", "total", "trim", "typeof", "unicode", "unixepoch", "upper", "zeroblob", "string_agg",
    "acos", "asin", "atan", "atan2", "ceil", "ceiling", "cos", "degrees", "exp", "floor", "ln", "log", "log10",
    "log2", "mod", "pi", "pow", "power", "radians", "sin", "sqrt", "tan", "trunc",
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
    "last_value", "nth_value",
)

# Rules that do not depend on the schema. `sp` is optional white space, `ws` mandatory white space.
_STATIC = r"""
query ::= with_clause? select_stmt
select_stmt ::= compound order_by? limit_clause?
with_clause ::= kw_with ws (kw_recursive ws)? cte (sp "," sp cte)* ws
cte ::= ident (sp "(" sp ident (sp "," sp ident)* sp ")")? ws kw_as ws "(" sp query sp ")"
compound ::= select_core (ws compound_op ws select_core)*
compound_op ::= kw_union (ws kw_all)? | kw_intersect | kw_except
select_core ::= kw_select (ws (kw_distinct | kw_all))? sp result_list from_clause? where_clause? group_clause?
result_list ::= result_col (sp "," sp result_col)*
result_col ::= "*" | qualifier "." "*" | expr (ws kw_as ws out_alias)?
out_alias ::= ident | dq_string | sq_string
from_clause ::= ws kw_from ws source (join_part)*
source ::= table_source | "(" sp query sp ")" (ws (kw_as ws)? ident)?
table_source ::= table (ws (kw_as ws)? ident)?
join_part ::= sp "," sp source | ws join_op ws source join_cond?
join_cond ::= ws kw_on ws expr | ws kw_using sp "(" sp column (sp "," sp column)* sp ")"
join_op ::= (kw_natural ws)? ((kw_left | kw_right | kw_full) (ws kw_outer)? ws | kw_inner ws | kw_cross ws)? kw_join
where_clause ::= ws kw_where ws expr
group_clause ::= ws kw_group ws kw_by ws expr_list (ws kw_having ws expr_or_alias)?
order_by ::= ws kw_order ws kw_by ws order_term (sp "," sp order_term)*
order_term ::= expr_or_alias (ws (kw_asc | kw_desc))? (ws kw_nulls ws (kw_first | kw_last))?
limit_clause ::= ws kw_limit ws expr ((ws kw_offset ws | sp "," sp) expr)?
expr_list ::= expr (sp "," sp expr)*
expr_or_alias ::= expr | ident
expr ::= and_expr (sp kw_or ws and_expr)*
and_expr ::= not_expr (sp kw_and ws not_expr)*
not_expr ::= (kw_not ws)* predicate
predicate ::= add_expr predicate_tail*
predicate_tail ::= sp cmp_op sp add_expr | ws (kw_not ws)? kw_in sp in_rhs | ws (kw_not ws)? like_op ws add_expr (ws kw_escape ws add_expr)? | ws (kw_not ws)? kw_between ws add_expr ws kw_and ws add_expr | ws kw_is ws (kw_not ws)? (kw_distinct ws kw_from ws)? add_expr | ws kw_isnull | ws kw_notnull | ws kw_not ws kw_null
cmp_op ::= "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
like_op ::= kw_like | kw_glob
in_rhs ::= "(" sp (query | expr_list)? sp ")" | table
add_expr ::= mul_expr (sp add_op sp mul_expr | sp "-" minus_mul)*
add_op ::= "+" | "||" | "&" | "|" | "<<" | ">>"
minus_mul ::= ws mul_expr | mul_expr_nm
mul_expr ::= unary (sp mul_op sp unary)*
mul_expr_nm ::= unary_nm (sp mul_op sp unary)*
mul_op ::= "*" | "/" | "%"
unary ::= "-" minus_unary | unary_nm
unary_nm ::= ("+" | "~") sp unary | primary (ws kw_collate ws ident)?
minus_unary ::= ws unary | unary_nm
primary ::= literal | column_ref | function_call | cast_expr | case_expr | exists_expr | "(" sp query sp ")" | "(" sp expr_list sp ")"
exists_expr ::= kw_exists sp "(" sp query sp ")"
cast_expr ::= kw_cast sp "(" sp expr ws kw_as ws type_name sp ")"
type_name ::= [A-Za-z]+ (ws [A-Za-z]+)* (sp "(" sp number (sp "," sp number)? sp ")")?
case_expr ::= kw_case (ws expr)? (ws kw_when ws expr ws kw_then ws expr)+ (ws kw_else ws expr)? ws kw_end
function_call ::= function sp "(" sp ((kw_distinct ws)? expr_list (ws kw_order ws kw_by ws order_term (sp "," sp order_term)*)? | "*")? sp ")" (sp filter_clause)? (sp over_clause)?
filter_clause ::= kw_filter sp "(" sp kw_where ws expr sp ")"
over_clause ::= kw_over sp "(" sp (kw_partition ws kw_by ws expr_list)? (sp kw_order ws kw_by ws order_term (sp "," sp order_term)*)? sp ")"
column_ref ::= (qualifier ".")? column
qualifier ::= table | alias_name
alias_name ::= [A-Za-z_] [A-Za-z0-9_]? [A-Za-z0-9_]? [A-Za-z0-9_]?
literal ::= number | sq_string | dq_string | kw_null | kw_true | kw_false | kw_current_date | kw_current_time | kw_current_timestamp
number ::= [0-9]+ ("." [0-9]*)? ([eE] [+-]? [0-9]+)? | "." [0-9]+ ([eE] [+-]? [0-9]+)?
sq_string ::= "'" ([^'] | "''")* "'"
dq_string ::= "\"" ([^"] | "\"\"")* "\""
ident ::= [A-Za-z_] [A-Za-z0-9_]* | "`" [^`]+ "`" | "[" [^\]]+ "]" | "\"" [^"]+ "\""
ws ::= [ \t\r\n]{1,16}
sp ::= [ \t\r\n]{0,16}
"""

_KEYWORDS = (
    "with", "recursive", "as", "union", "all", "intersect", "except", "select", "distinct", "from", "natural",
    "left", "right", "full", "outer", "inner", "cross", "join", "on", "using", "where", "group", "by", "having",
    "order", "asc", "desc", "nulls", "first", "last", "limit", "offset", "or", "and", "not", "in", "escape",
    "between", "is", "isnull", "notnull", "null", "like", "glob", "collate", "exists", "cast", "case", "when",
    "then", "else", "end", "filter", "over", "partition", "true", "false", "current_date", "current_time",
    "current_timestamp",
)


def _ci(word: str) -> str:
    """A case-insensitive EBNF terminal for `word`."""
    parts = []
    for ch in word:
        if ch.isalpha() and ch.lower() != ch.upper():
            parts.append(f"[{ch.upper()}{ch.lower()}]")
        else:
            parts.append(_lit(ch))
    return " ".join(parts) if parts else '""'


def _lit(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _name_alternatives(names: Iterable[str]) -> str:
    """Alternatives for schema names: bare (case-insensitive, simple names only) and quoted forms."""
    alts: list[str] = []
    seen: set[str] = set()
    for name in names:
        low = name.lower()
        if low in seen:
            continue
        seen.add(low)
        if _SIMPLE.match(name):
            alts.append(_ci(name))
        alts.append('"\\"" ' + _ci(name.replace('"', '""')) + ' "\\""')
        alts.append('"`" ' + _ci(name) + ' "`"')
        if "]" not in name:
            alts.append('"[" ' + _ci(name) + ' "]"')
    return " | ".join(f"({a})" for a in alts) if alts else '"\\"\\""'


def sql_grammar(schema: Schema, *, wrap: str = "fence") -> str:
    """The EBNF grammar of SELECT queries over `schema` (see the module docstring). `wrap`: "fence" (the
    answer is one ```sql code block, then the end) or "none" (the bare query, an optional `;`)."""
    if wrap not in ("fence", "none"):
        raise ValueError(f"wrap must be 'fence' or 'none', not {wrap!r}")
    if wrap == "fence":
        root = 'root ::= "```sql\\n" query sp (";" sp)? "\\n```"'
    else:
        root = 'root ::= sp query sp (";" sp)?'
    return _grammar([root], schema)


STEP_EXPECT = ("first", "first_cte", "cte", "final", "any")


def step_grammar(schema: Schema, *, expect: str = "any", names: Iterable[str] = (),
                 columns: Iterable[str] | Mapping[str, Iterable[str]] = (), opener: str = "-- ",
                 comment: bool = True, comma: bool | None = None) -> str:
    """The EBNF of the rest of ONE step of a query written as CTE steps (`sqlbox.steps`), after the forced opener
    (`opener`: "-- ", or "--", when the grammar starts with the comment's space): the comment's text (one line, no
    backtick, not starting with white space), a newline, then the step's body:

    - expect "first" (no step yet): `WITH <cte>`, or a whole one-step query;
    - "first_cte": `WITH <cte>` (the first step of several);
    - "cte" (the previous CTE ended with a comma): `<cte>`;
    - "final" (the previous CTE had none): the final query (no WITH: the chain holds it);
    - "any": a CTE step or the final query.

    `<cte>` is `name AS (query)` (the `cte` rule of the schema grammar, one source for both); a CTE step ends after
    its `)` or comma (the grammar's end: only EOS may follow), a final step after a newline and ``` (the answer's
    closing fence, where the step stop "```" ends it too). `comma`: a CTE step's trailing comma: None optional,
    True required (another CTE follows, so the step is a CTE: no final query), False forbidden (the final query
    follows; the step may still be the final query where `expect` allows it). `comment=False`: the body alone, for
    a prefix that already ends with the step's comment line and its newline (`opener` is then unused). `names`:
    the earlier steps' names, usable as tables; `columns`: their output columns, usable as column names, besides
    the schema's (names, or a mapping of step name to its columns as `sqlbox.steps.StepState.columns`)."""
    if expect not in STEP_EXPECT:
        raise ValueError(f"expect must be one of {', '.join(STEP_EXPECT)}, not {expect!r}")
    if opener not in ("-- ", "--"):
        raise ValueError(f"opener must be '-- ' or '--', not {opener!r}")
    if comma not in (None, True, False):
        raise ValueError(f"comma must be None, True or False, not {comma!r}")
    if comma is True and expect == "final":
        raise ValueError("comma=True (another CTE follows) contradicts expect='final'")
    final = "" if comma is True else " | final_step"
    body = {"first": "kw_with ws cte_step" + final, "first_cte": "kw_with ws cte_step", "cte": "cte_step",
            "final": "final_step", "any": "cte_step" + final}[expect]
    tail = {None: ' (sp ",")?', True: ' sp ","', False: ""}[comma]
    space = '" " ' if opener == "--" else ""
    if isinstance(columns, Mapping):
        columns = [c for cols in columns.values() for c in cols]
    head = [f'root ::= {space}comment_text "\\n" step_body', "comment_text ::= [^ \\t\\r\\n`] [^\\r\\n`]*"]
    rules = [*(head if comment else ["root ::= step_body"]),
             f"step_body ::= {body}",
             f"cte_step ::= cte{tail}",
             'final_step ::= select_stmt sp (";" sp)? "\\n```"']
    return _grammar(rules, schema, names=names, columns=columns)


def _grammar(roots: list[str], schema: Schema, *, names: Iterable[str] = (), columns: Iterable[str] = ()) -> str:
    tables = [t.name for t in schema.tables] + list(names)
    cols = [c.name for t in schema.tables for c in t.columns] + list(columns) + ["rowid"]
    lines = [*roots, _STATIC.strip(),
             f"table ::= {_name_alternatives(tables)}",
             f"column ::= {_name_alternatives(cols)}",
             "function ::= " + " | ".join(f"({_ci(f)})" for f in FUNCTIONS)]
    lines += [f"kw_{k} ::= {_ci(k)}" for k in _KEYWORDS]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=256)
def _string_matcher_grammar(grammar: str):
    import xgrammar as xgr

    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo([]), cache_enabled=False)
    return compiler.compile_grammar(xgr.Grammar.from_ebnf(grammar))


def accepts(grammar: str, text: str) -> bool:
    """Whether `grammar` (EBNF) accepts the whole of `text`, checked by xgrammar."""
    import xgrammar as xgr

    matcher = xgr.GrammarMatcher(_string_matcher_grammar(grammar), terminate_without_stop_token=True)
    return bool(matcher.accept_string(text)) and matcher.is_terminated()
