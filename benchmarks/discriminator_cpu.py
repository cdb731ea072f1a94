"""CPU benchmark of the embedded model: load time (first use = GGUF conversion into a fresh cache, then
cached loads) and CoT discriminator throughput for N candidates per question with a fixed reasoning budget
(EOS ignored, so every path does the same work), measured side by side in one run:

- prefix reuse:     `CotDiscriminator.score` per question (shared prefix KV computed once, N suffixes batched;
                    in-place KV cache with grouped-query SDPA, the default `kv_cache="inplace"`)
- dynamic cache:    the same with transformers' own DynamicCache and attention (`kv_cache="dynamic"`)
- cross-question:   all questions' candidates in one batch (`score_many(requests)`)
- reference:        one candidate at a time with `model.generate` (`score_reference`)

Workload: the first Spider dev questions of the Qwen2.5-Coder sample pool (5 sampled SQL each) with schemas
from the Spider SQLite files, if the shared data is present; else the demo database. Scores are checked to
agree across paths (max |diff| reported). Appends a section to BENCHMARKS.md (see benchmarks.report).

    python -m benchmarks.discriminator_cpu [--questions 3] [--n 5] [--budget 256] [--no-reference] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time

SAMPLES = "spider_dev_samples/qwen2.5-coder-7b-instruct_T0.8_x5_200q.jsonl"


def workload(questions: int, n: int) -> tuple[str, list]:
    """(description, DiscriminationRequests)."""
    from core.settings import candidates_dir, spider_dir
    from discriminators.base import DiscriminationRequest
    from sqlbox.schema import schema_to_prompt

    pool = candidates_dir() / SAMPLES
    dev = spider_dir() / "dev.json"
    if pool.is_file() and dev.is_file() and (spider_dir() / "database").is_dir():
        from sqlbox.databases import DatabaseRegistry

        reg = DatabaseRegistry()
        reg.register_dir(spider_dir() / "database")
        data = json.loads(dev.read_text())
        reqs = []
        for line in pool.read_text().splitlines():
            row = json.loads(line)
            cands = row["candidates"][:n]
            if len(set(cands)) < min(3, n) or len(cands) < n:
                continue  # prefer questions whose samples differ
            ex = data[row["idx"]]
            reqs.append(DiscriminationRequest(question=ex["question"], schema=schema_to_prompt(reg.schema(row["db_id"])),
                                              sqls=cands, extra={"idx": row["idx"], "db_id": row["db_id"]}))
            if len(reqs) == questions:
                break
        idx = ", ".join(str(r.extra["idx"]) for r in reqs)
        return f"Spider dev questions {idx} (5 Qwen2.5-Coder-7B samples each, `{SAMPLES}`)", reqs
    from sqlbox.databases import registry_for

    reg = registry_for()
    schema = schema_to_prompt(reg.schema("demo"))
    base = ["SELECT count(*) FROM singer WHERE age > 30", "SELECT count(*) FROM singer", "SELECT name FROM singer WHERE age > 30",
            "SELECT count(*) FROM singer WHERE age >= 30", "SELECT count(name) FROM singer WHERE age > 30"]
    reqs = [DiscriminationRequest(question="How many singers are older than 30?", schema=schema, sqls=base[:n])
            for _ in range(questions)]
    return "demo database (Spider data absent)", reqs


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure_load() -> dict:
    from core.runtime.checkpoint import load_checkpoint
    from core.runtime.embedded import embedded_checkpoint

    with tempfile.TemporaryDirectory(prefix="sqlarbiter-bench-cache-") as tmp:
        path, convert_s = _timed(lambda: embedded_checkpoint(tmp))
        _, first_load_s = _timed(lambda: load_checkpoint(path, share=False))
        loads = [_timed(lambda: load_checkpoint(path, share=False))[1] for _ in range(3)]
    return {"convert_s": convert_s, "first_load_s": first_load_s, "cached_load_s": sorted(loads)[1]}


def run(args) -> int:
    import torch

    from benchmarks.report import append_section, machine_info, markdown_table
    from core.runtime.checkpoint import load_checkpoint
    from core.runtime.embedded import embedded_checkpoint
    from discriminators.cot import CotDiscriminator

    if args.threads:
        torch.set_num_threads(args.threads)
    print("measuring load time (conversion into a fresh temporary cache) ...", file=sys.stderr)
    load = measure_load()
    desc, reqs = workload(args.questions, args.n)
    if not reqs:
        print("error: no workload questions", file=sys.stderr)
        return 1
    lm = load_checkpoint(embedded_checkpoint(), name="SmolLM2-135M-Instruct")
    d = CotDiscriminator(loaded=lm, budget=args.budget, ignore_eos=True, batch_size=max(len(reqs) * args.n, 1))
    d_dyn = CotDiscriminator(loaded=lm, budget=args.budget, ignore_eos=True, batch_size=d.batch_size,
                             kv_cache="dynamic")
    warm = CotDiscriminator(loaded=lm, budget=4, ignore_eos=True)
    warm.score(reqs[0]), warm.score_many(reqs[:1]), warm.score_reference(reqs[0])  # one-time overheads
    CotDiscriminator(loaded=lm, budget=4, ignore_eos=True, kv_cache="dynamic").score(reqs[0])

    from tqdm import tqdm

    # Interleaved per question (prefix, dynamic cache, reference), so load drift on a shared machine hits every
    # path alike; the cross-question batch runs once over all questions in the middle of the run.
    per_q = {"prefix reuse (score)": lambda r: d.traces(r, "prefix"),
             "prefix reuse, transformers DynamicCache (kv_cache=dynamic)": lambda r: d_dyn.traces(r, "prefix")}
    if args.reference:
        per_q["reference, one at a time (score_reference)"] = lambda r: d.traces(r, "reference")
    cross = "cross-question batch (score_many)"
    order = [*per_q, cross]
    acc = {k: {"secs": 0.0, "traces": []} for k in order}
    for qi, r in enumerate(tqdm(reqs, desc="questions", file=sys.stderr)):
        for label, fn in per_q.items():
            traces, secs = _timed(lambda fn=fn, r=r: fn(r))
            acc[label]["secs"] += secs
            acc[label]["traces"] += traces
        if qi == len(reqs) // 2:
            traces, secs = _timed(lambda: d.traces_many(reqs))
            acc[cross]["secs"] = secs
            acc[cross]["traces"] = [t for ts in traces for t in ts]
    results: dict[str, dict] = {}
    for label in order:
        flat, secs = acc[label]["traces"], acc[label]["secs"]
        results[label] = {"secs": secs, "cands": len(flat), "tokens": sum(len(t.generated_ids) for t in flat),
                          "scores": [t.score for t in flat], "prompt_tokens": sum(len(t.prompt_ids) for t in flat),
                          "probs": [t.chosen_probs for t in flat], "parsed": sum(not t.parse_failure for t in flat)}
        print(f"{label}: {secs:.1f} s", file=sys.stderr)
    base_label = next(iter(results))
    base = results[base_label]["scores"]
    rows = []
    for label, r in results.items():
        diff = max(abs(a - b) for a, b in zip(base, r["scores"], strict=True))
        pdiff = max(abs(a - b) for pa, pb in zip(results[base_label]["probs"], r["probs"], strict=True)
                    for a, b in zip(pa, pb, strict=True))
        rows.append([label, r["cands"], r["secs"], r["cands"] / r["secs"], r["tokens"] / r["secs"],
                     r["secs"] / results[base_label]["secs"], f"{r['parsed']}/{r['cands']}", diff, pdiff])
    table_load = markdown_table(["load", "seconds"], [
        ["first use: GGUF -> safetensors conversion (fresh cache dir)", load["convert_s"]],
        ["first load of the converted checkpoint", load["first_load_s"]],
        ["cached load (median of 3, page cache warm)", load["cached_load_s"]],
    ])
    table = markdown_table(["discriminator path", "candidates", "wall s", "candidates/s", "gen tokens/s",
                            "time / prefix-reuse time", "verdict parsed", "max |score diff|",
                            "max |token prob diff|"], rows)
    print(table_load + "\n\n" + table)
    mean_prompt = results[base_label]["prompt_tokens"] / max(results[base_label]["cands"], 1)
    notes = [f"workload: {desc}; N={args.n} candidates per question, reasoning budget {args.budget} new tokens, "
             f"EOS ignored (every path generates exactly the budget), greedy, fp32, mean prompt {mean_prompt:.0f} tokens, "
             f"torch threads {torch.get_num_threads()}; per-question paths interleaved question by question",
             "model: embedded SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32)",
             "score and token-probability differences are against the prefix-reuse path (same generated tokens "
             "required for the token comparison)",
             "the machine is shared with other engineers' jobs; see the load average in the machine line"]
    if not args.no_append:
        cmd = "python -m benchmarks.discriminator_cpu " + " ".join(shlex.quote(a) for a in args.argv)
        append_section("Embedded model load time and CPU discriminator throughput", cmd.strip(),
                       table_load + "\n\n" + table, notes=notes, info=machine_info())
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", type=int, default=3)
    p.add_argument("--n", type=int, default=5, help="candidates per question")
    p.add_argument("--budget", type=int, default=256, help="reasoning budget (new tokens, EOS ignored)")
    p.add_argument("--no-reference", dest="reference", action="store_false", help="skip the slow one-at-a-time path")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.discriminator_cpu", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    args.argv = argv
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
