"""Spider hardness (easy / medium / hard / extra) of a SQL query, by the published criteria.

The official `evaluation.py` (`Evaluator.eval_hardness`) classifies the parsed gold SQL with three
counts; this module computes the same counts from a sqlglot parse:

* component1: +1 each for WHERE, GROUP BY, ORDER BY, LIMIT; +(number of FROM/JOIN table units - 1);
  +1 per OR connector and +1 per LIKE condition in the JOIN-ON, WHERE and HAVING conditions.
* component2: nested queries: subqueries used as condition values in ON/WHERE/HAVING, plus one each
  for a top-level INTERSECT / UNION / EXCEPT (a FROM subquery is a table unit, not a component2).
* others: +1 if the "aggregation count" > 1, +1 if more than one SELECT item, +1 if more than one
  WHERE condition, +1 if more than one GROUP BY column.

The official aggregation count has quirks that are reproduced on purpose: `count_agg` tests the first
field of each unit, which for a WHERE/HAVING condition is its NOT flag (so `NOT IN` / `NOT LIKE` count,
`COUNT(*) > 1` in HAVING does not) and for a HAVING and/or connector is the connector string itself
(so each AND/OR inside HAVING counts). SELECT items count when their top-level expression is an
aggregate; ORDER BY items count once per aggregated operand.

With those counts, `classify` applies the published thresholds. Over Spider dev this reproduces the
official labels for all but a few queries (see docs/evaluation.md for the measured agreement).
BIRD carries its own `difficulty` field and needs nothing from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp

LEVELS = ("easy", "medium", "hard", "extra")
PUBLISHED_SPIDER_DEV = {"easy": 248, "medium": 446, "hard": 174, "extra": 166}

_AGGS = (exp.Count, exp.Max, exp.Min, exp.Sum, exp.Avg)
_ARITH = (exp.Add, exp.Sub, exp.Mul, exp.Div)
_SETOPS = (exp.Union, exp.Intersect, exp.Except)


@dataclass(frozen=True)
class HardnessCounts:
    component1: int
    component2: int
    others: int


def classify(c1: int, c2: int, others: int) -> str:
    """The published thresholds (`Evaluator.eval_hardness`)."""
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or (
        c1 <= 1 and others == 0 and c2 <= 1
    ):
        return "hard"
    return "extra"


def _unwrap(e: exp.Expression) -> exp.Expression:
    while isinstance(e, (exp.Paren, exp.Alias)):
        e = e.this
    return e


def _flatten_condition(e: exp.Expression | None) -> tuple[list[exp.Expression], list[str]]:
    """A condition as Spider's flat list: leaf conditions and the and/or connectors between them."""
    if e is None:
        return [], []
    e = e.this if isinstance(e, (exp.Where, exp.Having)) else e
    if isinstance(e, exp.Paren) and isinstance(e.this, (exp.And, exp.Or, exp.Paren)):
        return _flatten_condition(e.this)
    if isinstance(e, (exp.And, exp.Or)):
        l_units, l_ops = _flatten_condition(e.this)
        r_units, r_ops = _flatten_condition(e.expression)
        return l_units + r_units, l_ops + ["and" if isinstance(e, exp.And) else "or"] + r_ops
    return [e], []


def _is_not(cond: exp.Expression) -> bool:
    """Spider's not_op: `x NOT IN`, `x NOT LIKE`, `x NOT BETWEEN` (not `IS NOT NULL`, not `!=`)."""
    return isinstance(cond, exp.Not) and isinstance(cond.this, (exp.In, exp.Like, exp.Between))


def _core(cond: exp.Expression) -> exp.Expression:
    return cond.this if isinstance(cond, exp.Not) else cond


def _is_like(cond: exp.Expression) -> bool:
    return isinstance(_core(cond), (exp.Like, exp.ILike))


