"""Schema linking: the tables and columns a question needs, and the schema prompt built from them.

`link(question, schema, index)`:

1. scores every column by the cosine similarity (BM25 scores scaled to [0, 1] while the index's embeddings
   are still being built: `SchemaIndex.lexical_scores`) of the question (plus BIRD's evidence, when given) to
   the column's document (`sqlbox.index`), plus a bonus for each literal of the question found among
   the column's values (exact n-gram lookups, and `rapidfuzz` fuzzy lookups of quoted or capitalised
   spans), shared out when the value sits in many columns;
2. scores every table by its own document's similarity and its best column, and, for prefixed names
   (`<namespace>__<table>`, as in the merged database), by its namespace's best table (questions are
   mostly about one namespace);
3. keeps the `top_k` tables, then closes the selection over foreign keys: a table that joins two
   linked tables (a bridge) or that a top table references is added, so the joins stay possible;
4. builds the prompt (`sqlbox.schema.schema_to_prompt` on the linked subset, tables in score order)
   within `budget` tokens: the lowest-scoring non-key columns go first, then the lowest tables.

The result records the linked tables and columns, the value hits, the prompt and its token count
against the full schema's, and the linking latency.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sqlbox.index import NS_SEP, SchemaIndex, normalize_value
from sqlbox.schema import Schema, Table, TokenCounter, _count, _key_columns, schema_to_prompt

LINKING_MODES = ("off", "on", "auto")
DEFAULT_TOP_K = 20
VALUE_BONUS = 0.25
FUZZY_CUTOFF = 88.0
NAMESPACE_WEIGHT = 0.5

_STOP = frozenset(
    "a an the of in on at to for from by with and or not no is are was were be been do does did has have had "
    "what which who whom whose when where why how many much all any each every list show give find return "
    "me us name names number numbers count total average avg mean max min maximum minimum than more less "
    "that this these those there their its it as most least order sorted descending ascending per id ids "
    "top first last only also both".split())
_WORD = re.compile(r"[\w'.-]+", re.U)
_QUOTED = re.compile(r"[\"“”‘’']([^\"“”‘’']{2,64})[\"“”‘’']")
_CAPS = re.compile(r"\b([A-Z][\w.-]*(?:\s+(?:of\s+|the\s+|de\s+)?[A-Z][\w.-]*)*)")


@dataclass
class LinkResult:
    tables: list[str]  # linked tables, in prompt order (best first)
    columns: dict[str, list[str]]  # table -> columns kept in the prompt (schema order)
    prompt: str
    prompt_tokens: int
    full_tokens: int
    latency_ms: float
    closure: list[str] = field(default_factory=list)  # tables added by the foreign-key closure
    value_hits: list[tuple[str, str, str]] = field(default_factory=list)  # (value, table, column)
    scores: dict[str, float] = field(default_factory=dict)  # table -> score, linked tables
    mode: str = "embeddings"  # "bm25": linked on the lexical stage while the index's embeddings were being built

    def column_pairs(self) -> set[tuple[str, str]]:
        return {(t.lower(), c.lower()) for t, cs in self.columns.items() for c in cs}

    def as_dict(self) -> dict[str, Any]:
        return {"tables": self.tables, "columns": self.columns, "closure": self.closure,
                "value_hits": [list(h) for h in self.value_hits],
                "prompt_tokens": self.prompt_tokens, "full_tokens": self.full_tokens,
                "latency_ms": round(self.latency_ms, 3),
                "scores": {k: round(v, 4) for k, v in self.scores.items()}, "mode": self.mode}


def _spans(text: str) -> tuple[list[str], list[str]]:
    """(every 1..4-gram of the question that is not only stop words, the quoted/capitalised spans)."""
    toks = [t.strip(".'-") for t in _WORD.findall(text)]
    toks = [t for t in toks if t]
    grams: list[str] = []
    for n in range(1, 5):
        for i in range(len(toks) - n + 1):
            g = toks[i:i + n]
            if all(w.lower() in _STOP for w in g):
                continue
            s = " ".join(g)
            if n == 1 and len(s) < 3:
                continue
            grams.append(s)
    fuzzy = [m.group(1) for m in _QUOTED.finditer(text)]
    first = True
    for m in _CAPS.finditer(text):
        s = m.group(1)
        if first and m.start() == 0 and " " not in s:  # the sentence's first word
            first = False
            continue
        first = False
        if len(s) >= 3 and s.lower() not in _STOP:
            fuzzy.append(s)
    return grams, list(dict.fromkeys(fuzzy))


def value_hits(question: str, index: SchemaIndex, *, fuzzy_cutoff: float = FUZZY_CUTOFF) -> dict[str, list[int]]:
    """Question literal (normalised value) -> column indices whose values contain it."""
    grams, fuzzy = _spans(question)
    hits: dict[str, list[int]] = {}
    for g in grams:
        n = normalize_value(g)
        cols = index.values.get(n)
        if cols:
            hits[n] = cols
    if fuzzy and index.value_list:
        from rapidfuzz import fuzz, process

        for s in fuzzy:
            n = normalize_value(s)
            if n in hits:
                continue
            for val, _score, _ in process.extract(n, index.value_list, scorer=fuzz.ratio,
                                                  score_cutoff=fuzzy_cutoff, limit=3):
                hits[val] = index.values[val]
    return hits


def _namespace(name: str) -> str | None:
    return name.split(NS_SEP, 1)[0].lower() if NS_SEP in name else None


def _fk_closure(schema: Schema, selected: list[str], anchors: int) -> list[str]:
    """Tables to add so the selection stays joinable: bridges (an unselected table with foreign-key
    edges to two selected tables) and the tables the first `anchors` selected tables reference."""
    sel = {t.lower() for t in selected}
    nbrs: dict[str, set[str]] = {}
    names = {t.name.lower(): t.name for t in schema.tables}
    for t in schema.tables:
        for fk in t.foreign_keys:
            a, b = t.name.lower(), fk.ref_table.lower()
            if a != b and b in names:
                nbrs.setdefault(a, set()).add(b)
                nbrs.setdefault(b, set()).add(a)
    added: list[str] = []
    for t in schema.tables:
        low = t.name.lower()
        if low not in sel and len(nbrs.get(low, set()) & sel) >= 2:
            added.append(t.name)
    for name in selected[:anchors]:
        t = schema.table(name)
        if t is None:
            continue
        for fk in t.foreign_keys:
            r = fk.ref_table.lower()
            if r in names and r not in sel and names[r] not in added:
                added.append(names[r])
    return added


def _subschema(schema: Schema, keep: list[tuple[Table, list[str]]]) -> Schema:
    from sqlbox.schema import Schema as S
    from sqlbox.schema import Table as T

    names = {t.name.lower() for t, _ in keep}
    tables = []
    for t, cols in keep:
        cset = {c.lower() for c in cols}
        tables.append(T(name=t.name, columns=[c for c in t.columns if c.name.lower() in cset],
                        primary_key=[c for c in t.primary_key if c.lower() in cset],
                        foreign_keys=[fk for fk in t.foreign_keys if fk.ref_table.lower() in names
                                      and all(c.lower() in cset for c in fk.columns)],
                        sample_rows=[], row_count=t.row_count))
    return S(db_id=schema.db_id, tables=tables, kind=schema.kind)


_FULL_TOKENS: dict[tuple[str, str, int], int] = {}


def full_prompt_tokens(schema: Schema, index: SchemaIndex, count_tokens: TokenCounter | None = None,
                       sample_rows: int = 0) -> int:
    key = (schema.db_id, index.key, sample_rows)
    if count_tokens is not None or key not in _FULL_TOKENS:
        n = _count(count_tokens, schema_to_prompt(schema, sample_rows=sample_rows))
        if count_tokens is not None:
            return n
        _FULL_TOKENS[key] = n
    return _FULL_TOKENS[key]


def link(question: str, schema: Schema, index: SchemaIndex, *, top_k: int = DEFAULT_TOP_K,
         budget: int | None = 2048, evidence: str | None = None, count_tokens: TokenCounter | None = None,
         namespace_weight: float = NAMESPACE_WEIGHT, closure: bool = True) -> LinkResult:
    """Link a question to `schema` (see the module docstring)."""
    if index.embedded:
        from core.runtime.embeddings import encode, sentence_model

        sentence_model()  # loaded once per process; its load time is not linking latency
    t0 = time.perf_counter()
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    text = question if not evidence else f"{question} {evidence}"
    if index.embedded:
        qv = encode([text])[0]
        ts = index.table_emb @ qv if len(index.tables) else np.zeros(0)
        cs = index.column_emb @ qv if len(index.columns) else np.zeros(0)
    else:  # the lexical stage of an index still being built: BM25 scores stand in for the similarities
        ts, cs = index.lexical_scores(text)
    cs = cs.astype(np.float64)
    hits = value_hits(text, index)
    hit_list: list[tuple[str, str, str]] = []
    for val, cols in hits.items():
        bonus = VALUE_BONUS / math.sqrt(len(cols))
        for i in cols:
            cs[i] += bonus
            hit_list.append((val, *index.columns[i]))
    tscore: dict[str, float] = {}
    for t in schema.tables:
        low = t.name.lower()
        ti = index.table_pos.get(low)
        cidx = index.columns_of.get(low, [])
        best_col = float(cs[cidx].max()) if cidx else 0.0
        tscore[t.name] = 0.5 * (float(ts[ti]) if ti is not None else 0.0) + 0.5 * best_col
    if namespace_weight:
        ns_best: dict[str, float] = {}
        for name, s in tscore.items():
            ns = _namespace(name)
            if ns is not None:
                ns_best[ns] = max(ns_best.get(ns, -1.0), s)
        if ns_best:
            tscore = {n: s + namespace_weight * ns_best.get(_namespace(n) or "", 0.0) for n, s in tscore.items()}
    ranked = sorted(tscore, key=lambda n: -tscore[n])
    selected = ranked[:top_k]
    added = _fk_closure(schema, selected, anchors=min(3, len(selected))) if closure else []
    order = selected + added
    col_score = {index.columns[i]: float(cs[i]) for i in range(len(index.columns))}
    keep: list[tuple[Table, list[str]]] = []
    for name in order:
        t = schema.table(name)
        if t is not None:
            keep.append((t, [c.name for c in t.columns]))
    prompt = schema_to_prompt(_subschema(schema, keep))
    n_tok = _count(count_tokens, prompt)
    if budget is not None and n_tok > budget:
        keep, prompt, n_tok = _fit(schema, keep, col_score, budget, count_tokens)
    full = full_prompt_tokens(schema, index, count_tokens)
    return LinkResult(tables=[t.name for t, _ in keep], columns={t.name: cols for t, cols in keep},
                      prompt=prompt, prompt_tokens=n_tok, full_tokens=full,
                      latency_ms=(time.perf_counter() - t0) * 1000.0,
                      closure=[a for a in added if any(a == t.name for t, _ in keep)],
                      value_hits=hit_list[:50], scores={t.name: tscore.get(t.name, 0.0) for t, _ in keep},
                      mode="embeddings" if index.embedded else "bm25")


def _fit(schema: Schema, keep: list[tuple[Table, list[str]]], col_score: dict[tuple[str, str], float],
         budget: int, count_tokens: TokenCounter | None) -> tuple[list[tuple[Table, list[str]]], str, int]:
    """Shrink the linked subset to `budget` tokens: drop the lowest-scoring non-key columns (binary search
    on how many), then, when only keys remain, the last tables (never the first)."""
    keys = {t.name: _key_columns(t, schema) for t, _ in keep}
    removable = sorted(((col_score.get((t.name, c), 0.0), t.name, c) for t, cols in keep for c in cols
                        if c.lower() not in keys[t.name]), key=lambda x: x[0])

    def build(n_drop: int, tables: list[tuple[Table, list[str]]]):
        drop = {(tn, c) for _, tn, c in removable[:n_drop]}
        k = [(t, [c for c in cols if (t.name, c) not in drop]) for t, cols in tables]
        p = schema_to_prompt(_subschema(schema, k))
        return k, p, _count(count_tokens, p)

    lo, hi = 0, len(removable)
    best = build(hi, keep)
    if best[2] <= budget:
        while lo < hi:
            mid = (lo + hi) // 2
            cand = build(mid, keep)
            if cand[2] <= budget:
                hi, best = mid, cand
            else:
                lo = mid + 1
        return best
    tables = list(keep)
    while len(tables) > 1 and best[2] > budget:
        tables.pop()
        best = build(len(removable), tables)
    return best
