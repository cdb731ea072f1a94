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

Cold start (issue 25): only the distinct masked questions are encoded (Spider train: 6,513 of 7,000), ahead of
need (`ExampleStore.warm`: `serve` start-up, `sqlarbiter databases warm`). Until they are, a question is ranked
in two stages: BM25 (`bm25s`) over the distinct masked questions, then the embeddings of its best
`LEXICAL_CANDIDATES` only (encoded on demand, cached on disk); `retrieve(..., info=)` says which ranking was used.
Agreement of the cold ranking with the exact one: BENCHMARKS.md, "First answers in seconds".

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

from core.runtime.embeddings import ENCODE_BATCH
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


LEXICAL_CANDIDATES = 128  # distinct stored questions the BM25 stage hands to the embedding re-rank
_TOKEN = re.compile(r"[a-z0-9]+")


def _lexical_tokens(masked: str) -> list[str]:
    """BM25 tokens of a masked question: its lower-cased words, structure words kept ("how many", "each",
    "most" carry the SQL shape that masked-question similarity is about); masks count as a word."""
    return _TOKEN.findall(masked.lower())


class ExampleStore:
    """Examples with their masked questions, a BM25 index over the distinct masked questions (built in
    milliseconds) and their embeddings (encoded once, ahead of need by `warm()`, cached on disk by the
    embedder).

    `top_k` never waits for the embeddings: when they are ready it ranks every example by cosine similarity
    (the exact ranking); before, it takes the BM25 stage's `LEXICAL_CANDIDATES` best distinct questions and
    re-ranks them by cosine similarity (encoding only those), or by BM25 alone when `rerank=False`."""

    def __init__(self, examples: list[Example]):
        self.examples = examples
        self.texts: list[str] = list(dict.fromkeys(e.masked for e in examples))  # distinct masked questions
        pos = {t: i for i, t in enumerate(self.texts)}
        self._text_of = np.array([pos[e.masked] for e in examples], dtype=np.int64)
        self._vecs: np.ndarray | None = None  # one row per distinct masked question
        self._bm25 = None
        self._lock = threading.Lock()
        self.build_s: float | None = None  # seconds the embeddings took (None: not built in this process)
        self.progress = 0  # distinct questions encoded so far by warm()
        self.from_cache = True  # take the embeddings from the embedder's cache once it holds them all

    @property
    def ready(self) -> bool:
        """The embeddings are built (the exact ranking is available)."""
        return self._vecs is not None

    def warm(self, batch_size: int | None = None, chunk: int = 1024) -> np.ndarray:
        """Encode the distinct masked questions now (once; concurrent callers wait for the one build), in
        chunks so the disk cache keeps what was encoded if the process stops half-way (`progress`)."""
        with self._lock:
            if self._vecs is None:
                import time

                from routing.features import Embedder

                t0 = time.perf_counter()
                parts = []
                for i in range(0, len(self.texts), chunk):
                    parts.append(Embedder.encode(self.texts[i:i + chunk], batch_size=batch_size or ENCODE_BATCH))
                    self.progress = min(i + chunk, len(self.texts))
                self._vecs = np.concatenate(parts) if parts else np.zeros((0, 384), dtype=np.float32)
                self.build_s = time.perf_counter() - t0
            return self._vecs

    def _from_cache(self) -> bool:
        """Take the embeddings from the embedder's cache when it already holds every one (a second process)."""
        from routing.features import Embedder

        if self._vecs is None and self.from_cache and not self._lock.locked():
            vecs = Embedder.cached(self.texts)
            if vecs is not None:
                self._vecs = vecs
                self.progress = len(self.texts)
        return self._vecs is not None

    vectors = warm  # the old name

    def lexical(self):
        if self._bm25 is None:
            import bm25s

            bm = bm25s.BM25()
            bm.index([_lexical_tokens(t) for t in self.texts], show_progress=False)
            self._bm25 = bm
        return self._bm25

    def _ranked(self, masked_question: str, rerank: bool) -> tuple[np.ndarray, str]:
        """Example indices, best first, and how they were ranked ("embeddings", "bm25+rerank", "bm25")."""
        from routing.features import Embedder

        if self._vecs is not None or self._from_cache():
            q = Embedder.encode([masked_question])[0]
            sims = (self._vecs @ q)[self._text_of]
            return np.argsort(-sims, kind="stable"), "embeddings"
        scores = np.asarray(self.lexical().get_scores(_lexical_tokens(masked_question)), dtype=np.float64)
        n = min(LEXICAL_CANDIDATES, len(self.texts))
        cand = np.argsort(-scores, kind="stable")[:n]
        mode = "bm25"
        if rerank:
            vecs = Embedder.encode([masked_question] + [self.texts[int(i)] for i in cand])
            text_score = np.full(len(self.texts), -np.inf)
            text_score[cand] = vecs[1:] @ vecs[0]
            mode = "bm25+rerank"
        else:
            text_score = np.full(len(self.texts), -np.inf)
            text_score[cand] = scores[cand]
        sims = text_score[self._text_of]
        order = np.argsort(-sims, kind="stable")
        return order[: int(np.isfinite(sims).sum())], mode

    def top_k(self, masked_question: str, question: str, k: int, *, rerank: bool = True,
              info: dict | None = None) -> list[Example]:
        if k <= 0 or not self.examples:
            return []
        order, mode = self._ranked(masked_question, rerank)
        if info is not None:
            info["mode"] = mode
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


