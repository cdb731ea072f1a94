"""Schema linking on the merged database with the index's lexical stage only (issue 25).

    python -m benchmarks.linking_stages [--top-k 20] [--budget 2048] [--limit N --seed S]

What a question gets while the index's embeddings are still being built: `sqlbox.linking.link` on the lexical
stage (BM25 over the table and column documents, scaled to [0, 1], plus the value index), on Spider dev rewritten
to the merged 843-table database, scored as `sqlarbiter eval linking --merged` scores the full index
(`eval.linking.evaluate`). Prints the summary (table/column recall, prompt tokens against the full schema's,
latency) and the seconds the lexical stage took to build.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.linking_stages")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--budget", type=int, default=2048)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from core.settings import spider_dir
    from eval.datasets import load_spider
    from eval.linking import evaluate
    from eval.merged import merged_examples
    from sqlbox import index as mod
    from sqlbox.databases import DatabaseRegistry
    from sqlbox.merged import MERGED_DB_ID, build_merged

    data = spider_dir()
    examples = load_spider(data, split="dev", limit=args.limit, seed=args.seed, with_difficulty=False)
    path = build_merged(data / "database")
    examples = merged_examples(examples, data / "database", path)
    reg = DatabaseRegistry()
    reg.register(MERGED_DB_ID, path)
    info, schema = reg.get(MERGED_DB_ID), reg.schema(MERGED_DB_ID)
    got: dict = {}

    class _Stop(Exception):
        pass

    def on_lexical(lex) -> None:
        got["lex"] = lex
        raise _Stop

    t = time.perf_counter()
    try:
        mod.build_index(info, schema, on_lexical=on_lexical)
    except _Stop:
        pass
    lexical_s = time.perf_counter() - t
    lex = got["lex"]
    real = mod.schema_index
    mod.schema_index = lambda *a, **k: lex  # evaluate() links on the lexical stage
    try:
        summary, _ = evaluate(examples, reg, top_k=args.top_k, budget=args.budget)
    finally:
        mod.schema_index = real
    summary.pop("index", None)
    summary["lexical_stage_s"] = round(lexical_s, 2)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
