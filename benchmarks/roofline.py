"""Roofline of greedy decoding: the memory-bandwidth (and compute) bound on tokens/s, and the achieved fraction.

Owns the decode cost model and the machine's peak figures:

- bytes read per decode step = all weight bytes once (every parameter is read each step; a tied embedding matrix is
  counted once, as the LM head reads all of it) + the KV cache of every row (batch x attended context x KV bytes per
  token). The bound is `batch / (bytes_per_step / bandwidth)` tokens/s.
- FLOPs per generated token = 2 x non-embedding parameters + 2 x LM-head parameters + attention (4 x layers x context x
  heads x head_dim); the compute bound is `peak_flops / flops_per_token`. The roofline is the lower of the two.
- bandwidth: a GPU's datasheet figure looked up by `torch.cuda.get_device_name` (H100 SXM 3.35 TB/s, H100 PCIe 2.0 TB/s,
  H200 4.8 TB/s, ...), or `--bandwidth` in GB/s; on CPU a STREAM-like copy measured in-process with torch (bytes
  read + written per copy of a 256 MiB fp32 tensor, best of several). Peak FLOP/s: datasheet dense bf16 on GPUs,
  a measured fp32 matmul on CPU.

`python -m benchmarks roofline --arch qwen2-1.5b --batch 1,8,64 --context 1024` prints the bounds; with `--measure`
it also runs a short greedy decode at each batch size and reports the achieved fraction. The scoring benchmark calls
`decode_bound` for each of its variants.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

# Datasheet HBM bandwidth (bytes/s) and dense bf16 tensor FLOP/s, matched by substring of the device name (first hit).
GPU_PEAKS: list[tuple[str, float, float]] = [
    ("H200", 4.8e12, 989e12),
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100 NVL", 3.9e12, 835e12),
    ("H100", 3.35e12, 989e12),  # SXM
    ("GH200", 4.0e12, 989e12),
    ("B200", 8.0e12, 2250e12),
    ("A100-SXM4-80GB", 2.039e12, 312e12),
    ("A100 80GB PCIe", 1.935e12, 312e12),
    ("A100", 1.555e12, 312e12),
    ("L40S", 864e9, 362e12),
    ("L4", 300e9, 121e12),
    ("A10G", 600e9, 70e12),
    ("A10", 600e9, 125e12),
    ("T4", 320e9, 65e12),
    ("RTX 4090", 1.008e12, 165e12),
]


@dataclass
class Peaks:
    device: str
    bandwidth: float  # bytes/s
    flops: float  # FLOP/s
    bandwidth_source: str
    flops_source: str
    measured_bandwidth: float = 0.0  # CUDA: a device-to-device copy measured in-process (bytes read + written / s)


def stream_copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """STREAM-like copy on CPU: bytes read + written per `dst.copy_(src)`, best of `repeats` (bytes/s)."""
    import torch

    n = mib * 1024 * 1024 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best


def cuda_copy_bandwidth(device: str, mib: int = 1024, repeats: int = 10) -> float:
    """Device-to-device copy on a GPU: bytes read + written per `dst.copy_(src)`, best of `repeats` (bytes/s)."""
    import torch

    n = mib * 1024 * 1024 // 2
    src = torch.ones(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n * 2 / best


def cpu_matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s on CPU with torch's current thread count, best of `repeats`."""
    import torch

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def machine_peaks(device: str, *, bandwidth_gbs: float | None = None, flops_tflops: float | None = None) -> Peaks:
    """Peak bandwidth and FLOP/s of the device that runs the benchmark (overrides win)."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        bw = fl = None
        for key, b, f in GPU_PEAKS:
            if key.lower() in name.lower():
                bw, fl = b, f
                break
        bw_src = "datasheet" if bw else "unknown GPU: pass --bandwidth"
        fl_src = "datasheet dense bf16" if fl else "unknown GPU: pass --peak-tflops"
        measured = cuda_copy_bandwidth(device)
        if not bw and not bandwidth_gbs:
            bw, bw_src = measured, "measured device copy (unknown GPU)"
    else:
        import platform

        name = f"CPU {platform.machine()} x{torch.get_num_threads()} threads"
        bw = fl = None
        bw_src = fl_src = ""
        if not bandwidth_gbs:
            bw, bw_src = stream_copy_bandwidth(), "measured copy (torch, 256 MiB fp32)"
        if not flops_tflops:
            fl, fl_src = cpu_matmul_flops(), "measured fp32 matmul 1024^3"
    if bandwidth_gbs:
        bw, bw_src = bandwidth_gbs * 1e9, "--bandwidth"
    if flops_tflops:
        fl, fl_src = flops_tflops * 1e12, "--peak-tflops"
    peaks = Peaks(name, float(bw or 0.0), float(fl or 0.0), bw_src, fl_src)
    if device.startswith("cuda"):
        peaks.measured_bandwidth = measured
    return peaks


def param_counts(config) -> dict[str, int]:
    """Parameter counts of a Llama/Qwen2-style decoder from its config (no model needed)."""
    h, inter, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    heads = config.num_attention_heads
    kvh = getattr(config, "num_key_value_heads", None) or heads
    hd = getattr(config, "head_dim", None) or h // heads
    qkv_bias = getattr(config, "model_type", "") == "qwen2"  # Qwen2 has q/k/v biases
    attn = h * heads * hd + 2 * h * kvh * hd + heads * hd * h + ((heads + 2 * kvh) * hd if qkv_bias else 0)
    mlp = 3 * h * inter
    per_layer = attn + mlp + 2 * h
    embed = V * h
    tied = bool(getattr(config, "tie_word_embeddings", False))
    head = 0 if tied else V * h
    return {"layers": L * per_layer, "embed": embed, "lm_head": head, "norm": h,
            "total": L * per_layer + embed + head + h, "tied": int(tied)}


def kv_bytes_per_token(config, dtype_bytes: int) -> int:
    heads = config.num_attention_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // heads
    kvh = getattr(config, "num_key_value_heads", None) or heads
    return 2 * config.num_hidden_layers * kvh * hd * dtype_bytes


@dataclass
class Bound:
    batch: int
    context: float
    bytes_per_step: float
    weight_bytes: float
    kv_bytes: float
    flops_per_token: float
    bw_tokens_s: float  # memory-bandwidth bound
    compute_tokens_s: float  # compute bound (0 when the peak is unknown)

    @property
    def tokens_s(self) -> float:
        vals = [v for v in (self.bw_tokens_s, self.compute_tokens_s) if v > 0]
        return min(vals) if vals else 0.0

    @property
    def limiter(self) -> str:
        if self.compute_tokens_s > 0 and self.compute_tokens_s < self.bw_tokens_s:
            return "compute"
        return "memory"


def decode_bound(config, *, dtype_bytes: int, batch: int, context: float, peaks: Peaks) -> Bound:
    """Tokens/s bound of one greedy decode step of `batch` rows attending `context` tokens each."""
    pc = param_counts(config)
    # Weight bytes read per step: every matrix once; the tied embedding is read once (as the LM head),
    # the untied input embedding only gathers `batch` rows.
    head_params = config.vocab_size * config.hidden_size
    weight_params = pc["layers"] + pc["norm"] + head_params + (0 if pc["tied"] else batch * config.hidden_size)
    weight_bytes = weight_params * dtype_bytes
    kv_bytes = batch * context * kv_bytes_per_token(config, dtype_bytes)
    total = weight_bytes + kv_bytes
    heads = config.num_attention_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // heads
    flops_tok = 2 * (pc["layers"] + head_params) + 4 * config.num_hidden_layers * context * heads * hd
    bw_tok = batch * peaks.bandwidth / total if peaks.bandwidth else 0.0
    comp_tok = peaks.flops / flops_tok if peaks.flops else 0.0
    return Bound(batch, context, total, weight_bytes, kv_bytes, flops_tok, bw_tok, comp_tok)


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="smollm2-135m", help="architecture (see `python -m benchmarks archs`)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on cuda, fp32 on cpu) | float32 | bfloat16")
    p.add_argument("--batch", default="1,4,16", help="comma-separated batch sizes")
    p.add_argument("--context", type=int, default=512, help="prompt tokens per row before decoding")
    p.add_argument("--bandwidth", type=float, default=None, help="override peak memory bandwidth, GB/s")
    p.add_argument("--peak-tflops", type=float, default=None, help="override peak compute, TFLOP/s")
    p.add_argument("--measure", action="store_true", help="also time a greedy decode per batch size (loads the model)")
    p.add_argument("--steps", type=int, default=32, help="decode steps timed per batch size with --measure")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's choice; 1 is steadier on a busy shared machine)")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md")


def measure_decode(lm, batch: int, context: int, steps: int) -> float:
    """Decode-only tokens/s of `batch` rows after a `context`-token random prompt (KV-cached greedy loop)."""
    import torch

    from discriminators.batching import BatchedGreedy, ScoringJob

    g = torch.Generator().manual_seed(0)
    V = lm.model.config.vocab_size
    prefix = torch.randint(3, min(V, 30000), (max(context - 8, 1),), generator=g).tolist()
    suffixes = [torch.randint(3, min(V, 30000), (8,), generator=g).tolist() for _ in range(batch)]
    eng = BatchedGreedy(lm.model, budget=steps, answer_ids=(3, 4), ignore_eos=True)
    BatchedGreedy(lm.model, budget=2, answer_ids=(3, 4)).run([ScoringJob(prefix, suffixes[:1])])  # warm-up
    _, st = eng.run([ScoringJob(prefix, suffixes)])
    return st.rows * (st.decode_steps - 1) / st.decode_s if st.decode_steps > 1 else 0.0


def run(args: argparse.Namespace, command: str) -> int:
    from benchmarks.archs import build_config, get_arch, resolve_device, resolve_dtype
    from benchmarks.report import append_section, fmt, markdown_table

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    arch = get_arch(args.arch)
    device = resolve_device(args.device)
    dt = resolve_dtype(args.dtype, device)
    dtype_bytes = dt.itemsize
    batches = [int(b) for b in str(args.batch).split(",") if b.strip()]
    lm = None
    if args.measure or arch.embedded:
        from benchmarks.archs import load_model

        lm = load_model(args.arch, device=device, dtype=args.dtype)
        config = lm.model.config
    else:
        config = build_config(arch)
    peaks = machine_peaks(device, bandwidth_gbs=args.bandwidth, flops_tflops=args.peak_tflops)
    headers = ["batch", "context", "weights MB", "KV MB/step", "bound tok/s (mem)", "bound tok/s (compute)",
               "limiter"] + (["measured tok/s", "fraction"] if args.measure else [])
    rows = []
    for b in batches:
        ctx = args.context + (args.steps / 2 if args.measure else 0)
        bd = decode_bound(config, dtype_bytes=dtype_bytes, batch=b, context=ctx, peaks=peaks)
        row = [b, f"{ctx:.0f}", fmt(bd.weight_bytes / 1e6), fmt(bd.kv_bytes / 1e6), fmt(bd.bw_tokens_s),
               fmt(bd.compute_tokens_s), bd.limiter]
        if args.measure:
            m = measure_decode(lm, b, args.context, args.steps)
            row += [fmt(m), f"{m / bd.tokens_s:.1%}" if bd.tokens_s else "n/a"]
        rows.append(row)
    table = markdown_table(headers, rows)
    notes = [
        f"arch `{arch.name}` ({arch.description}), dtype {str(dt).replace('torch.', '')}, device {peaks.device}",
        f"peak bandwidth {peaks.bandwidth / 1e9:.1f} GB/s ({peaks.bandwidth_source}); "
        f"peak compute {peaks.flops / 1e12:.2f} TFLOP/s ({peaks.flops_source})",
        "bound = batch x bandwidth / (weight bytes + batch x context x KV bytes/token); compute bound = peak / FLOPs per token; "
        "the roofline is the lower one",
    ]
    if args.measure:
        notes.append(f"measured: {args.steps} greedy decode steps after a {args.context}-token prompt "
                     "(discriminators.batching: in-place KV cache, GQA SDPA, eager forward), decode time only")
    print(table)
    for n in notes:
        print("- " + n)
    if not args.no_append:
        append_section("Decode roofline", command, table, notes=notes)
    return 0
