"""CoT and Yes/No discriminators over an OpenAI-compatible server, scored from returned logprobs.

`openai-cot`: greedy (temperature 0) completion up to the reasoning budget with token logprobs; the last
`"correct": true|false` in the text is mapped to its token through the returned per-token strings
(chat: `logprobs.content[*].token`; completions: `logprobs.tokens` + `text_offset`), and the score is that
token's probability exp(logprob): p for true, 1 - p for false, the same quantity the local `cot`
discriminator computes. No parseable answer -> fallback with parse_failure. If the server returns no
logprobs, the verdict maps to a hard 1.0/0.0 score.

`openai-logit`: one token with top-k logprobs; P(Yes) vs P(No) summed over Yes/No spellings found among
the top k, normalized. Neither among the top k -> fallback with parse_failure.

Candidates are scored concurrently (the client's semaphore bounds requests in flight).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.errors import BackendError
from core.model import Score
from core.runtime.openai_http import OpenAIClient, choice_text, client_from_spec
from discriminators.base import DISCRIMINATORS, DiscriminationRequest, spec_mode, wrap_check
from discriminators.cot import ANSWER_RE, opt
from discriminators.prompts import DEFAULT_PROMPTS, load_prompt, render_plain

YES = {"yes"}
NO = {"no"}


def token_offsets(choice: dict) -> tuple[str, list[tuple[int, int]], list[float], list[dict[str, float]]] | None:
    """(text, token spans, token logprobs, top logprobs) from a choice's logprobs, or None if absent."""
    lp = choice.get("logprobs")
    if not lp:
        return None
    if "content" in lp:  # chat
        content = lp.get("content") or []
        toks = [c.get("token", "") for c in content]
        lps = [c.get("logprob") for c in content]
        tops = [{t.get("token", ""): t.get("logprob") for t in (c.get("top_logprobs") or [])} for c in content]
        spans, pos = [], 0
        for t in toks:
            spans.append((pos, pos + len(t)))
            pos += len(t)
        return "".join(toks), spans, lps, tops
    toks = lp.get("tokens") or []
    offs = lp.get("text_offset")
    if offs is None or len(offs) != len(toks):
        offs, pos = [], 0
        for t in toks:
            offs.append(pos)
            pos += len(t)
    base = offs[0] if offs else 0
    spans = [(o - base, o - base + len(t)) for o, t in zip(offs, toks, strict=True)]
    return "".join(toks), spans, list(lp.get("token_logprobs") or []), list(lp.get("top_logprobs") or [])


class _HTTPDiscriminator:
    mode = "cot"

    def __init__(self, spec: Any, *, client: OpenAIClient | None = None, prompt: str | None = None,
                 fallback: float | None = None):
        self.spec = spec
        self.name = spec.name
        self.model = spec.model or spec.name
        self.endpoint = opt(spec, "endpoint", "chat")
        if self.endpoint not in ("chat", "completions"):
            raise ValueError(f"model {spec.name!r}: options.endpoint must be chat or completions")
        self.template = load_prompt(prompt or opt(spec, "prompt", DEFAULT_PROMPTS[self.mode]))
        self.fallback = float(fallback if fallback is not None else opt(spec, "fallback", 0.5))
        self.client = client or client_from_spec(spec)

    def _call(self, user: str, **kw: Any) -> dict:
        if self.endpoint == "chat":
            return self.client.chat([{"role": "user", "content": user}], model=self.model, **kw)
        lp = kw.pop("top_logprobs", None)
        kw.pop("logprobs", None)
        return self.client.completions(render_plain(user), model=self.model, logprobs=lp or 0, **kw)

    def score(self, request: DiscriminationRequest) -> list[Score]:
        users = [self.template.fill(question=request.question, schema=request.schema, sql=s or "",
                                    evidence=request.evidence) for s in request.sqls]
        if len(users) <= 1:
            return [self._score_one(u) for u in users]
        with ThreadPoolExecutor(max_workers=min(len(users), self.client.concurrency)) as ex:
            return list(ex.map(self._score_one, users))

    def score_many(self, requests: list[DiscriminationRequest]) -> list[list[Score]]:
        return [self.score(r) for r in requests]

    def _score_one(self, user: str) -> Score:  # pragma: no cover - overridden
        raise NotImplementedError

    def _mk(self, resp: dict, **kw: Any) -> Score:
        usage = resp.get("usage") or {}
        return Score(discriminator=self.name, checkpoint=resp.get("model") or self.model, mode=self.mode,
                     prompt_tokens=int(usage.get("prompt_tokens", 0)),
                     completion_tokens=int(usage.get("completion_tokens", 0)), **kw)

    def close(self) -> None:
        self.client.close()


