"""How close the example store's cold rankings are to its exact one (issue 25).

    python -m benchmarks.retrieval_agreement [--questions 300] [--seed 0] [--k 3] [--candidates 48]

For a fixed-seed sample of Spider dev questions (schema words masked with the question's own schema, as
`planner.fewshot.retrieve` does), the k examples picked from Spider train by

- "embeddings": every distinct masked question encoded (the exact ranking; what a warm store does),
- "bm25+rerank": BM25's best `--candidates` distinct questions re-ranked by embedding (a cold store),
- "bm25": BM25 alone,

and, for the two cold ones, the mean share of the exact top-k they pick (overlap@k) and the share of questions
where they pick exactly the same set. Also the seconds the full encoding took (the cost the cold modes avoid).

Usefulness without a generator (for every mode): the share of questions whose k examples include one with the
same SQL skeleton as the question's gold SQL (keywords, operators and aggregates kept; names and values dropped),
the structure DAIL-SQL's masked-question similarity is meant to find.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time

_KEYWORDS = set("select from where group by order having count avg max min sum join on limit desc asc not in "
                "intersect union except like between distinct and or as".split())
_SQL_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|[A-Za-z_][A-Za-z0-9_.]*|\d+(?:\.\d+)?|[<>=!]+|[(),*]")


def skeleton(sql: str) -> str:
    out = []
    for t in _SQL_TOKEN.findall(sql):
        low = t.lower()
        out.append(low if low in _KEYWORDS or not (low[0].isalnum() or low[0] in "_'\"") else "_")
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.retrieval_agreement")
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=None)
    args = ap.parse_args(argv)
    from core.settings import spider_dir
    from planner import fewshot
    from planner.fewshot import ExampleStore, _spider_tables, mask_question, schema_words, spider_store

    if args.candidates:
        fewshot.LEXICAL_CANDIDATES = args.candidates
    d = spider_dir()
    dev = json.loads((d / "dev.json").read_text())
    random.Random(args.seed).shuffle(dev)
    dev = dev[: args.questions]
    schemas = _spider_tables(str(d / "tables.json"))
    st = spider_store()
    cold = ExampleStore(st.examples)  # same examples, no embeddings
    cold.from_cache = False  # stays cold even when the embedder's disk cache holds every question
    picks: dict[str, list[list[str]]] = {"bm25": [], "bm25+rerank": [], "embeddings": []}
    t = time.perf_counter()
    for r in dev:
        m = mask_question(r["question"], schema_words(schemas.get(r["db_id"], {})))
        picks["bm25"].append([e.sql for e in cold.top_k(m, r["question"], args.k, rerank=False)])
        picks["bm25+rerank"].append([e.sql for e in cold.top_k(m, r["question"], args.k, rerank=True)])
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    st.warm()
    warm_s = time.perf_counter() - t
    for r in dev:
        m = mask_question(r["question"], schema_words(schemas.get(r["db_id"], {})))
        picks["embeddings"].append([e.sql for e in st.top_k(m, r["question"], args.k)])
    print(f"{len(dev)} Spider dev questions (seed {args.seed}), k={args.k}, "
          f"{len(st.texts)} distinct masked train questions of {len(st.examples)}")
    print(f"full encoding: {warm_s:.1f} s; cold rankings of every question (both modes): {cold_s:.1f} s")
    gold = [skeleton(r["query"]) for r in dev]
    for mode in ("embeddings", "bm25+rerank", "bm25"):
        hit = sum(any(skeleton(x) == g for x in picked) for picked, g in zip(picks[mode], gold, strict=True))
        print(f"{mode}: an example with the gold SQL's skeleton among the {args.k}: {hit}/{len(dev)} "
              f"({hit / len(dev):.1%})")
    for mode in ("bm25", "bm25+rerank"):
        ov = [len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(picks[mode], picks["embeddings"], strict=True)]
        same = sum(set(a) == set(b) for a, b in zip(picks[mode], picks["embeddings"], strict=True))
        print(f"{mode}: overlap@{args.k} with the exact ranking {sum(ov) / len(ov):.3f}; "
              f"same set {same}/{len(dev)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
