"""Batched greedy decoding with a shared-prefix KV cache: the one decoding engine of the CoT discriminator.

`BatchedGreedy` decodes a discriminator's chain of thought for many (prompt prefix, candidate suffix) rows:

- `reference(prompt_ids)`: one row with plain `model.generate` (greedy) - the definition the others must match.
- `run(jobs)`: one static batch. A job is one question: a shared prefix (instructions + schema + question) and N
  candidate suffixes. Each distinct prefix is prefilled ONCE (batch 1, no padding) and its KV written into every row
  of its job; the suffixes are prefilled together (padding sits between the prefix and the suffix, masked, with
  position ids that skip it), then all rows decode greedily together. One job = "one question's N candidates, prefix
  computed once"; many jobs = cross-question batching.
- `run_many(jobs, batch_size)`: static batching of many jobs in chunks of at most `batch_size` rows.

A time budget: `run(jobs, deadline=t)` (a `time.monotonic()` instant) stops decoding at the first step boundary
past `t`, exactly as if the token budget had run out there: the last generated token is not fed, rows without a
verdict are forced in the same decode (`force_fn`), and each row's `ran_out` says "time" (or "tokens" when the
token budget ended it, None when it ended on its own: EOS or its complete verdict). At least one token is always
generated (from the prefill), so a call past its deadline still gets a forced verdict. `RunStats.extra["step_s"]`
holds the seconds from the call's start to each generated step (benchmarks derive shorter budgets from it).

Layout of one row in the cache: [left pad][prefix][middle pad][suffix][generated...]. Pads are masked out of attention
and never advance position ids, so a row's logits equal those of the unpadded prompt up to float rounding.
With `ignore_eos` every row generates exactly `budget` tokens (EOS is neither masked nor a stop), so every decoding
path does the same work. Without it a row stops after its first EOS (kept); finished rows feed a masked pad token
and the batch stops once all rows have finished (checked every `EOS_CHECK_EVERY` steps: a check is a host sync).

KV cache (`kv_cache`):
- "inplace" (default): one buffer per layer of shape (rows, kv heads, prefix + suffix + budget, head dim), allocated
  once per batch; each step writes one slot and attention reads a view of the filled part. Decode steps pass a
  ready 4-D boolean mask (a view of one buffer), so no per-step mask building, and nothing in the decode loop waits
  for the device. On models using SDPA attention, attention runs through `gqa_sdpa`: grouped-query attention without
  materializing the repeated K/V (transformers' SDPA path copies K/V `heads / kv heads` times per layer and step
  whenever a padding mask is present).
- "dynamic": transformers' `DynamicCache` and attention as shipped (the cache grows by `torch.cat`, i.e. a full copy
  of the cache per layer and step). Kept as the side-by-side baseline of the scoring benchmark.

Each row yields a `DecodeResult`: the generated ids, the log-probability of each generated token (under the raw
logits), and, when `answer_ids` are given, two comparable soft scores: `score` = P(yes)/(P(yes)+P(no)) over the two
answer token ids at the last generated step, `first_score` the same at the first step. They are defined for any
weights, random ones included. The prefix is computed once; its KV is copied into each of its rows (no paged
sharing).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

EOS_CHECK_EVERY = 16
PREFILL_TOKENS = 8192  # suffix-prefill tokens per forward (rows are chunked to stay under it)
KV_CACHES = ("inplace", "dynamic")
GQA_ATTENTION = "sqlarbiter_gqa_sdpa"

StopFn = Callable[[list[int]], "int | None"]
ForceFn = Callable[[list[int], bool], "list[int] | None"]


@dataclass
class ScoringJob:
    """One question's rows: a shared prefix and one suffix per candidate (token ids)."""

    prefix: list[int]
    suffixes: list[list[int]]
    key: object = None  # caller's id for the question


@dataclass
class DecodeResult:
    tokens: list[int]
    token_logprobs: list[float]  # log P(token) of each generated token under the unprocessed logits
    score: float | None = None  # two-way P(yes) at the last generated step (None without answer_ids)
    first_score: float | None = None  # two-way P(yes) at the first generated step
    prompt_tokens: int = 0
    forced: tuple[float, float] | None = None  # verdict forcing: full-vocabulary (P(true), P(false)) after the prefix
    stopped: bool = False  # early stop: the row ended at its first complete verdict
    ran_out: str | None = None  # "tokens" (the budget) | "time" (the deadline) | None: it ended on its own

    @property
    def probs(self) -> list[float]:
        """Probability of each generated token."""
        return [math.exp(x) for x in self.token_logprobs]


