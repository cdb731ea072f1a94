"""CPU generation settings side by side: fp32, bf16, oneDNN-prepacked Linear layers (fp32 or bf16 weights) and
torch int8 dynamic quantisation of the Linear layers, and the torch thread count, for the embedded generator on
the demo question (schema-constrained, n samples).

Each setting generates the same request `--reps` times after one warm-up (which also compiles the grammar);
settings are interleaved rep by rep so background load hits them alike. Reports median seconds per generate
call, tokens/s, the candidates' SQL agreement with the fp32 run (same seed), and how far each setting's
next-token distribution is from fp32's: mean KL(fp32 || setting) and top-1 agreement over every position of
a fixed 600-token text (this file's README), the quality price of the speed.

    python -m benchmarks.cpu_generate --reps 3 --n 3
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time

KINDS = ("fp32", "fp32-packed", "bf16", "bf16-packed", "int8")


def _model_for(base, kind: str):
    """`base` (float32, loaded unpacked) as setting `kind`: fp32 = as loaded; fp32-packed / bf16-packed = the
    Linear layers prepacked for oneDNN with float32 / bf16 weights (`core.runtime.checkpoint.prepack_linears`,
    what `load_checkpoint` does on a CPU); bf16 = the whole model cast to bf16; int8 = torch's dynamic int8
    quantisation of the Linear layers (per output channel)."""
    import torch

    from core.runtime.checkpoint import LoadedModel, prepack_linears

    if kind == "fp32":
        return base
    m, dt = copy.deepcopy(base.model), torch.float32
    if kind == "fp32-packed":
        prepack_linears(m, torch.float32)
    elif kind == "bf16-packed":
        prepack_linears(m, torch.bfloat16)
        dt = torch.bfloat16
    elif kind == "bf16":
        m, dt = m.to(torch.bfloat16), torch.bfloat16
    elif kind == "int8":
        import warnings

        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices (torch is pinned)
            warnings.simplefilter("ignore")
            m = quantize_dynamic(m, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        dt = "int8"
    else:
        raise ValueError(f"unknown setting {kind!r}; choose one of {', '.join(KINDS)}")
    m.eval()
    return LoadedModel(name=f"{base.name}-{kind}", path=base.path, model=m, tokenizer=base.tokenizer,
                       device="cpu", dtype=dt)


def _drift(base, other) -> tuple[float, float]:
    """Mean KL(base || other) per token and top-1 agreement over a fixed text (the repository README)."""
    from pathlib import Path

    import torch

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()[:4000]
    ids = base.tokenizer(text, return_tensors="pt")["input_ids"][:, :600]
    with torch.inference_mode():
        p = torch.log_softmax(base.model(input_ids=ids).logits[0].float(), -1)
        q = torch.log_softmax(other.model(input_ids=ids).logits[0].float(), -1)
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    return kl, (p.argmax(-1) == q.argmax(-1)).float().mean().item()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", default="fp32:1,fp32:2,fp32-packed:1,bf16:1,bf16-packed:1,int8:1",
                   help=f"kind:threads, comma-separated; kinds: {', '.join(KINDS)}")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=128)


def run(args: argparse.Namespace) -> int:
    import torch

    from core.runtime.checkpoint import load_checkpoint
    from core.runtime.embedded import embedded_checkpoint
    from generators.base import GenerationRequest, SamplingParams
    from generators.grammar import sql_grammar
    from generators.hf import TransformersGenerator
    from planner.examples import few_shot_examples
    from sqlbox.databases import DatabaseInfo, introspect
    from sqlbox.demo import DEMO_QUESTION, build_demo
    from sqlbox.schema import schema_to_prompt

    schema = introspect(DatabaseInfo("demo", build_demo(), "sqlite"), samples=0)
    req = GenerationRequest(question=DEMO_QUESTION, schema=schema_to_prompt(schema), grammar=sql_grammar(schema),
                            few_shot=few_shot_examples("demo", 3),
                            params=SamplingParams(n=args.n, temperature=0.7, top_p=0.95, max_tokens=args.max_tokens,
                                                  seed=0))
    base = load_checkpoint(embedded_checkpoint(), name="embedded", dtype="float32", prepack=False, share=False)
    settings = [tuple(s.split(":")) for s in args.settings.split(",") if s]
    gens = {}
    for kind, _ in settings:
        if kind not in gens:
            gens[kind] = TransformersGenerator(loaded=_model_for(base, kind), name=kind, constrained=True)
    times: dict[tuple, list[float]] = {s: [] for s in settings}
    toks: dict[tuple, int] = {}
    sqls: dict[tuple, list[str]] = {}
    warm = GenerationRequest(**{**req.__dict__, "params": SamplingParams(n=1, max_tokens=4, seed=0)})
    for kind in gens:  # warm-up: grammar compilation, first-call allocations
        gens[kind].generate(warm)
    for _ in range(args.reps):
        for s in settings:
            kind, th = s
            torch.set_num_threads(int(th))
            t0 = time.perf_counter()
            res = gens[kind].generate(req)
            times[s].append(time.perf_counter() - t0)
            toks[s], sqls[s] = res.completion_tokens, res.sqls
            print(f"{kind}:{th} {times[s][-1]:.1f} s {res.completion_tokens} tokens", flush=True)
    ref = sqls.get(("fp32", "1")) or next(iter(sqls.values()))
    drift = {kind: _drift(base, g.loaded) for kind, g in gens.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f} "
          f"(1 min) at the end; torch {torch.__version__}; n={args.n}, max_tokens={args.max_tokens}, reps={args.reps}")
    print("| setting | threads | median s / generate | completion tokens | tokens/s | same SQL as fp32:1 "
          "| KL(fp32 ‖ setting) nats/token | top-1 = fp32's |")
    print("|---|---|---|---|---|---|---|---|")
    for s in settings:
        med = statistics.median(times[s])
        same = sum(a == b for a, b in zip(sqls[s], ref, strict=False))
        kl, top1 = drift[s[0]]
        print(f"| {s[0]} | {s[1]} | {med:.1f} | {toks[s]} | {toks[s] / med:.1f} | {same}/{len(ref)} | {kl:.4f} "
              f"| {100 * top1:.1f} % |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_generate", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
