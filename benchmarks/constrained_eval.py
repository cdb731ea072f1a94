"""Embedded generator on Spider dev questions: unconstrained vs schema-constrained vs constrained + retrieved
few-shot examples, side by side in one run (the settings are interleaved question by question, so a run cut
short still compares them on the same questions).

Per setting: executable rate (candidates that run on SQLite), oracle EX (some candidate matches the gold
result, official Spider semantics), chosen EX (the candidate picked by the `vote` policy: the largest cluster
of identical results among executable candidates; no discriminator, so the figure isolates the generator),
and generate seconds. Questions: a fixed-seed sample of Spider dev. Results stream to a JSONL file.

    python -m benchmarks.constrained_eval --questions 100 --n 4 --seed 0 --out runs/constrained_eval.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

SETTINGS = ("unconstrained", "constrained", "constrained+fewshot", "constrained+fewshot-cold")
DEFAULT_SETTINGS = SETTINGS[:3]
# constrained+fewshot ranks the examples as a warm store does (every embedding built: the exact ranking);
# constrained+fewshot-cold as a new database's first plan does before the warm-up (issue 25): BM25 over the distinct
# masked questions, then an embedding re-rank of the best `planner.fewshot.LEXICAL_CANDIDATES`


def _vote(rows_list: list[list[tuple] | None]) -> int | None:
    from eval.exec_match import _unorder_row

    keys = [None if r is None else repr(sorted(repr(_unorder_row(x)) for x in r)) for r in rows_list]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, k in enumerate(keys) if k is not None and counts[k] == best)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", type=int, default=100)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=192)
    p.add_argument("--k", type=int, default=3, help="retrieved examples")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default=None, help="the embedded model's dtype (float32, int8; default: the "
                   "embedded generator's default)")
    p.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help=f"comma list of: {', '.join(SETTINGS)}")
    p.add_argument("--out", default="runs/constrained_eval.jsonl")


def summarize(path: str | Path) -> str:
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["setting"], []).append(r)
    qs = min((len(v) for v in by.values()), default=0)
    lines = [f"questions: {qs} (of each setting)", "",
             "| setting | questions | candidates | executable | oracle EX | chosen EX (vote) | generate s/question |",
             "|---|---|---|---|---|---|---|"]
    for s in SETTINGS:
        rs = by.get(s, [])[:qs]
        if not rs:
            continue
        cands = sum(len(r["executable"]) for r in rs)
        ex = sum(sum(r["executable"]) for r in rs)
        oracle = sum(any(r["ex"]) for r in rs)
        chosen = sum(bool(r["chosen_ex"]) for r in rs)
        gen = sum(r["generate_s"] for r in rs) / len(rs)
        lines.append(f"| {s} | {len(rs)} | {cands} | {ex} ({100 * ex / cands:.1f} %) | {oracle} ({100 * oracle / len(rs):.0f} %) "
                     f"| {chosen} ({100 * chosen / len(rs):.0f} %) | {gen:.1f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from core.settings import spider_dir
    from eval.exec_match import run_query, spider_verdicts
    from generators.base import GenerationRequest, SamplingParams
    from generators.embedded import embedded_generator
    from generators.grammar import sql_grammar
    from planner.fewshot import ExampleStore, retrieve, spider_store
    from sqlbox.databases import DatabaseRegistry
    from sqlbox.schema import schema_to_prompt

    settings = [s for s in args.settings.split(",") if s]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        print(f"unknown setting(s) {bad}; choose from {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    dev = json.loads((spider_dir() / "dev.json").read_text())
    idx = sorted(random.Random(args.seed).sample(range(len(dev)), args.questions))
    reg = DatabaseRegistry()
    reg.register_dir(spider_dir() / "database")
    gen = embedded_generator(None, **({"dtype": args.dtype} if args.dtype else {}))
    stores: dict[str, ExampleStore | None] = {}
    if "constrained+fewshot" in settings and spider_store() is not None:
        stores["constrained+fewshot"] = spider_store()
        stores["constrained+fewshot"].warm()  # the exact ranking, as once warm
    if "constrained+fewshot-cold" in settings and spider_store() is not None:
        cold = stores["constrained+fewshot-cold"] = ExampleStore(spider_store().examples)  # no embeddings
        cold.from_cache = False  # stays cold even when the embedder's disk cache holds every question
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for qi, i in enumerate(idx):
            ex = dev[i]
            db = ex["db_id"]
            db_path = spider_dir() / "database" / db / f"{db}.sqlite"
            schema = reg.schema(db)
            prompt = schema_to_prompt(schema, max_tokens=2048)
            grammar = sql_grammar(schema)
            for s in settings:
                info: dict = {}
                shots = retrieve(ex["question"], db, schema, args.k, store=stores.get(s), info=info) \
                    if s.startswith("constrained+fewshot") else []
                gen.constrained = s != "unconstrained"
                req = GenerationRequest(question=ex["question"], schema=prompt, few_shot=shots, grammar=grammar,
                                        params=SamplingParams(n=args.n, temperature=0.7, top_p=0.95,
                                                              max_tokens=args.max_tokens, seed=args.seed))
                t0 = time.perf_counter()
                res = gen.generate(req)
                dt = time.perf_counter() - t0
                outs = [run_query(db_path, q, timeout=10) if q else None for q in res.sqls]
                executable = [bool(o and o.ok) for o in outs]
                verd = spider_verdicts(db_path, ex["query"], [q or "SELECT" for q in res.sqls])
                exm = [bool(v.ex) and e for v, e in zip(verd, executable, strict=True)]
                ch = _vote([o.rows if o and o.ok else None for o in outs])
                row = {"idx": i, "db_id": db, "setting": s, "sqls": res.sqls, "executable": executable, "ex": exm,
                       "chosen": ch, "chosen_ex": exm[ch] if ch is not None else False, "generate_s": round(dt, 2),
                       "completion_tokens": res.completion_tokens, "prompt_tokens": res.prompt_tokens,
                       "few_shot": len(shots), "few_shot_mode": info.get("mode"),
                       "dtype": str(gen.loaded.dtype).replace("torch.", "")}
                f.write(json.dumps(row) + "\n")
                f.flush()
            print(f"[{qi + 1}/{len(idx)}] dev #{i} {db}", flush=True)
    print(summarize(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.constrained_eval", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--summarize", action="store_true", help="only print the table of an existing --out file")
    a = p.parse_args(argv)
    if a.summarize:
        print(summarize(a.out))
        return 0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
