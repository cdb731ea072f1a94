"""The discriminator scoring benchmark: three ways of scoring Q questions x N candidates, same work, same scores.

Workload: Q Spider dev questions (evenly spaced over the 200 questions of
`candidates/spider_dev_samples/qwen2.5-coder-7b-instruct_T0.8_x5_200q.jsonl`) with their N=5 sampled candidates,
the schema as the planner renders it (`sqlbox.databases` + `sqlbox.schema.schema_to_prompt`; `tables.json` if those
are missing), the project's CoT prompt (`discriminators.prompts`, `cot-v1`). Every candidate decodes exactly `budget`
new tokens greedily with EOS ignored, so every variant does the same work.
`--save-workload FILE` writes that rendered workload (and the tokenizer, to `tokenizer/` beside it) so a machine without
the Spider data or the embedded model runs the identical prompts with `--workload FILE` (`make gpu-bundle`).

Variants:
- (a) reference: one candidate at a time with `model.generate`.
- (b) per question: its N candidates in one batch, the shared prefix (instructions, schema, question) prefilled once
  and its KV cache reused.
- (c) cross-question: candidates of many questions in one batch (static batching: with EOS ignored all rows finish
  together, so there is no tail to refill). Batch size: on CUDA computed from free GPU memory and KV bytes per token
  (`--batch-size auto`), on CPU a fixed moderate batch.

All variants run the project discriminator's public paths (`discriminators.cot.CotDiscriminator.score_reference` /
`score` / `score_many`, through their `traces` so the per-token probabilities are visible), i.e. its one decoding engine
`discriminators.batching.BatchedGreedy`: (a) via `generate`, (b) and (c) via its static batcher (each question's prefix
prefilled once, in-place KV cache, grouped-query SDPA without repeated K/V, no host sync inside the decode loop).
Optional variant (c0) runs (c) with transformers' own `DynamicCache` and attention (`kv_cache="dynamic"`), the engine
as it was before the in-place cache: the side-by-side measure of what the in-place cache and GQA attention buy.

Comparable score: with random weights the CoT verdict is noise and rarely parses, so the check compares what every
path defines for any weights: the generated token ids and the probability of each generated token (the "score" is
the probability of the FINAL generated token; all steps are compared too), and the discriminator's own soft score
(`Score.score`, the fallback when unparseable). Tolerances: fp32 1e-4 absolute on probabilities with
identical tokens required; bf16/fp16 2e-2 on the first step's probability (before any trajectory can diverge) and on
every step of the rows whose tokens are identical, and the fraction of rows with identical tokens is reported (with
random weights greedy trajectories are chaotic: a bf16 rounding difference can flip a near-tie argmax).

Reported per variant: candidates/s, generated tokens/s, peak memory (CUDA: max_memory_allocated above the weights;
CPU: peak RSS above the RSS at the variant's start, sampled every 5 ms from /proc/self/statm), p50/p95 time to score a
question (from the start of its first batch to the end of its last), speed-up over (a), and the decode roofline
(`benchmarks.roofline`) with the achieved fraction.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES_FILE = "qwen2.5-coder-7b-instruct_T0.8_x5_200q.jsonl"


# --------------------------------------------------------------------------------------------- workload


@dataclass
class WorkItem:
    idx: int  # index into Spider dev.json
    db_id: str
    question: str
    schema: str
    sqls: list[str]


class WorkloadUnavailable(RuntimeError):
    pass


def _tables_json_schema(entry: dict) -> str:
    """CREATE TABLE text from a Spider tables.json entry (fallback when sqlbox.schema is unavailable)."""
    cols: dict[int, list[str]] = {}
    for (t, name), typ in zip(entry["column_names_original"], entry["column_types"], strict=True):
        if t >= 0:
            cols.setdefault(t, []).append(f"  {name} {typ}")
    return "\n\n".join(f"CREATE TABLE {tn} (\n" + ",\n".join(cols.get(i, [])) + "\n);"
                       for i, tn in enumerate(entry["table_names_original"]))


def load_workload(questions: int, n: int = 5, *, samples: Path | None = None,
                  schema_max_tokens: int | None = 1024) -> tuple[list[WorkItem], str]:
    """Q questions with N candidates each, from the Spider dev sample pool. Raises WorkloadUnavailable."""
    from core.settings import candidates_dir, spider_dir

    samples = samples or candidates_dir() / "spider_dev_samples" / SAMPLES_FILE
    sp = spider_dir()
    if not samples.is_file() or not (sp / "dev.json").is_file():
        raise WorkloadUnavailable(f"benchmark data not found ({samples}, {sp / 'dev.json'}); "
                                  "set SQLARBITER_SHARED_DATA / SPIDER_DIR")
    lines = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
    if questions < 1:
        raise ValueError("--questions must be >= 1")
    q = min(questions, len(lines))
    pick = [lines[(i * len(lines)) // q] for i in range(q)]
    dev = json.loads((sp / "dev.json").read_text())
    schema_of: Callable[[str], str]
    try:
        from sqlbox.databases import DatabaseRegistry
        from sqlbox.schema import schema_to_prompt

        reg = DatabaseRegistry()
        reg.register_dir(sp / "database")
        schema_of = lambda db: schema_to_prompt(reg.schema(db), max_tokens=schema_max_tokens)  # noqa: E731
        how = "sqlbox.schema.schema_to_prompt"
    except ImportError:
        tables = {e["db_id"]: e for e in json.loads((sp / "tables.json").read_text())}
        schema_of = lambda db: _tables_json_schema(tables[db])  # noqa: E731
        how = "tables.json"
    cache: dict[str, str] = {}
    items = []
    for rec in pick:
        db = rec["db_id"]
        if db not in cache:
            cache[db] = schema_of(db)
        sqls = list(rec["candidates"])[:n]
        while len(sqls) < n:  # pools hold 5; repeat to reach a larger N
            sqls.append(sqls[len(sqls) % len(rec["candidates"])])
        items.append(WorkItem(rec["idx"], db, dev[rec["idx"]]["question"], cache[db], sqls))
    return items, f"{q} Spider dev questions x {n} candidates ({samples.name}); schema via {how}"


def save_workload(items: list[WorkItem], description: str, path: Path) -> None:
    """Write the rendered workload (questions, schema text, candidates) to a JSON file, and the tokenizer that turns
    it into prompts to `tokenizer/` beside it: a machine without the Spider data or the embedded model (e.g. a GPU
    box) then runs the identical prompts with `--workload FILE`."""
    from benchmarks.archs import save_tokenizer

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"description": description, "items": [w.__dict__ for w in items]}, indent=1))
    save_tokenizer(path.parent / "tokenizer")


def read_workload(path: Path, questions: int | None, n: int) -> tuple[list[WorkItem], str]:
    """A workload file written by `save_workload` (the first `questions`, candidates cut or repeated to `n`)."""
    try:
        data = json.loads(path.read_text())
        items = [WorkItem(**w) for w in data["items"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WorkloadUnavailable(f"cannot read workload file {path}: {e}") from e
    if questions is not None:
        if questions < 1:
            raise ValueError("--questions must be >= 1")
        items = items[:questions]
    for w in items:
        pool = list(w.sqls)
        w.sqls = [pool[i % len(pool)] for i in range(n)]
    return items, f"{len(items)} of {data['description']} (from {path.name})"


# --------------------------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory of a block: CUDA max_memory_allocated above the start, or sampled RSS above the start."""

    def __init__(self, device: str, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.peak_bytes = 0
        self.start_bytes = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @staticmethod
    def trim() -> None:
        """Return freed heap memory to the OS (glibc malloc_trim) so a variant's RSS peak is not hidden by pages
        an earlier variant freed but the allocator kept."""
        import ctypes
        import gc

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_bytes = torch.cuda.memory_allocated()
        else:
            self.trim()
            self.start_bytes = self.rss()
            self._peak = self.start_bytes
            self._stop = threading.Event()

            def sample():
                while not self._stop.is_set():
                    self._peak = max(self._peak, self.rss())
                    self._stop.wait(self.interval)

            self._t = threading.Thread(target=sample, daemon=True)
            self._t.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.start_bytes
            self.total_peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._t.join()
            self._peak = max(self._peak, self.rss())
            self.peak_bytes = self._peak - self.start_bytes
            self.total_peak = self._peak
        return False


# --------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    """One scored candidate, engine-independent."""

    tokens: list[int]
    probs: list[float]  # probability of each generated token
    soft: float | None  # the discriminator's soft score (Score.score)
    prompt_tokens: int


@dataclass
class VariantResult:
    name: str
    rows: dict[tuple[int, int], Row]  # (question index, candidate index) -> row
    wall_s: float
    question_s: list[float]  # time to score each question
    peak_bytes: int
    total_peak_bytes: int
    batch_rows: float  # mean rows per batch
    questions: int
    decode_s: float | None = None  # decode-only time when the engine reports it
    decode_tokens: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def candidates(self) -> int:
        return len(self.rows)

    @property
    def generated(self) -> int:
        return sum(len(r.tokens) for r in self.rows.values())


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --------------------------------------------------------------------------------------------- engines


class CotEngine:
    """The variants through the project's CoT discriminator (discriminators.cot)."""

    def __init__(self, bm, budget: int, prompt: str = "cot-v1"):
        from discriminators.batching import RunStats
        from discriminators.cot import CotDiscriminator

        self.bm = bm
        self.disc = CotDiscriminator(loaded=bm.as_checkpoint(), name=bm.arch.name, budget=budget, ignore_eos=True,
                                     prompt=prompt, batch_size=64)
        self.budget = budget
        self.stats = RunStats()

    def requests(self, items: list[WorkItem]):
        from discriminators.base import DiscriminationRequest

        return [DiscriminationRequest(question=w.question, schema=w.schema, sqls=w.sqls) for w in items]

    def prompt_lengths(self, items: list[WorkItem]) -> list[list[int]]:
        out = []
        for r in self.requests(items):
            pre, sufs = self.disc.prompt_parts(r)
            out.append([len(pre) + len(s) for s in sufs])
        return out

    @staticmethod
    def _row(t) -> Row:
        return Row(list(t.generated_ids), [float(p) for p in t.chosen_probs], float(t.score), len(t.prompt_ids))

    def _traces(self, items: list[WorkItem], method: str, *, kv_cache: str = "inplace", batch_size: int = 64):
        self.disc.kv_cache, self.disc.batch_size = kv_cache, batch_size
        reqs = self.requests(items)
        ts = self.disc.traces_many(reqs) if method == "batch" else [self.disc.traces(reqs[0], method=method)]
        self.stats.add(self.disc.last_stats)
        return [[self._row(t) for t in tr] for tr in ts]

    def reference(self, item: WorkItem) -> list[Row]:
        return self._traces([item], "reference")[0]

    def per_question(self, item: WorkItem) -> list[Row]:
        return self._traces([item], "prefix", batch_size=max(len(item.sqls), 1))[0]

    def cross(self, items: list[WorkItem], batch_size: int, kv_cache: str = "inplace") -> list[list[Row]]:
        return self._traces(items, "batch", kv_cache=kv_cache, batch_size=batch_size)

    def reset_stats(self):
        from discriminators.batching import RunStats

        self.stats = RunStats()

    def decode_info(self):
        """(decode seconds, decode-step tokens, mean attended context) of the batched runs since reset_stats."""
        st = self.stats
        if st.decode_steps <= 1:
            return None
        return st.decode_s, st.decode_tokens, st.mean_context


# --------------------------------------------------------------------------------------------- variants


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def group_questions(items: list[WorkItem], batch_size: int, order: list[int] | None = None) -> list[list[int]]:
    """Whole questions packed into batches of at most `batch_size` rows, in `order` (default: as given; a question
    larger than the batch gets a batch of its own)."""
    groups: list[list[int]] = []
    cur: list[int] = []
    rows = 0
    for i in order if order is not None else range(len(items)):
        w = items[i]
        if cur and rows + len(w.sqls) > batch_size:
            groups.append(cur)
            cur, rows = [], 0
        cur.append(i)
        rows += len(w.sqls)
    if cur:
        groups.append(cur)
    return groups


def run_variant(name: str, engine, items: list[WorkItem], device: str, *, batch_size: int = 1,
                progress: bool = True) -> VariantResult:
    from tqdm import tqdm

    if hasattr(engine, "reset_stats"):
        engine.reset_stats()
    rows: dict[tuple[int, int], Row] = {}
    qtimes: list[float] = []
    batches = 0
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        if name in ("c", "c0"):
            # questions of similar prompt length together: less padding in each batch
            lens = engine.prompt_lengths(items)
            groups = group_questions(items, batch_size, sorted(range(len(items)), key=lambda i: max(lens[i])))
            for g in tqdm(groups, desc=f"({name}) batches", disable=not progress, leave=False):
                s = time.perf_counter()
                res = engine.cross([items[i] for i in g], batch_size, "dynamic" if name == "c0" else "inplace")
                _sync(device)
                el = time.perf_counter() - s
                for i, rs in zip(g, res, strict=True):
                    for k, r in enumerate(rs):
                        rows[(i, k)] = r
                    qtimes.append(el)
                batches += 1
        else:
            for i, w in enumerate(tqdm(items, desc=f"({name}) questions", disable=not progress, leave=False)):
                s = time.perf_counter()
                rs = engine.reference(w) if name == "a" else engine.per_question(w)
                _sync(device)
                qtimes.append(time.perf_counter() - s)
                for k, r in enumerate(rs):
                    rows[(i, k)] = r
                batches += len(rs) if name == "a" else 1
        wall = time.perf_counter() - t0
    vr = VariantResult(name, rows, wall, qtimes, mem.peak_bytes, mem.total_peak, len(rows) / max(batches, 1),
                       len(items))
    info = engine.decode_info() if name != "a" else None
    if info:
        vr.decode_s, vr.decode_tokens, vr.extra["mean_context"] = info
    return vr


# --------------------------------------------------------------------------------------------- equivalence


@dataclass
class Agreement:
    variant: str
    rows: int
    identical: int
    max_first: float  # |dp| at the first generated token, all rows
    max_final: float  # |dp| of the final token, rows with identical tokens
    max_any: float  # |dp| at any step, rows with identical tokens
    max_soft: float  # |d soft score|, rows with identical tokens
    min_common_prefix: int  # shortest common token prefix among diverging rows (budget if none diverge)
    tol: float
    strict: bool  # fp32: identical tokens required

    @property
    def ok(self) -> bool:
        if self.rows == 0:
            return False
        within = max(self.max_first, self.max_final, self.max_any, self.max_soft) <= self.tol
        return within and (self.identical == self.rows or not self.strict)


def compare(ref: VariantResult, other: VariantResult, tol: float, strict: bool, budget: int) -> Agreement:
    keys = [k for k in ref.rows if k in other.rows]
    ident = 0
    mf = mfi = ma = ms = 0.0
    mcp = budget
    for k in keys:
        a, b = ref.rows[k], other.rows[k]
        if a.probs and b.probs:
            mf = max(mf, abs(a.probs[0] - b.probs[0]))
        if a.tokens == b.tokens:
            ident += 1
            if a.probs:
                mfi = max(mfi, abs(a.probs[-1] - b.probs[-1]))
                ma = max(ma, max(abs(x - y) for x, y in zip(a.probs, b.probs, strict=True)))
            if a.soft is not None and b.soft is not None:
                ms = max(ms, abs(a.soft - b.soft))
        else:
            cp = next((i for i, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=False)) if x != y),
                      min(len(a.tokens), len(b.tokens)))
            mcp = min(mcp, cp)
    return Agreement(other.name, len(keys), ident, mf, mfi, ma, ms, mcp, tol, strict)


