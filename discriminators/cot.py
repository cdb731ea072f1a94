"""The chain-of-thought soft-score discriminator on a transformers checkpoint ("When Reasoning Beats
Scale", Anjum 2025).

For each candidate the model reasons step by step (greedy decoding, a reasoning budget of new tokens,
default 1024) and ends with `{"correct": true}` or `{"correct": false}`. The LAST such value in the generated
text is mapped back to the generated token that produced it (incremental detokenization), and the soft score
is that token's softmax probability at its step: p for `true`, 1 - p for `false`. No parseable answer ->
the configured fallback (default 0.5) with `parse_failure=True`.

Three public scoring paths, which give the same scores (fp32: within 1e-4), all through the one decoding
engine `discriminators.batching.BatchedGreedy`:

- `score_reference(request)`: one candidate at a time with plain `model.generate` (the baseline).
- `score(request)`: the N candidates of one question in one batch; the shared prompt prefix (instructions,
  schema, question) is run ONCE and its KV cache written into every row, then the per-candidate suffixes are
  fed left-padded (attention mask + explicit position ids, so padding changes nothing) and decoded greedily.
- `score_many(requests)`: candidates of many questions batched together (chunks of at most `batch_size` rows),
  each question's prefix still run once per chunk.

`traces(...)` / `traces_many(...)` return the `CotTrace` behind each score (prompt and generated token ids,
per-step probabilities, the answer token index) for tests and benchmarks. `ignore_eos=True` keeps decoding
to the full budget (benchmarks: every variant does the same work).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.errors import CheckpointError
from core.model import Score
from core.runtime.checkpoint import LoadedModel, load_checkpoint
from core.runtime.hf import token_at, token_spans
from discriminators.base import DISCRIMINATORS, DiscriminationRequest, wrap_check
from discriminators.prompts import DEFAULT_PROMPTS, load_prompt, render_parts

ANSWER_RE = re.compile(r"""["']?correct["']?\s*:\s*["']?(true|false)\b""", re.IGNORECASE)


def opt(spec: Any, key: str, default: Any = None) -> Any:
    """spec.options[key], or default when there is no spec or no such option."""
    return (getattr(spec, "options", None) or {}).get(key, default)


@dataclass
class CotTrace:
    """How one candidate was scored."""

    prompt_ids: list[int]
    generated_ids: list[int]
    chosen_probs: list[float]  # softmax probability of each generated token at its step
    text: str = ""  # incremental decoding of generated_ids (special tokens kept): what was parsed
    reasoning: str = ""  # decoded without special tokens
    verdict: bool | None = None
    answer_token: int | None = None  # index into generated_ids of the true/false token
    answer_prob: float | None = None  # chosen_probs[answer_token]
    score: float = 0.5
    parse_failure: bool = True
    extra: dict = field(default_factory=dict)


def parse_answer(tokenizer: Any, generated_ids: list[int], chosen_probs: list[float], fallback: float) -> dict:
    """Find the last `"correct": true|false`, map it to its token, and compute the soft score."""
    text, spans = token_spans(tokenizer, generated_ids)
    out = {"text": text, "verdict": None, "answer_token": None, "answer_prob": None, "score": float(fallback),
           "parse_failure": True}
    matches = list(ANSWER_RE.finditer(text))
    if not matches:
        return out
    m = matches[-1]
    idx = token_at(spans, m.start(1))
    if idx is None:  # pragma: no cover - spans cover every character of text
        return out
    verdict = m.group(1).lower() == "true"
    p = float(chosen_probs[idx])
    out.update(verdict=verdict, answer_token=idx, answer_prob=p, score=p if verdict else 1.0 - p, parse_failure=False)
    return out


class _LocalDiscriminator:
    """Shared plumbing of the transformers discriminators: checkpoint, prompt, token accounting."""

    mode = "cot"

    def __init__(self, spec: Any = None, *, path: str | None = None, loaded: LoadedModel | None = None,
                 name: str | None = None, prompt: str | None = None, batch_size: int | None = None,
                 device: str | None = None, dtype: str | None = None):
        self.spec = spec
        self.name = name or getattr(spec, "name", None) or (loaded.name if loaded else None)
        if loaded is None:
            path = path or getattr(spec, "path", None)
            if not path:
                raise CheckpointError(f"discriminator {self.name or '?'!r}: the transformers backend needs `path` "
                                      "(a checkpoint directory or .gguf file)")
            loaded = load_checkpoint(path, name=self.name, device=device or opt(spec, "device", "auto"),
                                     dtype=dtype or opt(spec, "dtype", "auto"))
        self.loaded: LoadedModel | None = loaded
        self.name = self.name or loaded.name
        self.template = load_prompt(prompt or opt(spec, "prompt", DEFAULT_PROMPTS[self.mode]))
        self.batch_size = int(batch_size or opt(spec, "batch_size", 16))
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    @property
    def checkpoint(self) -> str:
        return self._lm().name

    def _lm(self) -> LoadedModel:
        if self.loaded is None:
            raise CheckpointError(f"discriminator {self.name!r} was closed (its checkpoint was unloaded)")
        return self.loaded

    def close(self) -> None:
        """Drop the reference to the model (the checkpoint pool calls this when unloading)."""
        self.loaded = None

    def prompt_parts(self, request: DiscriminationRequest) -> tuple[list[int], list[list[int]]]:
        """(shared prefix ids, per-candidate suffix ids). A candidate's prompt is prefix + suffix; every
        scoring path uses exactly these ids."""
        lm = self._lm()
        if not request.sqls:
            return [], []
        prefix, suffix, templated = render_parts(lm.tokenizer, self.template, question=request.question,
                                                 schema=request.schema, evidence=request.evidence)
        tok = lm.tokenizer
        pre = list(tok(prefix, add_special_tokens=not templated)["input_ids"])
        sufs = [list(tok((sql or "").strip() + suffix, add_special_tokens=False)["input_ids"]) for sql in request.sqls]
        return pre, sufs


class CotDiscriminator(_LocalDiscriminator):
    """CoT soft-score discriminator. Options (spec.options or keywords): budget (alias max_new_tokens; 1024),
    fallback (0.5), prompt ("cot-v1"), ignore_eos (False), batch_size (16), kv_cache ("inplace" | "dynamic"),
    device, dtype."""

    mode = "cot"

    def __init__(self, spec: Any = None, *, budget: int | None = None, fallback: float | None = None,
                 ignore_eos: bool | None = None, kv_cache: str | None = None, **kw: Any):
        from discriminators.batching import KV_CACHES

        super().__init__(spec, **kw)
        self.budget = int(budget if budget is not None else opt(spec, "budget", opt(spec, "max_new_tokens", 1024)))
        self.fallback = float(fallback if fallback is not None else opt(spec, "fallback", 0.5))
        self.ignore_eos = bool(ignore_eos if ignore_eos is not None else opt(spec, "ignore_eos", False))
        self.kv_cache = str(kv_cache or opt(spec, "kv_cache", "inplace"))
        self.last_stats: Any = None  # batching.RunStats of the last traces/traces_many call
        if self.budget < 1:
            raise ValueError("the reasoning budget must be >= 1 token")
        if not 0.0 <= self.fallback <= 1.0:
            raise ValueError("fallback must be in [0, 1]")
        if self.kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)} (got {self.kv_cache!r})")

    # ---- public scoring paths -------------------------------------------------------------------------
    def score(self, request: DiscriminationRequest) -> list[Score]:
        """The N candidates of one question, batched, with the shared prefix's KV cache reused."""
        return [self.to_score(t) for t in self.traces(request, method="prefix")]

    def score_many(self, requests: list[DiscriminationRequest]) -> list[list[Score]]:
        """Candidates of many questions batched together (chunks of batch_size). One list per request."""
        return [[self.to_score(t) for t in ts] for ts in self.traces_many(requests)]

    def score_reference(self, request: DiscriminationRequest) -> list[Score]:
        """One candidate at a time with plain `model.generate` (greedy): the baseline the others match."""
        return [self.to_score(t) for t in self.traces(request, method="reference")]

    # ---- traces -----------------------------------------------------------------------------------------
    def traces(self, request: DiscriminationRequest, method: str = "prefix") -> list[CotTrace]:
        """Score one request by `method`: "prefix" (score), "batch" (score_many) or "reference"."""
        if method == "batch":
            return self.traces_many([request])[0]
        if method not in ("prefix", "reference"):
            raise ValueError(f"unknown scoring method {method!r}; choose prefix, batch or reference")
        pre, sufs = self.prompt_parts(request)
        if not sufs:
            return []
        lm = self._lm()
        eng = self.engine()
        with lm.lock:
            if method == "reference":
                from discriminators.batching import RunStats

                self.last_stats = RunStats()
                out = []
                for s in sufs:
                    r, st = eng.reference(pre + s)
                    self.last_stats.add(st)
                    out.append(self._trace(pre + s, r.tokens, r.probs))
                return out
            res, self.last_stats = eng.run_many([self._job(pre, sufs)], self.batch_size)
        return [self._trace(pre + s, r.tokens, r.probs) for s, r in zip(sufs, res[0], strict=True)]

    def traces_many(self, requests: list[DiscriminationRequest]) -> list[list[CotTrace]]:
        """Candidates of all requests in batches of at most batch_size rows; each question's prefix is run once per
        batch. Questions with similar prefix lengths are batched together (less padding)."""
        parts = [self.prompt_parts(r) for r in requests]
        order = sorted((qi for qi, (_, sufs) in enumerate(parts) if sufs), key=lambda qi: len(parts[qi][0]))
        lm = self._lm()
        with lm.lock:
            res, self.last_stats = self.engine().run_many([self._job(*parts[qi]) for qi in order], self.batch_size)
        out: list[list[CotTrace]] = [[] for _ in requests]
        for qi, rs in zip(order, res, strict=True):
            pre, sufs = parts[qi]
            out[qi] = [self._trace(pre + s, r.tokens, r.probs) for s, r in zip(sufs, rs, strict=True)]
        return out

    # ---- internals --------------------------------------------------------------------------------------
    def engine(self):
        """The decoding engine (discriminators.batching.BatchedGreedy) configured from this discriminator."""
        from discriminators.batching import BatchedGreedy

        lm = self._lm()
        return BatchedGreedy(lm.model, budget=self.budget, ignore_eos=self.ignore_eos,
                             eos_token_ids=lm.eos_token_ids(), pad_token_id=lm.pad_token_id, kv_cache=self.kv_cache)

    @staticmethod
    def _job(prefix: list[int], suffixes: list[list[int]]):
        from discriminators.batching import ScoringJob

        if not prefix:  # render_parts always frames the prompt (chat template or "### Instruction:")
            raise ValueError("the discriminator prompt rendered an empty shared prefix")
        return ScoringJob(prefix, suffixes)

    def _trace(self, prompt: list[int], gen: list[int], probs: list[float]) -> CotTrace:
        tok = self._lm().tokenizer
        parsed = parse_answer(tok, gen, probs, self.fallback)
        return CotTrace(prompt_ids=list(prompt), generated_ids=list(gen), chosen_probs=list(probs),
                        reasoning=tok.decode(gen, skip_special_tokens=True), **parsed)

    def to_score(self, t: CotTrace) -> Score:
        return Score(score=t.score, verdict=t.verdict, parse_failure=t.parse_failure, reasoning=t.reasoning,
                     discriminator=self.name, checkpoint=self.checkpoint, mode=self.mode,
                     prompt_tokens=len(t.prompt_ids), completion_tokens=len(t.generated_ids))


@DISCRIMINATORS.register("cot")
def cot(spec: Any = None, **kw: Any) -> Any:
    """CoT soft score on a local checkpoint (`spec.path`)."""
    return wrap_check(spec, CotDiscriminator(spec, **kw))