def store_for(db_id: str, *, few_shot_file: str | Path | None = None, spider: bool | None = None) -> ExampleStore | None:
    """The example store questions on `db_id` are ranked against (Spider train for a Spider database, the
    user file, or both merged), or None when none applies."""
    stores: list[ExampleStore] = []
    if spider if spider is not None else is_spider_db(db_id):
        st = spider_store()
        if st is not None:
            stores.append(st)
    path = examples_file(few_shot_file)
    if path:
        stores.append(file_store(path))
    if not stores:
        return None
    if len(stores) == 1:
        return stores[0]
    with _STORES_LOCK:
        key = ("merged", *(id(st) for st in stores))
        if key not in _STORES:
            _STORES[key] = ExampleStore([e for st in stores for e in st.examples])
        return _STORES[key]


def retrieve(question: str, db_id: str, schema, k: int, *, few_shot_file: str | Path | None = None,
             spider: bool | None = None, rerank: bool = True, info: dict | None = None,
             store: ExampleStore | None = None) -> list[tuple[str, str]]:
    """Up to k (question, sql) examples for `question` on `db_id` (its `sqlbox.schema.Schema` masks the
    question). The demo database's shipped examples come first when it is asked; then the most similar of
    the stores that apply (Spider train for Spider databases - `spider` forces it on/off - and the user file).
    `info`, when given, gets "mode" (how the store ranked: "embeddings", "bm25+rerank" before its embeddings
    are built, "bm25"; "shipped" or "none" when no store was asked) and "ms". `store`: rank against this store
    instead of the one that applies (a study comparing a cold store with a warm one)."""
    import time

    t0 = time.perf_counter()
    if info is not None:
        info["mode"] = "none"
    if k <= 0:
        return []
    from sqlbox.demo import DEMO_DB_ID, DEMO_EXAMPLES

    if db_id == DEMO_DB_ID:
        shipped = [(q, s) for q, s in DEMO_EXAMPLES if q.strip().lower() != question.strip().lower()]
        if len(shipped) >= k:
            if info is not None:
                info["mode"] = "shipped"
            return shipped[:k]
    else:
        shipped = []
    if store is None:
        store = store_for(db_id, few_shot_file=few_shot_file, spider=spider)
    if store is None:
        return shipped[:k]
    tables = {t.name: [c.name for c in t.columns] for t in schema.tables} if schema is not None else {}
    masked = mask_question(question, schema_words(tables))
    picked = store.top_k(masked, question, k - len(shipped), rerank=rerank, info=info)
    if info is not None:
        info["ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        info["encoded"] = f"{store.progress}/{len(store.texts)}"
    return shipped + [(e.question, e.sql) for e in picked]
