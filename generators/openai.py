"""The `openai` generator backend: N SQL samples from an OpenAI-compatible server (vLLM `serve`,
llama.cpp server, hosted APIs, `sqlarbiter models serve-openai`) through `core.runtime.openai_http`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.errors import BackendError
from core.runtime.chat import render_plain
from core.runtime.openai_http import HTTPOptions, OpenAIClient, choice_text, client_from_spec
from core.specs import options_of
from generators.base import GENERATORS, GenerationRequest, GenerationResult, sequence_logprob
from generators.extract import extract_sql
from generators.prompts import build_messages

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
        grammar = request.grammar if self.constrained and request.grammar else None
        notes: list[str] = []
        seqs: list[tuple[float | None, int | None]] = []
        want_lp = self.logprobs

        def send(n: int, seed: int | None, g: str | None) -> dict:
            nonlocal want_lp
            kw = {"model": self.model, "n": n, "temperature": p.temperature, "top_p": p.top_p,
                  "max_tokens": p.max_tokens, "seed": seed}
            if want_lp:  # chat: logprobs=true; completions: logprobs=0 (the sampled tokens' logprobs, no top-k)
                kw["logprobs"] = True if self.endpoint == "chat" else 0
                try:
                    return self._post(messages, kw, g)
                except BackendError as e:
                    if not _refused(e) or g is not None:  # with a grammar: the grammar fallback goes first
                        raise
                    want_lp = False
                    notes.append(f"the server refused logprobs ({str(e)[-160:]}); no likelihood features")
                    kw.pop("logprobs")
            return self._post(messages, kw, g)

        def call(n: int, seed: int | None) -> dict:
            nonlocal grammar
            if grammar is None:
                return send(n, seed, None)
            try:
                return send(n, seed, grammar)
            except BackendError as e:
                if not _refused(e):
                    raise
                grammar = None
                notes.append(f"the server refused {self.grammar_field} ({str(e)[-160:]}); sampled unconstrained")
                return send(n, seed, None)

        # Some servers cap or ignore n: ask again (different seeds) until we hold n samples.
        calls = 0
        while len(texts) < p.n and calls < p.n:
            seed = None if p.seed is None else p.seed + calls
            resp = call(p.n - len(texts), seed)
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
        missing = any(lp is None for lp, _ in seqs)
        if missing:
            notes.append("the server returned no logprobs for some samples: their likelihood features are missing")
        return GenerationResult(sqls=[extract_sql(t) for t in texts], raw=texts, model=self.name,
                                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                constrained=grammar is not None, notes=notes, logprobs=[lp for lp, _ in seqs],
                                logprob_tokens=[k for _, k in seqs], logprobs_missing=missing)

    def _post(self, messages: list[dict], kw: dict, g: str | None) -> dict:
        if g is not None:
            kw = {**kw, **grammar_payload(self.grammar_field, g)}
        if self.endpoint == "chat":
            return self.client.chat(messages, **kw)
        return self.client.completions(render_plain(messages), **kw)

    def close(self) -> None:
        self.client.close()
