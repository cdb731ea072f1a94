"""Early stop at the complete verdict (issue 12): decode steps, generated tokens and wall time of the CoT
discriminator with `early_stop` on vs off, measured side by side in one run.

The embedded model tends to write `{"correct": ...}` first and then keep reasoning to the full budget; with early
stop a row ends at the token that completes its verdict (the batch ends when every row has ended, by verdict or
EOS). Both variants use the default profile otherwise (schema, chat template, verdict forcing, EOS honoured), the
per-question path (`CotDiscriminator.score`: shared prefix once, the N candidates batched), and run interleaved
question by question, alternating which variant goes first. Reported per variant: wall time, decode steps (batched
forward passes after the prefill), generated tokens kept, the tokens the "off" run generated after its first
complete verdict, the verdict kinds, and how often the two variants agree on the verdict.

Workload: `benchmarks.discriminator_cpu.workload` (Spider dev questions of the Qwen2.5-Coder sample pool when the
shared data is present, else the demo database). Appends a section to BENCHMARKS.md (see benchmarks.report).

    python -m benchmarks.early_stop [--questions 3] [--n 4] [--budget 256] [--threads 1] [--no-append] [--json F]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

VARIANTS = ("on", "off")


def measure(d_on, d_off, reqs) -> dict:
    """{variant: totals} over the requests, plus per-candidate comparisons (`pairs`)."""
    tot = {v: {"wall_s": 0.0, "decode_steps": 0, "generated_tokens": 0, "rows": 0, "after_verdict": 0,
               "kinds": {"natural": 0, "forced": 0, "missing": 0}, "stopped": 0} for v in VARIANTS}
    pairs = []
    for qi, req in enumerate(reqs):
        order = VARIANTS if qi % 2 == 0 else VARIANTS[::-1]
        traces = {}
        for v in order:
            d = d_on if v == "on" else d_off
            t0 = time.perf_counter()
            traces[v] = d.traces(req)
            wall = time.perf_counter() - t0
            st = d.last_stats
            t = tot[v]
            t["wall_s"] += wall
            t["decode_steps"] += st.decode_steps
            t["generated_tokens"] += st.generated_tokens
            t["rows"] += len(traces[v])
            for tr in traces[v]:
                t["kinds"][tr.verdict_kind] += 1
                t["stopped"] += bool(tr.stopped)
                k = d_on._stop_at(tr.generated_ids)  # where the first complete verdict ends (the stop rule)
                if k is not None:
                    t["after_verdict"] += len(tr.generated_ids) - (k + 1)
        for a, b in zip(traces["on"], traces["off"], strict=True):
            pairs.append({"on": (a.verdict_kind, a.verdict, a.score), "off": (b.verdict_kind, b.verdict, b.score)})
    return {"variants": tot, "pairs": pairs}


def run(args, command: str) -> int:
    import torch

    from benchmarks.discriminator_cpu import workload
    from benchmarks.report import append_section, fmt, machine_info, markdown_table
    from core.runtime.checkpoint import load_checkpoint
    from core.runtime.embedded import embedded_checkpoint
    from discriminators.cot import CotDiscriminator

    if args.threads:
        torch.set_num_threads(args.threads)
    desc, reqs = workload(args.questions, args.n)
    lm = load_checkpoint(embedded_checkpoint(), name="embedded")
    d_on = CotDiscriminator(loaded=lm, name="embedded", budget=args.budget, early_stop=True)
    d_off = CotDiscriminator(loaded=lm, name="embedded", budget=args.budget, early_stop=False)
    CotDiscriminator(loaded=lm, name="embedded", budget=4).traces(reqs[0])  # warm-up, not counted
    res = measure(d_on, d_off, reqs)
    on, off = res["variants"]["on"], res["variants"]["off"]
    rows = []
    for v in VARIANTS:
        t = res["variants"][v]
        k = t["kinds"]
        rows.append([f"early stop {v}", t["rows"], fmt(t["wall_s"]), t["decode_steps"], t["generated_tokens"],
                     t["after_verdict"], t["stopped"], f"{k['natural']} / {k['forced']} / {k['missing']}"])
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"  # noqa: E731
    same = sum(p["on"][1] == p["off"][1] for p in res["pairs"])
    both_nat = [p for p in res["pairs"] if p["on"][0] == p["off"][0] == "natural"]
    dmax = max((abs(p["on"][2] - p["off"][2]) for p in both_nat), default=None)
    table = markdown_table(["variant", "candidates", "wall s", "decode steps", "generated tokens",
                            "tokens after the first complete verdict", "rows stopped at verdict",
                            "natural / forced / missing"], rows)
    summary = (f"off/on: wall {ratio(off['wall_s'], on['wall_s'])}, decode steps "
               f"{ratio(off['decode_steps'], on['decode_steps'])}, generated tokens "
               f"{ratio(off['generated_tokens'], on['generated_tokens'])}; same verdict {same}/{len(res['pairs'])}; "
               f"both natural {len(both_nat)}, max |d score| there {fmt(dmax) if dmax is not None else '-'}")
    print(table)
    print(summary)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"workload": desc, "budget": args.budget, **res}, f, indent=1)
    if not args.no_append:
        notes = [f"workload: {desc}; N={args.n} candidates per question, budget {args.budget} new tokens, EOS honoured, "
                 "greedy, fp32, default profile (schema, chat template, verdict forcing); per-question path "
                 "(`CotDiscriminator.score`), variants interleaved question by question, alternating which goes first",
                 "decode steps: batched forward passes after the prefill (a batch ends when all its rows have ended); "
                 "generated tokens: tokens kept per row (to the verdict with early stop)",
                 "tokens after the first complete verdict: what each row generated past the point where early stop "
                 "ends it (0 by construction when on)",
                 "verdicts differ by design where they differ: without early stop the answer's LAST verdict counts, "
                 "and a verdict followed by more text in a truncated, non-thinking output is a restatement, not an "
                 "answer (then forced)",
                 summary]
        append_section("Discriminator early stop at the complete verdict (issue 12)", command, table,
                       notes=notes, info=machine_info())
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", type=int, default=3)
    p.add_argument("--n", type=int, default=4, help="candidates per question")
    p.add_argument("--budget", type=int, default=256, help="reasoning budget (new tokens)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the raw figures to this file")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.early_stop", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    if args.questions < 1 or args.n < 1 or args.budget < 1:
        p.error("--questions, --n and --budget must be >= 1")
    return run(args, " ".join(["python -m benchmarks.early_stop", *(shlex.quote(a) for a in argv)]))


if __name__ == "__main__":
    sys.exit(main())
