"""The `transformers` generator backend: N SQL samples from a local checkpoint (directory or .gguf).

The sampling primitives it runs on (`sample`, `encode`, `token_spans`) live in `core.runtime.hf`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import CheckpointError
from core.runtime.chat import render_continuation, render_prompt
from core.runtime.checkpoint import LoadedModel, load_checkpoint
from core.runtime.hf import encode, sample
from core.specs import options_of
from generators.base import (
    GENERATORS,
    GenerationRequest,
    GenerationResult,
    StepRequest,
    StepResult,
    boundary_name,
    drop_reason,
    sequence_logprob,
    step_opener,
)
from generators.constrained import (
    deadline_stopping,
    grammar_processor,
    loop_stopping,
    sql_end_stopping,
    sql_finished,
    stop_cut,
    stop_strings_stopping,
)
from generators.extract import extract_sql, opens_thinking
from generators.prompts import build_messages, build_step_messages
from sqlbox.steps import step_kind


@dataclass(frozen=True)
class LocalGeneratorOptions:
    """`options` of the local generators (`transformers`; `embedded`, where `constrained` defaults to on)."""

    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    constrained: bool | None = None  # None: the backend's default (off for transformers, on for embedded)


@GENERATORS.register("transformers", summary="a local checkpoint directory or .gguf file (`path`)",
                     options=LocalGeneratorOptions)
class TransformersGenerator:
    """Generator on a local checkpoint. `spec.path` (directory or .gguf) unless `path`/`loaded` is given;
    options: device (auto|cpu|cuda), dtype (auto|float32|bfloat16|float16), constrained (true|false: enforce
    the request's schema grammar while sampling, `generators.constrained`; default off here, on for `embedded`).
    Sampling stops where the SQL ends: at the grammar's end when constrained, else at a closed ``` block or a
    `;` (`generators.constrained.sql_end_stopping`), not at max_tokens."""

    def __init__(self, spec: Any = None, *, path: str | None = None, loaded: LoadedModel | None = None,
                 name: str | None = None, device: str | None = None, dtype: str | None = None,
                 constrained: bool | None = None):
        self.spec = spec
        opts = options_of(LocalGeneratorOptions, spec)
        self.constrained = bool(opts.constrained or False) if constrained is None else bool(constrained)
        if loaded is None:
            path = path or getattr(spec, "path", None)
            if not path:
                raise CheckpointError(f"model {getattr(spec, 'name', '?')!r}: the transformers backend needs `path` "
                                      "(a checkpoint directory or .gguf file)")
        self.name = name or getattr(spec, "name", None) or (loaded.name if loaded else None)
        self.loaded = loaded or load_checkpoint(path, name=self.name, device=device or opts.device,
                                                dtype=dtype or opts.dtype)
        self.name = self.name or self.loaded.name

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        lm = self._lm()
        return encode(lm, render_prompt(lm.tokenizer, build_messages(request)), templated=lm.has_chat_template())

    def generate(self, request: GenerationRequest) -> GenerationResult:
        lm = self._lm()
        p = request.params
        prompt = render_prompt(lm.tokenizer, build_messages(request))
        ids = encode(lm, prompt, templated=lm.has_chat_template())
        thinking = opens_thinking(prompt)  # the template opened <think>: SQL drafted before </think> is no answer
        use_grammar = self.constrained and bool(request.grammar)
        loop = loop_stopping(len(ids), lm.eos_token_ids(), lm.pad_token_id)
        criteria: list[Any] = [loop]
        extra: dict[str, Any] = {}
        if use_grammar:
            extra["logits_processor"] = grammar_processor(lm, request.grammar)
        else:
            criteria.append(sql_end_stopping(lm.tokenizer, len(ids)))
        timed = request.deadline is not None or request.time_budget_s is not None
        timer = deadline_stopping(request.deadline, request.time_budget_s) if timed else None
        if timer is not None:
            criteria.append(timer)
        samples = sample(lm, ids, n=p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                         seed=p.seed, logprobs=0, stopping_criteria=criteria, **extra)  # logprobs=0: no top-k
        seq = [sequence_logprob(s.token_logprobs) for s in samples]  # from the logits generate() already returned
        sqls = [extract_sql(s.text, thinking=thinking) for s in samples]
        drops: list[str | None] = []
        for i, s in enumerate(samples):
            finished = s.finish_reason == "stop" or (not use_grammar and sql_finished(s.text))
            why = None if finished else "loop" if s.row in loop.looped else \
                "time" if timer is not None and timer.fired and len(s.ids) < p.max_tokens else None
            if why is not None:
                sqls[i] = ""
            drops.append(why)
        res = GenerationResult(
            sqls=sqls, raw=[s.text for s in samples], model=self.name,
            prompt_tokens=len(ids), completion_tokens=sum(len(s.ids) for s in samples), constrained=use_grammar,
            logprobs=[lp for lp, _ in seq], logprob_tokens=[n for _, n in seq], drops=drops,
        )
        for why, count in res.dropped.items():
            res.notes.append(f"{count} of {len(samples)} sample(s) {drop_reason(why)}")
        return res

    def step_prompt(self, request: StepRequest) -> str:
        """The prompt text `continue_step` feeds: the step-mode messages with `request.prefix` as the final
        assistant message, continued (`core.runtime.chat.render_continuation`: it ends with the prefix exactly); an
        empty prefix (a prose answer's first step) starts the answer (`render_prompt`)."""
        msgs = build_step_messages(request.request, request.prefix, kind=request.kind)
        if msgs[-1]["role"] != "assistant":
            return render_prompt(self._lm().tokenizer, msgs)
        return render_continuation(self._lm().tokenizer, msgs)

    def continue_step(self, request: StepRequest) -> StepResult:
        """Write the rest of one step after `request.prefix` (see `StepRequest`). The prompt is the chat
        template with the prefix as the final assistant message, continued (`continue_final_message=True,
        add_generation_prompt=False`; the plain layout's continuation without a template). Decoding stops at the
        step boundary (the first "\\n--" or "```" in the generated text, `STEP_STOPS`), at EOS or at
        `max_tokens`; under `request.grammar` (when this generator is constrained) the grammar's end forces EOS.
        completion_tokens counts the tokens actually generated (the one completing the boundary, or the EOS,
        included)."""
        lm = self._lm()
        p = request.request.params
        opener = step_opener(request.prefix, request.kind)
        stops = step_kind(request.kind).stops  # the kind's boundary
        ids = encode(lm, self.step_prompt(request), templated=lm.has_chat_template())
        use_grammar = self.constrained and bool(request.grammar) and request.kind == "cte"
        extra: dict[str, Any] = {"stopping_criteria": stop_strings_stopping(lm.tokenizer, len(ids), stops)}
        if use_grammar:
            extra["logits_processor"] = grammar_processor(lm, request.grammar)
        s = sample(lm, ids, n=1, temperature=p.temperature, top_p=p.top_p, max_tokens=request.max_tokens,
                   seed=p.seed, logprobs=0, **extra)[0]
        cut = stop_cut(lm.tokenizer, s.ids, stops)
        boundary = boundary_name(cut.stop, request.kind) or ("eos" if s.finish_reason == "stop" else "length")
        lp, n_lp = sequence_logprob(s.token_logprobs[: cut.n_kept])
        return StepResult(text=step_kind(request.kind).text_of(cut.text, opener), raw=s.text, boundary=boundary, model=self.name,
                          prompt_tokens=len(ids), completion_tokens=cut.n_decoded, logprob=lp, logprob_tokens=n_lp,
                          constrained=use_grammar)

    def _lm(self) -> LoadedModel:
        if self.loaded is None:
            raise CheckpointError(f"generator {self.name!r} was closed (its checkpoint was unloaded)")
        return self.loaded

    def close(self) -> None:
        """Drop the reference to the model (the checkpoint pool calls this when unloading)."""
        self.loaded = None

