"""The `openai` generator backend: N SQL samples from an OpenAI-compatible server (vLLM `serve`,
llama.cpp server, hosted APIs, `sqlarbiter models serve-openai`) through `core.runtime.openai_http`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.errors import BackendError
from core.runtime.chat import render_plain
from core.runtime.openai_http import HTTPOptions, OpenAIClient, choice_text, client_from_spec
from core.specs import options_of
from generators.base import (
    GENERATORS,
    GenerationRequest,
    GenerationResult,
    StepRequest,
    StepResult,
    boundary_name,
    cut_at_step_boundary,
    sequence_logprob,
    step_opener,
)
from generators.extract import extract_sql
from generators.prompts import build_messages, build_step_messages
from sqlbox.steps import step_kind

GRAMMAR_FIELDS = ("guided_grammar", "structured_outputs")


def grammar_payload(field: str, grammar: str) -> dict:
    """The request fields that carry an EBNF grammar to a vLLM-style server."""
    if field == "structured_outputs":
        return {"structured_outputs": {"grammar": grammar}}
    return {"guided_grammar": grammar}


def choice_token_logprobs(choice: dict) -> list[float | None] | None:
    """The sampled tokens' logprobs of a chat choice (`logprobs.content[].logprob`) or a completions choice
    (`logprobs.token_logprobs`); None when the server returned none."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("content"), list):
        return [t.get("logprob") for t in lp["content"] if isinstance(t, dict)]
    if isinstance(lp.get("token_logprobs"), list):
        return list(lp["token_logprobs"])
    return None


def _refused(e: BackendError) -> bool:
    msg = str(e)
    return "HTTP 400" in msg or "HTTP 422" in msg


class _Negotiation:
    """One request's fallbacks: logprobs are asked for (when the options say so) until a server refuses them, and
    the grammar is sent until a server refuses its field; each refusal is noted and the request sent again."""

    def __init__(self, gen: OpenAIGenerator, grammar: str | None):
        self.gen = gen
        self.grammar = grammar
        self.want_lp = gen.logprobs
        self.notes: list[str] = []

    def _send(self, post, kw: dict, g: str | None) -> dict:
        if self.want_lp:  # chat: logprobs=true; completions: logprobs=0 (the sampled tokens' logprobs, no top-k)
            try:
                return post({**kw, "logprobs": True if self.gen.endpoint == "chat" else 0}, g)
            except BackendError as e:
                if not _refused(e) or g is not None:  # with a grammar: the grammar fallback goes first
                    raise
                self.want_lp = False
                self.notes.append(f"the server refused logprobs ({str(e)[-160:]}); no likelihood features")
        return post(kw, g)

    def call(self, post, kw: dict) -> dict:
        """`post(kw, grammar)` with the fallbacks."""
        if self.grammar is None:
            return self._send(post, kw, None)
        try:
            return self._send(post, kw, self.grammar)
        except BackendError as e:
            if not _refused(e):
                raise
            self.grammar = None
            self.notes.append(f"the server refused {self.gen.grammar_field} ({str(e)[-160:]}); sampled unconstrained")
            return self._send(post, kw, None)


@dataclass(frozen=True)
class OpenAIGeneratorOptions(HTTPOptions):
    """`options` of the `openai` generator (see the class)."""

    endpoint: Literal["chat", "completions"] = "chat"
    constrained: bool = False
    grammar_field: Literal["guided_grammar", "structured_outputs"] = "guided_grammar"
    logprobs: bool = True  # ask for token logprobs (the ranker's likelihood features); a refusing server is asked again without


@GENERATORS.register("openai", summary="an OpenAI-compatible server (vLLM, llama.cpp, ...)",
                     options=OpenAIGeneratorOptions)