# --------------------------------------------------------------------------------------------- batch size


def auto_batch_size(bm, prompt_lens: list[int], budget: int, *, max_batch: int, cpu_default: int,
                    suffix_tokens: int = 128, fraction: float = 0.8) -> tuple[int, str]:
    """Rows per batch for variant (c): CUDA free memory / bytes per row; CPU: a fixed moderate batch.

    Per row (the in-place engine): its KV buffer (prompt + budget slots; x1.1 for prefix/suffix padding), the suffix
    prefill's activations (at most `suffix_tokens` tokens: the prefix runs alone, batch 1) and the decode step's
    logits (model dtype + two fp32 temporaries)."""
    if not bm.device.startswith("cuda"):
        return cpu_default, f"fixed CPU batch {cpu_default}"
    import torch

    from benchmarks.roofline import kv_bytes_per_token

    cfg = bm.model.config
    db = bm.dtype.itemsize
    free, _total = torch.cuda.mem_get_info()
    ctx = int((max(prompt_lens) + budget) * 1.1)
    kv = kv_bytes_per_token(cfg, db) * ctx
    act = suffix_tokens * (3 * cfg.intermediate_size + 4 * cfg.hidden_size) * db
    logits = cfg.vocab_size * (db + 8)
    per_row = kv + act + logits
    b = int(free * fraction // per_row)
    b = max(1, min(b, max_batch))
    return b, (f"auto: {fraction:.0%} of {free / 2**30:.1f} GiB free / {per_row / 2**20:.1f} MiB per row "
               f"(KV {kv_bytes_per_token(cfg, db)} B/token x {ctx} slots + suffix prefill activations + logits), "
               f"capped at {max_batch}")


# --------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="smollm2-135m",
                   help="smollm2-135m (embedded, real weights) | qwen2-small | qwen2-1.5b | qwen2-7b")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on cuda, fp32 on cpu) | float32 | bfloat16")
    p.add_argument("--questions", type=int, default=None,
                   help="questions (default: 4 on CPU, 200 = the whole sample pool on CUDA)")
    p.add_argument("--workload", type=Path, default=None,
                   help="read the rendered workload from this JSON file (written by --save-workload) instead of the "
                        "Spider data")
    p.add_argument("--save-workload", type=Path, default=None,
                   help="write the rendered workload (questions, schemas, candidates) to this JSON file, the embedded "
                        "tokenizer to tokenizer/ beside it, and exit")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="saved tokenizer directory (default: tokenizer/ beside --workload if present, else the "
                        "embedded model's)")
    p.add_argument("--n", type=int, default=5, help="candidates per question")
    p.add_argument("--budget", type=int, default=None, help="new tokens per candidate, EOS ignored (default: 64 CPU, 512 CUDA)")
    p.add_argument("--ref-questions", type=int, default=None,
                   help="questions scored by the slow reference (a) (default: all on CPU, 4 on CUDA); the equivalence "
                        "check covers those")
    p.add_argument("--b-questions", type=int, default=None,
                   help="questions scored by the per-question variant (b) (default: all on CPU, 8 on CUDA)")
    p.add_argument("--batch-size", default="auto", help="rows per batch in (c): auto or an integer")
    p.add_argument("--max-batch", type=int, default=1024, help="cap on the auto batch size")
    p.add_argument("--cpu-batch", type=int, default=10, help="(c) batch size on CPU with --batch-size auto")
    p.add_argument("--variants", default="a,b,c",
                   help="subset of a,b,c,c0 to run (c0: (c) on transformers' DynamicCache + attention, the baseline)")
    p.add_argument("--schema-max-tokens", type=int, default=1024, help="schema prompt budget (approx. tokens)")
    p.add_argument("--tol", type=float, default=None, help="score tolerance (default: 1e-4 fp32, 2e-2 bf16/fp16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--bandwidth", type=float, default=None, help="override peak bandwidth for the roofline, GB/s")
    p.add_argument("--peak-tflops", type=float, default=None, help="override peak compute for the roofline, TFLOP/s")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's choice; 1 is steadier on a busy shared machine)")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md")
    p.add_argument("--json", dest="json_out", default=None, help="also write the raw results to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@dataclass
class ScoringReport:
    variants: dict[str, VariantResult]
    agreements: list[Agreement]
    table: str
    check_table: str
    notes: list[str]
    ok: bool


def run_benchmark(args: argparse.Namespace, items: list[WorkItem] | None = None, workload: str = "",
                  bm=None) -> ScoringReport:
    """Run the variants of `args`. `items` (else the Spider workload) and `bm` (else `args.arch` loaded) may be
    given by the caller (tests)."""
    import torch

    from benchmarks.archs import load_model, resolve_device
    from benchmarks.report import fmt, markdown_table
    from benchmarks.roofline import decode_bound, machine_peaks

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    on_gpu = device.startswith("cuda")
    budget = args.budget or (512 if on_gpu else 64)
    questions = args.questions or (200 if on_gpu else 4)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(variants) <= {"a", "b", "c", "c0"} or not variants:
        raise ValueError(f"--variants: choose from a,b,c,c0 (got {args.variants!r})")
    if items is None and getattr(args, "workload", None):
        items, workload = read_workload(args.workload, args.questions or (None if on_gpu else questions), args.n)
    elif items is None:
        items, workload = load_workload(questions, args.n, schema_max_tokens=args.schema_max_tokens)
    if bm is None:
        tok_dir = getattr(args, "tokenizer", None)
        if tok_dir is None and getattr(args, "workload", None) and (args.workload.parent / "tokenizer").is_dir():
            tok_dir = args.workload.parent / "tokenizer"
        bm = load_model(args.arch, device=device, dtype=args.dtype, seed=args.seed, tokenizer=tok_dir)
    engine = CotEngine(bm, budget)
    lens = engine.prompt_lengths(items)
    flat_lens = [x for ls in lens for x in ls]
    if args.batch_size == "auto":
        bs, bs_how = auto_batch_size(bm, flat_lens, budget, max_batch=args.max_batch,
                                     cpu_default=args.cpu_batch)
    else:
        bs, bs_how = int(args.batch_size), "--batch-size"
    if bs < args.n:
        bs = args.n
    fp32 = bm.dtype == torch.float32
    tol = args.tol if args.tol is not None else (1e-4 if fp32 else 2e-2)
    nref = args.ref_questions if args.ref_questions is not None else (2 if on_gpu else len(items))
    nref = max(1, min(nref, len(items)))
    nb = args.b_questions if args.b_questions is not None else (8 if on_gpu else len(items))
    nb = max(1, min(nb, len(items)))

    # warm-up (lazy init, kernels, allocator): a tiny budget on the first question, not timed
    warm = CotEngine(bm, 2)
    warm.per_question(items[0])
    for v in ("c", "c0"):
        if v in variants and len(items) > 1:
            warm.cross(items[:2], 2 * args.n, "dynamic" if v == "c0" else "inplace")
    del warm

    progress = not args.no_progress
    res: dict[str, VariantResult] = {}
    skipped: list[str] = []
    for v in variants:
        sub = items[:nref] if v == "a" else items[:nb] if v == "b" else items
        try:
            res[v] = run_variant(v, engine, sub, device, batch_size=bs, progress=progress)
        except torch.OutOfMemoryError as e:  # e.g. (c0): transformers' cache needs more memory than the in-place one
            skipped.append(f"({v}) ran out of device memory at batch {bs} and was skipped: {str(e).splitlines()[0]}")
            print(skipped[-1], flush=True)
            torch.cuda.empty_cache()
            continue
        r = res[v]
        print(f"({v}) {r.candidates} candidates in {r.wall_s:.2f} s: {r.candidates / r.wall_s:.3f} cand/s", flush=True)

    # equivalence
    agreements: list[Agreement] = []
    base = "a" if "a" in res else None
    for v in ("b", "c", "c0"):
        if base and v in res:
            agreements.append(compare(res[base], res[v], tol, fp32, budget))
    if "b" in res and "c" in res:
        ag = compare(res["b"], res["c"], tol, fp32, budget)
        ag.variant = "c vs b"
        agreements.append(ag)

    # roofline
    peaks = machine_peaks(device, bandwidth_gbs=args.bandwidth, flops_tflops=args.peak_tflops)
    mean_prompt = statistics.mean(flat_lens)
    headers = ["variant", "questions", "candidates", "batch rows", "wall s", "cand/s", "gen tok/s", "vs (a)",
               "p50 q s", "p95 q s", "peak MB", "peak total MB", "decode tok/s", "roofline tok/s", "of roofline"]
    rows = []
    label = {"a": "(a) reference: 1 cand/call, generate", "b": "(b) per question, prefix once",
             "c": f"(c) cross-question, batch {bs}",
             "c0": f"(c0) = (c) on transformers' DynamicCache + attention, batch {bs}"}
    for v, r in res.items():
        cps = r.candidates / r.wall_s
        tps = r.generated / r.wall_s
        speed = f"{cps / (res['a'].candidates / res['a'].wall_s):.2f}x" if "a" in res else "n/a"
        if r.decode_s:
            dec = r.decode_tokens / r.decode_s
            ctx = r.extra.get("mean_context", mean_prompt + budget / 2)
        else:
            dec = None  # whole-run tokens/s stands in (includes prefill and host work)
            ctx = mean_prompt + budget / 2
        bd = decode_bound(bm.model.config, dtype_bytes=bm.dtype.itemsize, batch=max(1, round(r.batch_rows)),
                          context=ctx, peaks=peaks)
        achieved = dec if dec is not None else tps
        rows.append([label[v], r.questions, r.candidates, fmt(r.batch_rows), fmt(r.wall_s), fmt(cps), fmt(tps), speed,
                     fmt(pct(r.question_s, 0.5)), fmt(pct(r.question_s, 0.95)), fmt(r.peak_bytes / 2**20),
                     fmt(r.total_peak_bytes / 2**20), fmt(dec) if dec is not None else "-", fmt(bd.tokens_s),
                     f"{achieved / bd.tokens_s:.1%}" if bd.tokens_s else "n/a"])
    table = markdown_table(headers, rows)
    ch_headers = ["compared", "rows", "identical tokens", "max |dp| first token", "max |dp| final token",
                  "max |dp| any step", "max |d soft score|", "min common prefix", "tolerance", "result"]
    ch_rows = [[f"{a.variant} vs a" if "vs" not in a.variant else a.variant, a.rows, f"{a.identical}/{a.rows}",
                f"{a.max_first:.2e}", f"{a.max_final:.2e}", f"{a.max_any:.2e}", f"{a.max_soft:.2e}",
                a.min_common_prefix, f"{a.tol:g}", "PASS" if a.ok else "FAIL"] for a in agreements]
    check_table = markdown_table(ch_headers, ch_rows) if agreements else "(no equivalence check: run (a) with (b)/(c))"
    ok = all(a.ok for a in agreements)
    dtype_name = str(bm.dtype).replace("torch.", "")
    notes = [
        f"workload: {workload}; mean prompt {mean_prompt:.0f} tokens (min {min(flat_lens)}, max {max(flat_lens)}); "
        f"budget {budget} new tokens per candidate, EOS ignored (every candidate generates exactly {budget})",
        f"model: `{bm.arch.name}` ({bm.arch.description}), {bm.n_params / 1e6:.1f} M params, {dtype_name} on "
        f"{device}; tokenizer: {bm.tokenizer.kind} (ids mod vocab {bm.tokenizer.vocab_size})",
        "engine: discriminators.cot.CotDiscriminator traces of score_reference / score / score_many, i.e. "
        "discriminators.batching.BatchedGreedy (reference via generate; (b)/(c) in-place KV cache + GQA SDPA; "
        "(c0) = (c) on transformers' DynamicCache and attention)",
        f"(a) ran on the first {nref} question(s), (b) on the first {nb}, (c)/(c0) on all {len(items)}; rates "
        f"compare; (c) batch size {bs} ({bs_how}); whole questions per batch",
        *skipped,
        "time to score a question: (a)/(b) its own calls; (c) from the start to the end of the batch holding it",
        "peak MB: " + ("torch.cuda.max_memory_allocated above the allocation at the variant's start (weights); "
                       "peak total MB: max_memory_allocated" if on_gpu else
                       "peak RSS above the RSS at the variant's start (after gc + malloc_trim), sampled every 5 ms; "
                       "peak total MB: the process's peak RSS during the variant"),
        f"roofline: batch x {peaks.bandwidth / 1e9:.1f} GB/s ({peaks.bandwidth_source}) / (weight bytes + batch x "
        f"context x KV bytes/token), capped by compute {peaks.flops / 1e12:.2f} TFLOP/s ({peaks.flops_source}); "
        "achieved = decode-only tokens/s where the engine reports it, else whole-run gen tok/s",
        *([f"measured device-to-device copy on this GPU: {peaks.measured_bandwidth / 1e9:.0f} GB/s (bytes read + "
           f"written); the fractions above are against the datasheet {peaks.bandwidth / 1e9:.0f} GB/s"]
          if peaks.measured_bandwidth else []),
        "score check: identical generated tokens and per-token probabilities (the comparable score = probability of "
        "the final generated token); max |d soft score| compares the engine's soft score; "
        + ("fp32: all tokens identical and every |dp| <= tol" if fp32 else
           "bf16/fp16: first-token |dp| <= tol for all rows, all |dp| <= tol on rows with identical tokens; the "
           "identical-token fraction is reported (random-weight greedy trajectories may diverge on near ties)"),
        f"score check result: {'PASS' if ok else 'FAIL'}",
    ]
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "variants": {v: {"wall_s": r.wall_s, "candidates": r.candidates, "generated": r.generated,
                             "question_s": r.question_s, "peak_bytes": r.peak_bytes, "batch_rows": r.batch_rows,
                             "decode_s": r.decode_s, "decode_tokens": r.decode_tokens} for v, r in res.items()},
            "agreements": [a.__dict__ | {"ok": a.ok} for a in agreements],
            "batch_size": bs, "budget": budget, "arch": bm.arch.name, "device": device, "dtype": dtype_name,
        }, indent=2))
    return ScoringReport(res, agreements, table, check_table, notes, ok)


def run(args: argparse.Namespace, command: str) -> int:
    from benchmarks.report import append_section

    try:
        if args.save_workload:
            items, desc = load_workload(args.questions or 200, args.n, schema_max_tokens=args.schema_max_tokens)
            save_workload(items, desc, args.save_workload)
            print(f"wrote {desc} to {args.save_workload}")
            return 0
        rep = run_benchmark(args)
    except WorkloadUnavailable as e:
        print(f"error: {e}")
        return 1
    print(rep.table)
    print()
    print(rep.check_table)
    for n in rep.notes:
        print("- " + n)
    if not args.no_append:
        append_section(f"Discriminator scoring throughput: {args.arch}", command,
                       rep.table + "\n\nScore equivalence across variants:\n\n" + rep.check_table, notes=rep.notes)
    return 0 if rep.ok else 1