@dataclass
class RunStats:
    """Counters of `run`/`reference` calls (times in seconds, device-synchronized)."""

    rows: int = 0
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    batches: int = 0
    mean_context: float = 0.0  # mean attended context (incl. pads) per decode step and row, for the roofline
    extra: dict = field(default_factory=dict)

    def add(self, o: RunStats) -> None:
        tot = self.decode_steps + o.decode_steps
        if tot:
            self.mean_context = (self.mean_context * self.decode_steps + o.mean_context * o.decode_steps) / tot
        self.rows += o.rows
        self.generated_tokens += o.generated_tokens
        self.prefill_s += o.prefill_s
        self.decode_s += o.decode_s
        self.decode_steps += o.decode_steps
        self.batches += o.batches

    @property
    def decode_tokens(self) -> int:
        """Tokens produced by decode steps (each row's first token comes from the prefill)."""
        return max(self.generated_tokens - self.rows, 0)


def two_way(logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """P(yes)/(P(yes)+P(no)) from unnormalized logits (…, V) - computed on the two logits, exact in fp32."""
    pair = logits[..., [yes_id, no_id]].float()
    return torch.softmax(pair, dim=-1)[..., 0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------- attention


def gqa_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers attention function: SDPA with grouped-query attention done by reshaping the queries instead of
    repeating K/V. Query heads h*G..h*G+G-1 share KV head h, so the (B, H, Lq, D) queries are viewed as
    (B, H_kv, G*Lq, D) against the (B, H_kv, L, D) keys; the boolean mask is broadcast (Lq = 1) or repeated per group
    (Lq > 1: the mask is small). Same arithmetic per head as plain SDPA. Falls back to transformers' SDPA function
    without a mask, without groups, or for masks it does not expect."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    m = attention_mask
    if (m is None or groups == 1 or m.dtype != torch.bool or m.ndim != 4 or m.shape[1] != 1
            or kwargs.get("output_attentions") or dropout):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    B, H, Lq, D = query.shape
    Hkv, L = key.shape[1], key.shape[-2]
    q = query.reshape(B, Hkv, groups * Lq, D)
    m = m[:, :, :, :L]
    if Lq > 1:
        m = m[:, :, None].expand(B, 1, groups, Lq, L).reshape(B, 1, groups * Lq, L)
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=m, scale=scaling)
    return out.reshape(B, H, Lq, D).transpose(1, 2).contiguous(), None


_registered = False


def _register_attention() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GQA_ATTENTION, gqa_sdpa)
    AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)
    _registered = True


@contextmanager
def _attention(model, name: str | None):
    """Use attention implementation `name` inside the block (callers hold the model's lock), then restore."""
    cfg = model.config
    before = cfg._attn_implementation
    if name is None or name == before:
        yield
        return
    cfg._attn_implementation = name
    try:
        yield
    finally:
        cfg._attn_implementation = before


def _inplace_cache(buffers: list[tuple[torch.Tensor, torch.Tensor]], length: int):
    """A transformers Cache over preallocated (B, H_kv, capacity, D) buffers holding `length` tokens."""
    from transformers.cache_utils import Cache, DynamicLayer

    class InplaceLayer(DynamicLayer):
        def __init__(self, kbuf: torch.Tensor, vbuf: torch.Tensor, n: int):
            super().__init__()
            self.kbuf, self.vbuf, self.n = kbuf, vbuf, n
            self.dtype, self.device = kbuf.dtype, kbuf.device
            self.is_initialized = True
            self.keys, self.values = kbuf[:, :, :n], vbuf[:, :, :n]

        def update(self, key_states, value_states, cache_kwargs=None):
            q = key_states.shape[-2]
            if self.n + q > self.kbuf.shape[-2]:
                raise RuntimeError(f"KV buffer full ({self.kbuf.shape[-2]} slots)")
            self.kbuf[:, :, self.n:self.n + q] = key_states
            self.vbuf[:, :, self.n:self.n + q] = value_states
            self.n += q
            self.keys, self.values = self.kbuf[:, :, :self.n], self.vbuf[:, :, :self.n]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.n

        def get_max_cache_shape(self) -> int:
            return self.kbuf.shape[-2]

    return Cache(layers=[InplaceLayer(k, v, length) for k, v in buffers])


