"""Retrieved few-shot examples (DAIL-SQL style): the worked (question, SQL) examples most similar to the question.

The example store:

- the demo database's shipped examples (`sqlbox.demo.DEMO_EXAMPLES`);
- Spider train (`train_spider.json` under `core.settings.spider_dir()`), used for questions on Spider
  databases (a database id Spider's `tables.json` lists). Its databases are disjoint from dev's, so the
  examples are cross-database, as in DAIL-SQL;
- any user JSONL file of `{"db_id", "question", "sql"}` lines (`SQLARBITER_FEW_SHOT` or `few_shot_file`),
  used for every database; read through `planner.examples` (`examples_file`, `load_file`), the file's one
  home.

Similarity (DAIL-SQL's masked question similarity): table names, column names (and their words) and values
(numbers, quoted strings) are replaced by `<mask>` in the question and in each stored question, each with its
own schema, then both are embedded with the shipped all-MiniLM-L6-v2 (`routing.features.Embedder`, cached
on disk) and ranked by cosine similarity. Examples of the same database and same-database file entries are
eligible like any other; an example whose question equals the asked one is skipped (no leakage when a stored
question is asked). The k best come most-similar LAST (nearest the question in the prompt).

`retrieve(question, db_id, schema, k)` returns [(question, sql)]; `planner.examples.few_shot_examples` is the
older same-database lookup, still used when retrieval is off.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from planner.examples import examples_file, load_file

_WORD = re.compile(r"[A-Za-z0-9_]+|'[^']*'|\"[^\"]*\"|[^\sA-Za-z0-9_]")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
MASK = "<mask>"
_STOP = {"a", "an", "the", "of", "in", "on", "for", "to", "and", "or", "is", "are", "id", "by", "with", "at",
         "as", "from", "what", "which", "who", "how", "many", "name", "names", "all", "each", "number", "count"}


def schema_words(tables: dict[str, list[str]]) -> set[str]:
    """Lower-cased words of the table and column names ("singer_in_concert" -> singer, concert, ...),
    without very common English words (masking "name" or "number" would blank most questions)."""
    words: set[str] = set()
    for t, cols in tables.items():
        for name in [t, *cols]:
            low = name.lower()
            words.add(low)
            words.update(w for w in re.split(r"[_\s]+", low) if len(w) > 2)
    return words - _STOP


def mask_question(question: str, words: set[str]) -> str:
    """The question with schema words and values replaced by <mask> (consecutive masks merged)."""
    out: list[str] = []
    for tok in _WORD.findall(question):
        low = tok.lower()
        stem = low[:-1] if low.endswith("s") and len(low) > 3 else low
        if (tok[0] in "'\"" or _NUMBER.match(tok) or low in words or stem in words):
            if not out or out[-1] != MASK:
                out.append(MASK)
        else:
            out.append(tok)
    return " ".join(out)


@dataclass(frozen=True)
class Example:
    db_id: str
    question: str
    sql: str
    masked: str


@lru_cache(maxsize=4)
def _spider_tables(path: str) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for db in json.loads(Path(path).read_text(encoding="utf-8")):
        tables = {t: [] for t in db["table_names_original"]}
        names = db["table_names_original"]
        for ti, col in db["column_names_original"]:
            if ti >= 0:
                tables[names[ti]].append(col)
        out[db["db_id"]] = tables
    return out


class ExampleStore:
    """Examples with their masked questions and embeddings (encoded once, cached on disk by the embedder)."""

    def __init__(self, examples: list[Example]):
        self.examples = examples
        self._vecs: np.ndarray | None = None
        self._lock = threading.Lock()

    def vectors(self) -> np.ndarray:
        with self._lock:
            if self._vecs is None:
                from routing.features import Embedder

                self._vecs = Embedder.encode([e.masked for e in self.examples])
            return self._vecs

    def top_k(self, masked_question: str, question: str, k: int) -> list[Example]:
        if k <= 0 or not self.examples:
            return []
        from routing.features import Embedder

        q = Embedder.encode([masked_question])[0]
        sims = self.vectors() @ q
        order = np.argsort(-sims, kind="stable")
        qlow = question.strip().lower()
        picked: list[Example] = []
        seen: set[str] = set()
        for i in order:
            e = self.examples[int(i)]
            key = e.sql.strip().lower()
            if e.question.strip().lower() == qlow or key in seen:
                continue
            seen.add(key)
            picked.append(e)
            if len(picked) == k:
                break
        return picked[::-1]  # most similar last


_STORES: dict[tuple, ExampleStore] = {}
_STORES_LOCK = threading.Lock()


def spider_store() -> ExampleStore | None:
    """Spider train as an example store (None when Spider is not available)."""
    from core.settings import spider_dir

    d = spider_dir()
    train, tables = d / "train_spider.json", d / "tables.json"
    if not train.is_file() or not tables.is_file():
        return None
    key = ("spider", str(train))
    with _STORES_LOCK:
        if key not in _STORES:
            schemas = _spider_tables(str(tables))
            words = {db: schema_words(t) for db, t in schemas.items()}
            exs = [Example(r["db_id"], r["question"], r["query"], mask_question(r["question"], words.get(r["db_id"], set())))
                   for r in json.loads(train.read_text(encoding="utf-8"))]
            _STORES[key] = ExampleStore(exs)
        return _STORES[key]


def file_store(path: str) -> ExampleStore:
    """A user JSONL file of {db_id, question, sql} as a store (masked with the Spider schema of the row's db
    when known, else with no schema words)."""
    key = ("file", str(path), os.path.getmtime(path))
    with _STORES_LOCK:
        if key not in _STORES:
            from core.settings import spider_dir

            t = spider_dir() / "tables.json"
            schemas = _spider_tables(str(t)) if t.is_file() else {}
            exs = [Example(db, q, s, mask_question(q, schema_words(schemas.get(db, {}))))
                   for db, q, s in load_file(path)]
            _STORES[key] = ExampleStore(exs)
        return _STORES[key]


def is_spider_db(db_id: str) -> bool:
    from core.settings import spider_dir

    t = spider_dir() / "tables.json"
    return t.is_file() and db_id in _spider_tables(str(t))


def retrieve(question: str, db_id: str, schema, k: int, *, few_shot_file: str | Path | None = None,
             spider: bool | None = None) -> list[tuple[str, str]]:
    """Up to k (question, sql) examples for `question` on `db_id` (its `sqlbox.schema.Schema` masks the
    question). The demo database's shipped examples come first when it is asked; then the most similar of
    the stores that apply (Spider train for Spider databases - `spider` forces it on/off - and the user file)."""
    if k <= 0:
        return []
    from sqlbox.demo import DEMO_DB_ID, DEMO_EXAMPLES

    if db_id == DEMO_DB_ID:
        shipped = [(q, s) for q, s in DEMO_EXAMPLES if q.strip().lower() != question.strip().lower()]
        if len(shipped) >= k:
            return shipped[:k]
    else:
        shipped = []
    stores: list[ExampleStore] = []
    if spider if spider is not None else is_spider_db(db_id):
        st = spider_store()
        if st is not None:
            stores.append(st)
    path = examples_file(few_shot_file)
    if path:
        stores.append(file_store(path))
    if not stores:
        return shipped[:k]
    tables = {t.name: [c.name for c in t.columns] for t in schema.tables} if schema is not None else {}
    masked = mask_question(question, schema_words(tables))
    if len(stores) == 1:
        picked = stores[0].top_k(masked, question, k - len(shipped))
    else:
        merged = ExampleStore([e for st in stores for e in st.examples])
        with _STORES_LOCK:
            key = ("merged", *(id(st) for st in stores))
            merged = _STORES.setdefault(key, merged)
        picked = merged.top_k(masked, question, k - len(shipped))
    return shipped + [(e.question, e.sql) for e in picked]