def _nested_values(cond: exp.Expression) -> int:
    """Subqueries that are the value(s) of a condition (val1/val2 in Spider's cond_unit)."""
    c = _core(cond)
    n = 0
    if isinstance(c, exp.In):
        q = c.args.get("query")
        if q is not None:
            n += 1
        n += sum(1 for v in c.expressions if isinstance(_unwrap_sub(v), exp.Query))
        return n
    if isinstance(c, exp.Between):
        return sum(1 for k in ("low", "high") if isinstance(_unwrap_sub(c.args.get(k)), exp.Query))
    if isinstance(c, exp.Exists):
        return 1
    if isinstance(c, exp.Binary):
        return 1 if isinstance(_unwrap_sub(c.expression), exp.Query) else 0
    return 0


def _unwrap_sub(e):
    while isinstance(e, (exp.Paren, exp.Subquery)):
        e = e.this
    return e


def _select_core(tree: exp.Expression) -> tuple[exp.Select | None, int]:
    """The leftmost SELECT and whether the top level is a set operation (Spider keeps the first query
    as the main SQL and nests the rest under intersect/union/except)."""
    e = tree
    setop = 0
    while True:
        if isinstance(e, (exp.Subquery, exp.Paren)):
            e = e.this
        elif isinstance(e, _SETOPS):
            setop = 1
            e = e.this
        else:
            break
    return (e if isinstance(e, exp.Select) else None), setop


def _agg_count_select(items) -> int:
    return sum(1 for it in items if isinstance(_unwrap(it), _AGGS))


def _agg_count_order(order: exp.Order | None) -> int:
    if order is None:
        return 0
    n = 0
    for o in order.expressions:
        e = _unwrap(o.this if isinstance(o, exp.Ordered) else o)
        if isinstance(e, _ARITH):
            n += isinstance(_unwrap(e.this), _AGGS) + isinstance(_unwrap(e.expression), _AGGS)
        else:
            n += isinstance(e, _AGGS)
    return n


def counts_for(tree: exp.Expression) -> HardnessCounts:
    """The three hardness counts of a parsed query."""
    sel, setop = _select_core(tree)
    if sel is None:
        return HardnessCounts(0, setop, 0)
    from_ = sel.args.get("from") or sel.args.get("from_")
    joins = sel.args.get("joins") or []
    n_tables = (1 if from_ is not None else 0) + len(joins)
    on_units, on_ops = [], []
    for j in joins:
        u, o = _flatten_condition(j.args.get("on"))
        if u and on_units:
            on_ops.append("and")
        on_units += u
        on_ops += o
    w_units, w_ops = _flatten_condition(sel.args.get("where"))
    h_units, h_ops = _flatten_condition(sel.args.get("having"))
    group = sel.args.get("group")
    n_group = len(group.expressions) if group is not None else 0
    order = sel.args.get("order")
    cond_units = on_units + w_units + h_units
    connectors = on_ops + w_ops + h_ops

    c1 = 0
    c1 += bool(w_units)
    c1 += n_group > 0
    c1 += order is not None and bool(order.expressions)
    c1 += sel.args.get("limit") is not None
    c1 += max(n_tables - 1, 0)
    c1 += connectors.count("or")
    c1 += sum(1 for u in cond_units if _is_like(u))

    c2 = sum(_nested_values(u) for u in cond_units) + setop

    agg = _agg_count_select(sel.expressions)
    agg += sum(1 for u in w_units if _is_not(u))  # official quirk: count_agg over WHERE tests not_op
    agg += _agg_count_order(order)
    agg += sum(1 for u in h_units if _is_not(u)) + len(h_ops)  # quirk: HAVING not_op and connectors
    others = int(agg > 1) + int(len(sel.expressions) > 1) + int(len(w_units) > 1) + int(n_group > 1)
    return HardnessCounts(c1, c2, others)


@lru_cache(maxsize=8192)
def spider_hardness(sql: str) -> str:
    """easy / medium / hard / extra for one SQL string (SQLite dialect). Unparseable SQL is "extra"."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except Exception:  # noqa: BLE001 - any SQL text gets a level: whatever sqlglot raises on it (ParseError, TokenError, its own bugs) means "extra"
        return "extra"
    c = counts_for(tree)
    return classify(c.component1, c.component2, c.others)
