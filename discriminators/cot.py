"""The chain-of-thought soft-score discriminator on a transformers checkpoint ("When Reasoning Beats
Scale", Anjum 2025).

For each candidate the model reasons step by step (greedy decoding, a reasoning budget of new tokens,
default 512) and ends with `{"correct": true}` or `{"correct": false}`. The final answer's verdict
(`discriminators.verdict`) is mapped back to the generated token that produced it (incremental detokenization),
and the soft score is that token's softmax probability at its step: p for `true`, 1 - p for `false`. No verdict
-> verdict forcing (default profile) or the configured fallback (default -0.5, below every verdict) with
`parse_failure=True` and `verdict_kind="missing"`. Profiles, forcing and early stop: docs/prompts.md.

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

from dataclasses import dataclass, field
from typing import Any

from core.errors import CheckpointError
from core.model import Score
from core.runtime.checkpoint import LoadedModel, load_checkpoint
from core.runtime.hf import token_at, token_spans
from discriminators.base import DISCRIMINATORS, DiscriminationRequest, LocalOptions
from discriminators.check import wrap_check
from discriminators.prompts import DEFAULT_PROMPTS, load_prompt, render_parts
from discriminators.verdict import find_verdict, first_complete_verdict, forcing_text, uses_thinking

FALLBACK = -0.5  # "no verdict": below every parsed verdict (scores lie in [0, 1]); the paper's -0.5
VERDICT_KINDS = ("natural", "forced", "missing")
SCORINGS = ("full", "normalized")
PROFILES = {
    # the project's default: schema in the prompt, the model's chat template, forcing and early stop on
    "default": {"prompt": "cot-v1", "chat_template": True, "force": True, "early_stop": True, "fallback": FALLBACK},
    # the paper's setup (Anjum 2025, public code): its prompt without schema, raw text ending "<think>\nOkay,",
    # budget 512, decoding to the budget, failures ranked last, no forcing
    "paper": {"prompt": "cot-paper", "chat_template": False, "force": False, "early_stop": False, "fallback": FALLBACK,
              "budget": 512},
}
DEFAULT_BUDGET = 512


def opt(spec: Any, key: str, default: Any = None) -> Any:
    """spec.options[key], or default when there is no spec or no such option."""
    return (getattr(spec, "options", None) or {}).get(key, default)


def profile_options(spec: Any, profile: str | None = None) -> dict:
    """The profile's settings (spec.options.profile, default "default"), for the options the spec does not set."""
    name = profile or opt(spec, "profile", "default")
    if name not in PROFILES:
        raise ValueError(f"unknown discriminator profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return {"profile": name, **PROFILES[name]}


def verdict_score(verdict: bool, p: float) -> float:
    """The paper's soft score of a verdict token with probability p: p for true, 1 - p for false."""
    return p if verdict else 1.0 - p


def forced_score(p_true: float, p_false: float, scoring: str = "full") -> tuple[bool, float]:
    """(verdict, score) of a forced verdict from the next-token probabilities of true and false: the verdict is
    the likelier one (what greedy decoding would have written) and the score the paper's quantity for it
    ("full"), or p(true)/(p(true)+p(false)) ("normalized")."""
    verdict = p_true >= p_false
    if scoring == "normalized":
        tot = p_true + p_false
        return verdict, (p_true / tot if tot > 0 else 0.5)
    return verdict, verdict_score(verdict, p_true if verdict else p_false)


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
    score: float = FALLBACK
    parse_failure: bool = True
    verdict_kind: str = "missing"  # natural | forced | missing
    forced: tuple[float, float] | None = None  # (P(true), P(false)) after the forcing prefix
    stopped: bool = False  # decoding stopped at the complete verdict
    ran_out: str | None = None  # "tokens" | "time": which budget ended the reasoning (None: it ended on its own)
    extra: dict = field(default_factory=dict)


def parse_answer(tokenizer: Any, generated_ids: list[int], chosen_probs: list[float], fallback: float, *,
                 thinking: bool = False, finished: bool = True, scoring: str = "full",
                 true_false_ids: tuple[list[int], list[int]] | None = None,
                 step_probs: list[tuple[float, float]] | None = None) -> dict:
    """The final answer's verdict (`discriminators.verdict.find_verdict`) mapped to its token, and its soft score
    (p for true, 1 - p for false). `scoring="normalized"` needs `step_probs[i]` = (P(true), P(false)) at step i."""
    text, spans = token_spans(tokenizer, generated_ids)
    out = {"text": text, "verdict": None, "answer_token": None, "answer_prob": None, "score": float(fallback),
           "parse_failure": True, "verdict_kind": "missing"}
    v = find_verdict(text, thinking=thinking, finished=finished)
    if v is None:
        return out
    idx = token_at(spans, v.start)
    if idx is None:  # pragma: no cover - spans cover every character of text
        return out
    p = float(chosen_probs[idx])
    score = verdict_score(v.value, p)
    if scoring == "normalized" and step_probs is not None:
        _, score = forced_score(*step_probs[idx], scoring="normalized")
    out.update(verdict=v.value, answer_token=idx, answer_prob=p, score=score, parse_failure=False,
               verdict_kind="natural")
    return out


class _LocalDiscriminator:
    """Shared plumbing of the transformers discriminators: checkpoint, prompt, token accounting."""

    mode = "cot"

    def __init__(self, spec: Any = None, *, path: str | None = None, loaded: LoadedModel | None = None,
                 name: str | None = None, prompt: str | None = None, batch_size: int | None = None,
                 device: str | None = None, dtype: str | None = None, chat_template: bool | None = None):
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
        self.template = load_prompt(prompt or opt(spec, "prompt", self._default("prompt", DEFAULT_PROMPTS[self.mode])))
        ct = chat_template if chat_template is not None else opt(spec, "chat_template", self._default("chat_template", True))
        self.chat_template = bool(ct)
        self.batch_size = int(batch_size or opt(spec, "batch_size", 16))
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    def _default(self, key: str, default: Any) -> Any:
        return default

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
                                                 schema=request.schema, evidence=request.evidence,
                                                 framing="chat" if self.chat_template else "raw")
        tok = lm.tokenizer
        # raw text (the paper's framing) is tokenized without special tokens, as the paper's scripts do
        pre = list(tok(prefix, add_special_tokens=not templated and self.chat_template)["input_ids"])
        sufs = [list(tok((sql or "").strip() + suffix, add_special_tokens=False)["input_ids"]) for sql in request.sqls]
        return pre, sufs