class OpenAIGenerator:
    """Generator over an OpenAI-compatible server. Spec: url, model (served model name), api_key_env;
    options: endpoint ("chat" | "completions"; completions sends the plain Instruction/Response layout),
    timeout, max_retries, backoff, concurrency, constrained (true: send the request's schema grammar, default
    false), grammar_field ("guided_grammar", vLLM's field, the default; or "structured_outputs", vLLM >= 0.10's
    `{"structured_outputs": {"grammar": ...}}`). A server that refuses the field (HTTP 400/422) is asked again
    without it: those samples are unconstrained and the result's notes say so."""

    def __init__(self, spec: Any, *, client: OpenAIClient | None = None):
        self.spec = spec
        self.name = spec.name
        self.model = spec.model or spec.name
        opts = options_of(OpenAIGeneratorOptions, spec)
        self.endpoint = opts.endpoint
        if self.endpoint not in ("chat", "completions"):
            raise ValueError(f"model {spec.name!r}: options.endpoint must be chat or completions, not {self.endpoint!r}")
        self.client = client or client_from_spec(spec)
        self.constrained = bool(opts.constrained)
        self.grammar_field = opts.grammar_field
        self.logprobs = bool(opts.logprobs)
        if self.grammar_field not in GRAMMAR_FIELDS:
            raise ValueError(f"model {spec.name!r}: options.grammar_field must be one of {', '.join(GRAMMAR_FIELDS)}, "
                             f"not {self.grammar_field!r}")

    def generate(self, request: GenerationRequest) -> GenerationResult:
        p = request.params
        messages = build_messages(request)
        texts: list[str] = []
        prompt_tokens = completion_tokens = 0
        model_name = self.model
        nego = _Negotiation(self, request.grammar if self.constrained and request.grammar else None)
        seqs: list[tuple[float | None, int | None]] = []

        # Some servers cap or ignore n: ask again (different seeds) until we hold n samples.
        calls = 0
        while len(texts) < p.n and calls < p.n:
            seed = None if p.seed is None else p.seed + calls
            kw = {"model": self.model, "n": p.n - len(texts), "temperature": p.temperature, "top_p": p.top_p,
                  "max_tokens": p.max_tokens, "seed": seed}
            resp = nego.call(lambda kw, g: self._post(messages, kw, g), kw)
            calls += 1
            choices = sorted(resp.get("choices", []), key=lambda c: c.get("index", 0))
            kept = choices[: p.n - len(texts)]
            texts += [choice_text(c) for c in kept]
            seqs += [sequence_logprob(choice_token_logprobs(c)) for c in kept]
            usage = resp.get("usage") or {}
            prompt_tokens = prompt_tokens or int(usage.get("prompt_tokens", 0))
            completion_tokens += int(usage.get("completion_tokens", 0))
            model_name = resp.get("model") or model_name
            if not choices:
                raise BackendError(f"{self.client.base}: the server returned no choices")
        notes = nego.notes
        missing = any(lp is None for lp, _ in seqs)
        if missing:
            notes.append("the server returned no logprobs for some samples: their likelihood features are missing")
        return GenerationResult(sqls=[extract_sql(t) for t in texts], raw=texts, model=self.name,
                                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                constrained=nego.grammar is not None, notes=notes, logprobs=[lp for lp, _ in seqs],
                                logprob_tokens=[k for _, k in seqs], logprobs_missing=missing)

    def continue_step(self, request: StepRequest) -> StepResult:
        """Write the rest of one step after `request.prefix` (see `StepRequest`), one sample. endpoint "chat":
        the step-mode messages with the prefix as a final assistant message and vLLM's `continue_final_message:
        true, add_generation_prompt: false`; endpoint "completions": the plain layout's continuation (the prompt
        ends with the prefix). `stop` is the step boundary (`STEP_STOPS`): the server stops there, and the step text
        is cut there again (a server that ignored `stop` is noted; its tokens past the boundary are counted).
        The boundary is the server's `stop_reason` (vLLM's field: the stop string, None at EOS); a server that sends
        none and stopped with finish_reason "stop" is read as "step" when the text ends with a comma (a CTE
        followed by another) and "eos" otherwise, with a note. Token counts are the server's usage; the grammar
        (constrained) and logprobs fallbacks are those of `generate`."""
        p = request.request.params
        opener = step_opener(request.prefix, request.kind)
        kind = step_kind(request.kind)
        messages = build_step_messages(request.request, request.prefix, kind=kind.name)
        cte = kind.name == "cte"
        nego = _Negotiation(self, request.grammar if self.constrained and request.grammar and cte else None)
        kw = {"model": self.model, "n": 1, "temperature": p.temperature, "top_p": p.top_p,
              "max_tokens": request.max_tokens, "seed": p.seed, "stop": list(kind.stops)}
        continuing = messages[-1]["role"] == "assistant"  # not for a prose answer's first step (empty prefix)
        if self.endpoint == "chat" and continuing:
            kw.update(continue_final_message=True, add_generation_prompt=False)
        resp = nego.call(lambda kw, g: self._post(messages, kw, g, continue_final=continuing), kw)
        choices = sorted(resp.get("choices", []), key=lambda c: c.get("index", 0))
        if not choices:
            raise BackendError(f"{self.client.base}: the server returned no choices")
        c = choices[0]
        raw = choice_text(c)
        notes = nego.notes
        kept, found = cut_at_step_boundary(raw, kind.name)
        if found is not None:
            notes.append(f"the server did not stop at {found!r}: the step is cut there, the tokens after it counted")
            boundary = boundary_name(found, kind.name)
        elif c.get("finish_reason") == "length":
            boundary = "length"
        elif "stop_reason" in c:
            boundary = boundary_name(c["stop_reason"] if isinstance(c["stop_reason"], str) else None, kind.name) or "eos"
        else:
            # a CTE followed by another ends with a comma; a prose trace is over once its SQL block is closed
            done = not kept.rstrip().endswith(",") if cte else kind.complete([request.prefix + kept])
            boundary = "eos" if done else "step"
            notes.append("the server sent no stop_reason: the step boundary is inferred from the text")
        usage = resp.get("usage") or {}
        lp, n_lp = sequence_logprob(choice_token_logprobs(c))
        return StepResult(text=kind.text_of(kept, opener), raw=raw, boundary=boundary, model=self.name,
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)), logprob=lp, logprob_tokens=n_lp,
                          constrained=nego.grammar is not None, notes=notes)

    def _post(self, messages: list[dict], kw: dict, g: str | None, *, continue_final: bool = False) -> dict:
        if g is not None:
            kw = {**kw, **grammar_payload(self.grammar_field, g)}
        if self.endpoint == "chat":
            return self.client.chat(messages, **kw)
        return self.client.completions(render_plain(messages, continue_final=continue_final), **kw)

    def close(self) -> None:
        self.client.close()
