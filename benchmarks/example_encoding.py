"""What the example store's build costs, by how it encodes (issue 25, "cheaper builds"): side by side in one run.

    python -m benchmarks.example_encoding [--sample 1500] [--batches 32,64,128,256] [--threads 1,2] [--out F.json]

The store is Spider train (`planner.fewshot.spider_store`): 7,000 questions, masked. Every figure encodes with the
shipped MiniLM (`core.runtime.embeddings.encode`, no cache), so nothing is read back from a disk cache:

1. the grid: a fixed sample of `--sample` distinct masked questions (seed 0), for each batch size and each number
   of torch threads, in turn, each timed once after one warm-up batch;
2. distinct against all: every masked question (7,000) against the distinct ones the store encodes (6,513), at
   the store's batch size (`core.runtime.embeddings.ENCODE_BATCH`) and the process's torch threads;
3. agreement: the largest difference between the vectors of the same texts encoded at two batch sizes (batching
   pads, and the attention mask keeps the pooled vectors the same up to float error).

Prints a markdown table; the machine's load is read before and after each step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path


def _load1() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.example_encoding")
    ap.add_argument("--sample", type=int, default=1500)
    ap.add_argument("--batches", default="32,64,128,256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--skip-full", action="store_true", help="skip step 2 (the whole store, twice)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from core.runtime.embeddings import ENCODE_BATCH, encode, sentence_model
    from planner.fewshot import spider_store

    st = spider_store()
    if st is None:
        print("Spider train not found (core.settings.spider_dir())")
        return 2
    every = [e.masked for e in st.examples]
    sample = random.Random(0).sample(st.texts, min(args.sample, len(st.texts)))
    sentence_model()
    encode(sample[:64])  # load and warm the encoder outside every timing
    rows: list[dict] = []
    base_threads = torch.get_num_threads()
    vecs: dict[int, np.ndarray] = {}
    for th in [int(x) for x in args.threads.split(",")]:
        torch.set_num_threads(th)
        for b in [int(x) for x in args.batches.split(",")]:
            l0 = _load1()
            t = time.perf_counter()
            v = encode(sample, batch_size=b)
            dt = time.perf_counter() - t
            vecs.setdefault(b, v)
            rows.append({"step": "grid", "texts": len(sample), "batch": b, "threads": th, "s": round(dt, 2),
                         "texts_per_s": round(len(sample) / dt, 1), "load": [round(l0, 2), round(_load1(), 2)]})
            print(json.dumps(rows[-1]), flush=True)
    torch.set_num_threads(base_threads)
    bs = sorted(vecs)
    diff = max(float(np.abs(vecs[b] - vecs[bs[0]]).max()) for b in bs)
    if not args.skip_full:
        for name, texts in (("all masked questions", every), ("distinct masked questions (the store)", st.texts)):
            l0 = _load1()
            t = time.perf_counter()
            encode(texts, batch_size=ENCODE_BATCH)
            dt = time.perf_counter() - t
            rows.append({"step": name, "texts": len(texts), "batch": ENCODE_BATCH, "threads": base_threads, "s": round(dt, 2),
                         "texts_per_s": round(len(texts) / dt, 1), "load": [round(l0, 2), round(_load1(), 2)]})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| step | texts | batch | torch threads | s | texts/s | load before -> after |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['step']} | {r['texts']} | {r['batch']} | {r['threads']} | {r['s']} | {r['texts_per_s']} | "
              f"{r['load'][0]} -> {r['load'][1]} |")
    print(f"\nlargest vector difference across batch sizes {bs}: {diff:.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "max_diff_across_batches": diff}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