class OpenAICotDiscriminator(_HTTPDiscriminator):
    """Options: budget (1024), fallback (0.5), prompt (cot-v1), endpoint (chat|completions), top_logprobs (1),
    ignore_eos (False; sent as the vLLM extension), seed (0)."""

    mode = "cot"

    def __init__(self, spec: Any, *, budget: int | None = None, **kw: Any):
        super().__init__(spec, **kw)
        self.budget = int(budget if budget is not None else opt(spec, "budget", opt(spec, "max_new_tokens", 1024)))
        self.top_logprobs = int(opt(spec, "top_logprobs", 1))
        self.ignore_eos = bool(opt(spec, "ignore_eos", False))
        self.seed = opt(spec, "seed", 0)

    def _score_one(self, user: str) -> Score:
        resp = self._call(user, temperature=0.0, max_tokens=self.budget, logprobs=True,
                          top_logprobs=self.top_logprobs, seed=self.seed, ignore_eos=self.ignore_eos or None)
        choices = resp.get("choices") or []
        if not choices:
            raise BackendError(f"{self.client.base}: the server returned no choices")
        ch = choices[0]
        content = choice_text(ch)
        tl = token_offsets(ch)
        text = tl[0] if tl else content
        matches = list(ANSWER_RE.finditer(text))
        if not matches:
            return self._mk(resp, score=self.fallback, verdict=None, parse_failure=True, reasoning=content)
        m = matches[-1]
        verdict = m.group(1).lower() == "true"
        if tl is None:
            return self._mk(resp, score=1.0 if verdict else 0.0, verdict=verdict, reasoning=content)
        _, spans, lps, _ = tl
        idx = next((i for i, (s, e) in enumerate(spans) if s <= m.start(1) < e), None)
        if idx is None or idx >= len(lps) or lps[idx] is None:
            return self._mk(resp, score=1.0 if verdict else 0.0, verdict=verdict, reasoning=content)
        p = math.exp(float(lps[idx]))
        return self._mk(resp, score=p if verdict else 1.0 - p, verdict=verdict, reasoning=content)


class OpenAILogitDiscriminator(_HTTPDiscriminator):
    """Options: prompt (logit-v1), endpoint, top_logprobs (20), fallback (0.5)."""

    mode = "logit"

    def __init__(self, spec: Any, **kw: Any):
        kw.pop("budget", None)
        super().__init__(spec, **kw)
        self.top_logprobs = int(opt(spec, "top_logprobs", 20))

    def _score_one(self, user: str) -> Score:
        resp = self._call(user, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        choices = resp.get("choices") or []
        if not choices:
            raise BackendError(f"{self.client.base}: the server returned no choices")
        tl = token_offsets(choices[0])
        tops = tl[3][0] if tl and tl[3] else {}
        py = sum(math.exp(v) for k, v in tops.items() if v is not None and k.strip().lower() in YES)
        pn = sum(math.exp(v) for k, v in tops.items() if v is not None and k.strip().lower() in NO)
        if py + pn <= 0:
            return self._mk(resp, score=self.fallback, verdict=None, parse_failure=True)
        s = py / (py + pn)
        return self._mk(resp, score=s, verdict=s >= 0.5)


@DISCRIMINATORS.register("openai-cot")
def openai_cot(spec: Any, **kw: Any) -> Any:
    """CoT soft score over an OpenAI-compatible server (`spec.url`, `model`)."""
    return wrap_check(spec, OpenAICotDiscriminator(spec, **kw))


@DISCRIMINATORS.register("openai-logit")
def openai_logit(spec: Any, **kw: Any) -> Any:
    """Yes/No score over an OpenAI-compatible server."""
    return wrap_check(spec, OpenAILogitDiscriminator(spec, **kw))


@DISCRIMINATORS.register("openai")
def openai_backend(spec: Any, **kw: Any) -> Any:
    """`openai-cot` or `openai-logit` by `options.mode` (default cot)."""
    return (openai_cot if spec_mode(spec) == "cot" else openai_logit)(spec, **kw)