class CotDiscriminator(_LocalDiscriminator):
    """CoT soft-score discriminator. Options (spec.options or keywords): profile ("default" | "paper"), budget
    (alias max_new_tokens; 512), fallback (-0.5: "no verdict" ranks below every parsed verdict), prompt
    ("cot-v1"; paper: "cot-paper"), chat_template (True; paper: False = raw text), force (verdict forcing; True,
    paper: False), early_stop (stop a row at its complete verdict; True, paper: False), scoring ("full" = the
    paper's full-vocabulary p | "normalized" = p(true)/(p(true)+p(false))), ignore_eos (False), batch_size (16),
    kv_cache ("inplace" | "dynamic"), device, dtype."""

    mode = "cot"

    def __init__(self, spec: Any = None, *, budget: int | None = None, fallback: float | None = None,
                 ignore_eos: bool | None = None, kv_cache: str | None = None, profile: str | None = None,
                 force: bool | None = None, early_stop: bool | None = None, scoring: str | None = None,
                 time_budget_s: float | None = None, **kw: Any):
        from discriminators.batching import KV_CACHES

        self.profile_opts = profile_options(spec, profile)
        self.profile = self.profile_opts["profile"]
        super().__init__(spec, **kw)
        d = self._default
        self.budget = int(budget if budget is not None
                          else opt(spec, "budget", opt(spec, "max_new_tokens", d("budget", DEFAULT_BUDGET))))
        self.fallback = float(fallback if fallback is not None else opt(spec, "fallback", d("fallback", FALLBACK)))
        self.ignore_eos = bool(ignore_eos if ignore_eos is not None else opt(spec, "ignore_eos", False))
        self.force = bool(force if force is not None else opt(spec, "force", d("force", True)))
        self.early_stop = bool(early_stop if early_stop is not None else opt(spec, "early_stop", d("early_stop", True)))
        self.scoring = str(scoring or opt(spec, "scoring", "full"))
        self.kv_cache = str(kv_cache or opt(spec, "kv_cache", "inplace"))
        # seconds of reasoning per call (None: none beyond the request's own deadline); see `call_deadline`
        self.time_budget_s = None if time_budget_s is None else float(time_budget_s)
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError("time_budget_s must be > 0 seconds")
        self.last_stats: Any = None  # batching.RunStats of the last traces/traces_many call
        if self.budget < 1:
            raise ValueError("the reasoning budget must be >= 1 token")
        if not (self.fallback == self.fallback and abs(self.fallback) != float("inf")) or self.fallback > 1.0:
            raise ValueError("fallback must be a finite number <= 1 (default -0.5: below every parsed verdict)")
        if self.kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)} (got {self.kv_cache!r})")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(SCORINGS)} (got {self.scoring!r})")
        self._think_prompt: bool | None = None

    def _default(self, key: str, default: Any) -> Any:
        return self.profile_opts.get(key, default)

    def settings(self) -> dict:
        """Everything besides the checkpoint and the candidates that changes a score (the replay cache key)."""
        return {"profile": self.profile, "prompt": self.template.id, "prompt_sha": _sha(self.template.text),
                "chat_template": self.chat_template, "budget": self.budget, "fallback": self.fallback,
                "force": self.force, "early_stop": self.early_stop, "scoring": self.scoring,
                "ignore_eos": self.ignore_eos, **({"time_budget_s": self.time_budget_s} if self.time_budget_s else {})}

    def call_deadline(self, requests: list[DiscriminationRequest]) -> float | None:
        """The monotonic instant where this call's reasoning stops: the earliest of the requests' deadlines and
        now + `time_budget_s` (None: no time budget)."""
        return call_deadline(requests, self.time_budget_s)

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
        deadline = self.call_deadline([request])
        with lm.lock:
            if method == "reference":
                from discriminators.batching import RunStats

                self.last_stats = RunStats()
                out = []
                for s in sufs:
                    r, st = eng.reference(pre + s, deadline=deadline)
                    self.last_stats.add(st)
                    out.append(self._trace(pre + s, r))
                return out
            res, self.last_stats = eng.run_many([self._job(pre, sufs)], self.batch_size, deadline=deadline)
        return [self._trace(pre + s, r) for s, r in zip(sufs, res[0], strict=True)]

    def traces_many(self, requests: list[DiscriminationRequest]) -> list[list[CotTrace]]:
        """Candidates of all requests in batches of at most batch_size rows; each question's prefix is run once per
        batch. Questions with similar prefix lengths are batched together (less padding)."""
        parts = [self.prompt_parts(r) for r in requests]
        order = sorted((qi for qi, (_, sufs) in enumerate(parts) if sufs), key=lambda qi: len(parts[qi][0]))
        lm = self._lm()
        deadline = self.call_deadline(requests)
        with lm.lock:
            res, self.last_stats = self.engine().run_many([self._job(*parts[qi]) for qi in order], self.batch_size,
                                                          deadline=deadline)
        out: list[list[CotTrace]] = [[] for _ in requests]
        for qi, rs in zip(order, res, strict=True):
            pre, sufs = parts[qi]
            out[qi] = [self._trace(pre + s, r) for s, r in zip(sufs, rs, strict=True)]
        return out

    # ---- internals --------------------------------------------------------------------------------------
    def thinking_prompt(self) -> bool:
        """The rendered prompt leaves a `<think>` block open (the paper's prompt, R1-style chat templates)."""
        if self._think_prompt is None:
            lm = self._lm()
            _, suffix, _ = render_parts(lm.tokenizer, self.template, question="q", schema="s",
                                        framing="chat" if self.chat_template else "raw")
            self._think_prompt = uses_thinking("", suffix)
        return self._think_prompt

    def _thinking(self, text: str) -> bool:
        return self.thinking_prompt() or uses_thinking(text)

    def _decode(self, gen: list[int]) -> str:
        return self._lm().tokenizer.decode(gen, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _stop_at(self, gen: list[int]) -> int | None:
        """Early stop: index of the token that completes the first verdict of the answer, or None."""
        text = self._decode(gen)
        v = first_complete_verdict(text, thinking=self._thinking(text))
        if v is None:
            return None
        lo, hi = 0, len(gen) - 1  # the shortest prefix whose decoding holds the whole verdict object
        while lo < hi:
            mid = (lo + hi) // 2
            t = self._decode(gen[:mid + 1])
            if first_complete_verdict(t, thinking=self._thinking(t)) is not None:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _force_ids(self, gen: list[int], finished: bool) -> list[int] | None:
        """Verdict forcing: the forcing tokens for an output without a verdict, else None."""
        text = self._decode(gen)
        thinking = self._thinking(text)
        if find_verdict(text, thinking=thinking, finished=finished) is not None:
            return None
        body = text
        if finished:  # the end-of-turn token is dropped before forcing
            body = self._decode(gen[:-1])
        return self._tok_ids(forcing_text(body, thinking))

    def _tok_ids(self, text: str) -> list[int]:
        return list(self._lm().tokenizer(text, add_special_tokens=False)["input_ids"])

    def verdict_token_ids(self) -> tuple[list[int], list[int]]:
        """Single-token spellings of true and false that may follow the verdict prefix."""
        tok = self._lm().tokenizer
        out = []
        for word in ("true", "false"):
            ids = set()
            for sp in (word, " " + word):
                enc = tok(sp, add_special_tokens=False)["input_ids"]
                if len(enc) == 1:
                    ids.add(enc[0])
            if not ids:
                raise CheckpointError(f"the tokenizer has no single token for {word!r}; verdict forcing is unavailable")
            out.append(sorted(ids))
        return out[0], out[1]

    def engine(self):
        """The decoding engine (discriminators.batching.BatchedGreedy) configured from this discriminator."""
        from discriminators.batching import BatchedGreedy

        lm = self._lm()
        kw: dict = {}
        if self.early_stop:
            kw["stop_fn"] = self._stop_at
        if self.force:
            cap = len(self._tok_ids(forcing_text("", True))) + 1
            kw.update(force_fn=self._force_ids, verdict_ids=self.verdict_token_ids(), force_capacity=cap)
        return BatchedGreedy(lm.model, budget=self.budget, ignore_eos=self.ignore_eos,
                             eos_token_ids=lm.eos_token_ids(), pad_token_id=lm.pad_token_id, kv_cache=self.kv_cache,
                             **kw)

    @staticmethod
    def _job(prefix: list[int], suffixes: list[list[int]]):
        from discriminators.batching import ScoringJob

        if not prefix:  # render_parts always frames the prompt (chat template or "### Instruction:")
            raise ValueError("the discriminator prompt rendered an empty shared prefix")
        return ScoringJob(prefix, suffixes)

    def _trace(self, prompt: list[int], r: Any) -> CotTrace:
        lm = self._lm()
        tok = lm.tokenizer
        gen, probs = list(r.tokens), r.probs
        text = self._decode(gen)
        finished = bool(gen) and gen[-1] in set(lm.eos_token_ids()) and not self.ignore_eos
        step = None
        if self.scoring == "normalized":
            step = self._step_verdict_probs(prompt, gen)
        parsed = parse_answer(tok, gen, probs, self.fallback, thinking=self._thinking(text),
                              finished=finished or r.stopped, scoring=self.scoring, step_probs=step)
        t = CotTrace(prompt_ids=list(prompt), generated_ids=gen, chosen_probs=list(probs),
                     reasoning=tok.decode(gen, skip_special_tokens=True), stopped=r.stopped,
                     ran_out=None if r.stopped else r.ran_out, **parsed)
        if t.parse_failure and r.forced is not None:
            t.forced = r.forced
            t.verdict, t.score = forced_score(*r.forced, scoring=self.scoring)
            t.answer_prob = r.forced[0] if t.verdict else r.forced[1]
            t.parse_failure, t.verdict_kind = False, "forced"
        return t

    def _step_verdict_probs(self, prompt: list[int], gen: list[int]) -> list[tuple[float, float]]:
        """(P(true), P(false)) at every generated step (normalized scoring of natural verdicts): one forward."""
        import torch

        lm = self._lm()
        t_ids, f_ids = self.verdict_token_ids()
        with torch.inference_mode():
            x = torch.tensor([list(prompt) + gen], device=lm.device)
            logits = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, len(prompt) - 1:-1].float()
            p = torch.softmax(logits, dim=-1)
            return list(zip(p[:, t_ids].sum(-1).tolist(), p[:, f_ids].sum(-1).tolist(), strict=True))

    def to_score(self, t: CotTrace) -> Score:
        return Score(score=t.score, verdict=t.verdict, parse_failure=t.parse_failure, reasoning=t.reasoning,
                     discriminator=self.name, checkpoint=self.checkpoint, mode=self.mode,
                     prompt_tokens=len(t.prompt_ids), completion_tokens=len(t.generated_ids),
                     verdict_kind=t.verdict_kind, forced_probs=list(t.forced) if t.forced else None,
                     reasoning_tokens=len(t.generated_ids), ran_out=t.ran_out)


def call_deadline(requests: list[DiscriminationRequest], time_budget_s: float | None) -> float | None:
    """The earliest of the requests' deadlines and now + `time_budget_s` (a `time.monotonic()` instant), or None."""
    import time

    ds = [r.deadline for r in requests if r.deadline is not None]
    if time_budget_s is not None:
        ds.append(time.monotonic() + time_budget_s)
    return min(ds) if ds else None


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


@DISCRIMINATORS.register("cot", summary="chain-of-thought soft score on a local checkpoint", options=LocalOptions)
def cot(spec: Any = None, **kw: Any) -> Any:
    """CoT soft score on a local checkpoint (`spec.path`)."""
    return wrap_check(spec, CotDiscriminator(spec, **kw))