# ------------------------------------------------------------------------------------------- engine


class BatchedGreedy:
    """Greedy decoding of discriminator prompts on a loaded causal LM (transformers)."""

    def __init__(self, model, *, budget: int, answer_ids: tuple[int, int] | None = None, ignore_eos: bool = True,
                 eos_token_ids: Sequence[int] | int | None = None, pad_token_id: int = 0, kv_cache: str = "inplace",
                 stop_fn: StopFn | None = None, force_fn: ForceFn | None = None,
                 verdict_ids: tuple[Sequence[int], Sequence[int]] | None = None, force_capacity: int = 0):
        if budget < 1:
            raise ValueError("budget must be >= 1 new token")
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)} (got {kv_cache!r})")
        self.model = model
        self.budget = budget
        self.answer_ids = tuple(answer_ids) if answer_ids is not None else None
        self.ignore_eos = ignore_eos
        if isinstance(eos_token_ids, int):
            eos_token_ids = [eos_token_ids]
        self.eos_token_ids = [int(e) for e in (eos_token_ids or [])]
        self.pad_token_id = int(pad_token_id)
        self.kv_cache = kv_cache
        # early stop: stop_fn(tokens) -> index of the token that completes the verdict (the row ends there), or None
        self.stop_fn = stop_fn
        # verdict forcing: force_fn(tokens, finished) -> token ids to append (None: no forcing for this row); the
        # full-vocabulary probabilities of verdict_ids = (true spellings, false spellings) at the next position
        if force_fn is not None and (verdict_ids is None or force_capacity < 1):
            raise ValueError("verdict forcing needs verdict_ids and force_capacity >= 1")
        self.force_fn = force_fn
        self.verdict_ids = (list(verdict_ids[0]), list(verdict_ids[1])) if verdict_ids is not None else None
        self.force_capacity = int(force_capacity) if force_fn is not None else 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _use_eos(self) -> bool:
        return not self.ignore_eos and bool(self.eos_token_ids)

    # ----------------------------------------------------------------------------------- reference

    @torch.inference_mode()
    def reference(self, prompt_ids: Sequence[int], *, deadline: float | None = None) -> tuple[DecodeResult, RunStats]:
        """One row with `model.generate` (greedy, raw logits, no logits processors); `deadline` (monotonic) becomes
        generate's `max_time`."""
        from transformers import GenerationConfig

        dev = self.device
        ids = torch.tensor([list(prompt_ids)], device=dev)
        max_time = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
        gc = GenerationConfig(max_time=max_time,
            max_new_tokens=self.budget, min_new_tokens=0, do_sample=False, num_beams=1,
            # [] (not None): generate() would fill a None eos_token_id from the model config and stop there
            eos_token_id=self.eos_token_ids if self._use_eos() else [],
            pad_token_id=self.pad_token_id, bos_token_id=None, output_logits=True, return_dict_in_generate=True,
            use_cache=True, temperature=None, top_p=None, top_k=None,
        )
        _sync(dev)
        t0 = time.perf_counter()
        # use_model_defaults=False: the model's generation_config must not fill in an EOS (ignore_eos) or sampling
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc,
                                  use_model_defaults=False)
        _sync(dev)
        el = time.perf_counter() - t0
        logits = torch.stack(out.logits, dim=1)[0].float()  # (T, V)
        toks = out.sequences[0, ids.shape[1]:]
        T = min(len(toks), logits.shape[0])
        toks, logits = toks[:T], logits[:T]
        if self._use_eos():
            hit = torch.isin(toks, torch.tensor(self.eos_token_ids, device=dev)).nonzero()
            if len(hit):
                T = int(hit[0]) + 1
                toks, logits = toks[:T], logits[:T]
        stopped = False
        if self.stop_fn is not None:  # the same rule the batched decode applies while decoding
            k = self.stop_fn(toks.tolist())
            if k is not None and k + 1 < T:
                T, stopped = k + 1, True
                toks, logits = toks[:T], logits[:T]
            elif k is not None:
                stopped = True
        lp = torch.log_softmax(logits, dim=-1).gather(-1, toks[:, None])[:, 0]
        ended = stopped or (self._use_eos() and T and int(toks[-1]) in self.eos_token_ids)
        ran_out = None if ended else ("tokens" if T >= self.budget else "time")
        res = DecodeResult(tokens=toks.tolist(), token_logprobs=lp.tolist(), prompt_tokens=ids.shape[1],
                           stopped=stopped, ran_out=ran_out)
        if self.answer_ids:
            res.score = float(two_way(logits[-1], *self.answer_ids))
            res.first_score = float(two_way(logits[0], *self.answer_ids))
        if self.force_fn is not None:
            gen = res.tokens
            finished = bool(gen) and gen[-1] in self.eos_token_ids
            forced = self.force_fn(gen, finished)
            if forced:
                ctx = list(prompt_ids) + (gen[:-1] if finished else gen) + list(forced)
                x = torch.tensor([ctx], device=dev)
                last = self.model(input_ids=x, attention_mask=torch.ones_like(x), logits_to_keep=1).logits[0, -1]
                res.forced = self._verdict_probs(last[None])[0]
        stats = RunStats(rows=1, generated_tokens=T, decode_s=el, decode_steps=T, batches=1,
                         mean_context=ids.shape[1] + (T - 1) / 2)
        return res, stats

    def _verdict_probs(self, logits: torch.Tensor) -> list[tuple[float, float]]:
        """Full-vocabulary (P(true), P(false)) per row of (R, V) logits, each summed over its spellings."""
        p = torch.softmax(logits.float(), dim=-1)
        t_ids, f_ids = self.verdict_ids  # type: ignore[misc]
        pt = p[:, t_ids].sum(-1).tolist()
        pf = p[:, f_ids].sum(-1).tolist()
        return list(zip(pt, pf, strict=True))

    # ----------------------------------------------------------------------------------- batched

    def _prefix_kv(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One prefix alone (batch 1, no padding): per-layer (K, V) of shape (1, H_kv, len, D)."""
        ids = torch.tensor([prefix], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return [(layer.keys, layer.values) for layer in out.past_key_values.layers]

    def _dynamic_prefix_cache(self, prefixes: list[list[int]], row_prefix: list[int]):
        """transformers' DynamicCache holding each row's left-padded prefix (the baseline engine)."""
        from transformers import DynamicCache

        pmax = max(len(p) for p in prefixes)
        per = [self._prefix_kv(p) for p in prefixes]
        idx = torch.tensor(row_prefix, device=self.device)
        data = []
        for li in range(len(per[0])):
            ks = torch.cat([F.pad(kv[li][0], (0, 0, pmax - kv[li][0].shape[2], 0)) for kv in per], 0)
            vs = torch.cat([F.pad(kv[li][1], (0, 0, pmax - kv[li][1].shape[2], 0)) for kv in per], 0)
            data.append((ks.index_select(0, idx), vs.index_select(0, idx)))
        return DynamicCache(ddp_cache_data=data)

    def _prefix_buffers(self, prefixes: list[list[int]], row_prefix: list[int], capacity: int):
        """Per-layer (K, V) buffers of shape (rows, H_kv, capacity, D) holding each row's prefix, left-padded to the
        longest; each distinct prefix is run once."""
        R = len(row_prefix)
        pmax = max(len(p) for p in prefixes)
        buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for pi, p in enumerate(prefixes):
            rows = torch.tensor([r for r in range(R) if row_prefix[r] == pi], device=self.device)
            kv = self._prefix_kv(p)
            if not buffers:  # zeros: masked slots must hold finite values (0 * NaN would leak through)
                buffers = [(k.new_zeros(R, k.shape[1], capacity, k.shape[3]),
                            v.new_zeros(R, v.shape[1], capacity, v.shape[3])) for k, v in kv]
            lo = pmax - len(p)
            for (kb, vb), (k, v) in zip(buffers, kv, strict=True):
                kb[rows, :, lo:pmax] = k
                vb[rows, :, lo:pmax] = v
            del kv
        return buffers

    @torch.inference_mode()
    def run(self, jobs: Sequence[ScoringJob], *,
            deadline: float | None = None) -> tuple[list[list[DecodeResult]], RunStats]:
        """All rows of `jobs` as ONE batch; results per job, per suffix. `deadline`: a `time.monotonic()` instant
        where decoding stops as if the token budget had run out (see the module docstring)."""
        dev = self.device
        rows = [(j, s) for j, job in enumerate(jobs) for s in range(len(job.suffixes))]
        if not rows:
            return [[] for _ in jobs], RunStats()
        sufs = [jobs[j].suffixes[s] for j, s in rows]
        if any(len(s) == 0 for s in sufs):
            raise ValueError("every candidate suffix must have at least one token")
        if any(len(job.prefix) == 0 for job in jobs if job.suffixes):
            raise ValueError("every job needs a non-empty prefix")
        R, B = len(rows), self.budget
        inplace = self.kv_cache == "inplace"
        attn_name = None
        if inplace and self.model.config._attn_implementation == "sdpa":
            _register_attention()
            attn_name = GQA_ATTENTION
        # distinct prefixes (a question split over chunks, or two questions with one prompt, share one)
        index: dict[tuple[int, ...], int] = {}
        prefixes: list[list[int]] = []
        row_prefix: list[int] = []
        for j, _ in rows:
            key = tuple(jobs[j].prefix)
            if key not in index:
                index[key] = len(prefixes)
                prefixes.append(jobs[j].prefix)
            row_prefix.append(index[key])
        pmax = max(len(p) for p in prefixes)
        lmax = max(len(s) for s in sufs)
        cap = pmax + lmax + B + self.force_capacity
        _sync(dev)
        t0 = time.perf_counter()
        # masks, ids and positions are built on the host and moved once
        keep = torch.zeros(R, cap, dtype=torch.bool)  # attention mask over cache slots
        ids = torch.full((R, lmax), self.pad_token_id, dtype=torch.long)
        plen_l = [len(prefixes[p]) for p in row_prefix]
        for r, s in enumerate(sufs):
            keep[r, pmax - plen_l[r]:pmax] = True
            keep[r, pmax + lmax - len(s):pmax + lmax] = True
            ids[r, lmax - len(s):] = torch.tensor(s, dtype=torch.long)
        smask = keep[:, pmax:pmax + lmax].long()
        plen = torch.tensor(plen_l, dtype=torch.long)
        pos = (plen[:, None] + smask.cumsum(1) - 1).clamp(min=0)
        next_pos = plen + smask.sum(1)  # position of the first generated token
        prompt_lens = next_pos.tolist()
        keep, ids, pos, next_pos = keep.to(dev), ids.to(dev), pos.to(dev), next_pos.to(dev)
        cur = pmax + lmax
        with _attention(self.model, attn_name):
            # 1. prefixes, once each; 2. suffixes, left-padded within their block (pads between prefix and suffix)
            if inplace:
                buffers = self._prefix_buffers(prefixes, row_prefix, cap)
                step = max(1, PREFILL_TOKENS // lmax)  # rows per suffix-prefill chunk: bounded activations
                parts = []
                for r0 in range(0, R, step):
                    sub = _inplace_cache([(k[r0:r0 + step], v[r0:r0 + step]) for k, v in buffers], pmax)
                    out = self.model(input_ids=ids[r0:r0 + step], attention_mask=keep[r0:r0 + step, :cur],
                                     position_ids=pos[r0:r0 + step], past_key_values=sub, use_cache=True,
                                     logits_to_keep=1)
                    parts.append(out.logits[:, -1])
                logits = torch.cat(parts) if len(parts) > 1 else parts[0]
                cache = _inplace_cache(buffers, cur)
                del buffers, parts
            else:
                cache = self._dynamic_prefix_cache(prefixes, row_prefix)
                out = self.model(input_ids=ids, attention_mask=keep[:, :cur], position_ids=pos,
                                 past_key_values=cache, use_cache=True, logits_to_keep=1)
                logits = out.logits[:, -1]
                cache = out.past_key_values
            del out, ids, pos
            _sync(dev)
            t1 = time.perf_counter()
            # 3. greedy decode: no host sync inside the loop (EOS checks aside)
            toks = torch.empty(R, B, dtype=torch.long, device=dev)
            lps = torch.empty(R, B, dtype=torch.float32, device=dev)
            yes_no = self.answer_ids
            first_score = last_score = None
            alive = torch.ones(R, dtype=torch.bool, device=dev)
            n_gen = torch.zeros(R, dtype=torch.long, device=dev)
            use_eos = self._use_eos()
            stop_fn = self.stop_fn
            track = use_eos or stop_fn is not None  # rows can end before the budget
            eos = torch.tensor(self.eos_token_ids or [-1], device=dev)
            ctx_sum = 0.0
            steps = 0
            timed_out = False
            step_s: list[float] = []
            for t in range(B):
                lf = logits.float()
                nxt = lf.argmax(dim=-1)
                toks[:, t] = nxt
                lps[:, t] = lf.gather(-1, nxt[:, None])[:, 0] - torch.logsumexp(lf, dim=-1)
                if yes_no:
                    sc = two_way(lf, *yes_no)
                    if first_score is None:
                        first_score = last_score = sc
                    else:
                        last_score = torch.where(alive, sc, last_score)
                n_gen += alive.long()
                if use_eos:
                    alive = alive & ~torch.isin(nxt, eos)
                if track and (t + 1) % EOS_CHECK_EVERY == 0 and t + 1 < B:
                    if stop_fn is not None:  # early stop: rows whose verdict is complete (one host sync)
                        alive = self._check_stops(toks[:, :t + 1], n_gen, alive)
                    if not bool(alive.any()):
                        break
                step_s.append(time.perf_counter() - t0)
                if t + 1 == B:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out = True  # the time budget: stop here as if the token budget had run out
                    break
                if track:
                    keep[:, cur] = alive
                    nxt = torch.where(alive, nxt, torch.full_like(nxt, self.pad_token_id))
                else:
                    keep[:, cur] = True
                cur += 1
                mask = keep[:, None, None, :cur] if attn_name else keep[:, :cur]
                out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=(next_pos + t)[:, None],
                                 past_key_values=cache, use_cache=True)
                ctx_sum += cur
                steps += 1
                logits = out.logits[:, -1]
                cache = out.past_key_values
            toks_l, lps_l, ng = toks.tolist(), lps.tolist(), n_gen.tolist()
            alive_l = alive.tolist()
            stopped = [False] * R
            if stop_fn is not None:  # the exact stop point (checks run every EOS_CHECK_EVERY steps)
                for r in range(R):
                    k = stop_fn(toks_l[r][:ng[r]])
                    if k is not None:
                        ng[r], stopped[r] = min(ng[r], k + 1), True
            forced: list[tuple[float, float] | None] = [None] * R
            if self.force_fn is not None:
                forced = self._force(toks_l, ng, cache, keep, cur, next_pos)
            _sync(dev)
            t2 = time.perf_counter()
        del cache, keep
        ls = last_score.tolist() if last_score is not None else [None] * R
        fs = first_score.tolist() if first_score is not None else [None] * R
        results: list[list[DecodeResult]] = [[None] * len(job.suffixes) for job in jobs]  # type: ignore[list-item]
        eos_set = set(self.eos_token_ids) if use_eos else set()
        for r, (j, s) in enumerate(rows):
            n = ng[r]
            # ran out: still decoding when the loop ended (not stopped at its verdict, no EOS)
            ended = stopped[r] or not alive_l[r] or (n > 0 and toks_l[r][n - 1] in eos_set)
            ran_out = None if ended else ("time" if timed_out else "tokens")
            results[j][s] = DecodeResult(toks_l[r][:n], lps_l[r][:n], ls[r], fs[r], prompt_lens[r], forced[r],
                                         stopped[r], ran_out)
        stats = RunStats(rows=R, generated_tokens=sum(ng), prefill_s=t1 - t0, decode_s=t2 - t1,
                         decode_steps=steps + 1, batches=1, mean_context=(ctx_sum / steps) if steps else float(cur))
        stats.extra["distinct_prefixes"] = len(prefixes)
        stats.extra["step_s"] = step_s
        stats.extra["timed_out"] = timed_out
        return results, stats

    def _check_stops(self, toks: torch.Tensor, n_gen: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """`alive` with the rows whose verdict is complete turned off."""
        al = alive.tolist()
        host, ng = toks.tolist(), n_gen.tolist()
        done = [r for r, a in enumerate(al) if a and self.stop_fn(host[r][:ng[r]]) is not None]  # type: ignore[misc]
        if not done:
            return alive
        alive = alive.clone()
        alive[torch.tensor(done, device=alive.device)] = False
        return alive

    def _force(self, toks_l: list[list[int]], ng: list[int], cache, keep: torch.Tensor, cur: int,
               next_pos: torch.Tensor) -> list[tuple[float, float] | None]:
        """Verdict forcing in the same decode: rows that ended without a verdict get the forcing tokens appended
        (after their last generated token, which was not fed yet when the budget ran out; an EOS is dropped), in
        one forward over the cache; the next position's verdict probabilities are read."""
        R = len(ng)
        eos = set(self.eos_token_ids)
        seqs: list[list[int] | None] = []
        starts = []
        for r in range(R):
            gen = toks_l[r][:ng[r]]
            finished = bool(gen) and gen[-1] in eos
            f = self.force_fn(gen, finished)  # type: ignore[misc]
            seqs.append(None if not f else ([] if finished else [gen[-1]]) + list(f))
            starts.append(ng[r] - 1)
        if not any(seqs):
            return [None] * R
        F_ = max(len(q) for q in seqs if q)
        if cur + F_ > keep.shape[1]:
            raise ValueError(f"verdict forcing needs {F_} slots; force_capacity is {self.force_capacity}")
        ids = torch.full((R, F_), self.pad_token_id, dtype=torch.long)
        pos = torch.zeros(R, F_, dtype=torch.long)
        np_ = next_pos.tolist()
        keep[:, cur:cur + F_] = False
        for r, q in enumerate(seqs):
            base = np_[r] + starts[r]
            pos[r] = base
            if q:
                lo = F_ - len(q)
                ids[r, lo:] = torch.tensor(q, dtype=torch.long)
                pos[r, lo:] = torch.arange(base, base + len(q))
                keep[r, cur + lo:cur + F_] = True
        dev = keep.device
        out = self.model(input_ids=ids.to(dev), attention_mask=keep[:, :cur + F_], position_ids=pos.to(dev),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        probs = self._verdict_probs(out.logits[:, -1])
        return [probs[r] if q else None for r, q in enumerate(seqs)]

    def run_many(self, jobs: Sequence[ScoringJob], batch_size: int, *, on_batch=None, deadline: float | None = None):
        """Static batching: rows of all jobs in order, chunks of at most `batch_size` rows (a job may span chunks;
        its prefix is then prefilled once per chunk). `on_batch(job_indices, seconds)` is called after each chunk.
        `deadline` (monotonic) is shared by all chunks: a chunk that starts past it decodes one token and is forced.
        Returns results per job and the summed stats."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        flat = [(j, s) for j, job in enumerate(jobs) for s in range(len(job.suffixes))]
        results: list[list[DecodeResult]] = [[None] * len(job.suffixes) for job in jobs]  # type: ignore[list-item]
        total = RunStats()
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            order: list[int] = []
            sub: dict[int, list[int]] = {}
            for j, s in chunk:
                if j not in sub:
                    sub[j] = []
                    order.append(j)
                sub[j].append(s)
            sjobs = [ScoringJob(jobs[j].prefix, [jobs[j].suffixes[s] for s in sub[j]], jobs[j].key) for j in order]
            t0 = time.perf_counter()
            res, st = self.run(sjobs, deadline=deadline)
            el = time.perf_counter() - t0
            for k, j in enumerate(order):
                for s, r in zip(sub[j], res[k], strict=True):
                    results[j][s] = r
            total.add(st)
            total.extra.setdefault("step_s", []).append(st.extra.get("step_s", []))
            total.extra["timed_out"] = total.extra.get("timed_out", False) or st.extra.get("timed_out", False)
            if on_batch is not None:
                on_batch(order, el)
        return results, total


def kv_bytes_per_token(config, dtype_bytes: int) -> int:
    """Bytes of K and V cached per token per row, all layers."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes
