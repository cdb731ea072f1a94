"""CoT and Yes/No discriminators over an OpenAI-compatible server, scored from returned logprobs.

`openai-cot`: greedy (temperature 0) completion up to the reasoning budget with token logprobs; the final
answer's verdict (`discriminators.verdict`) is mapped to its token through the returned per-token strings
(chat: `logprobs.content[*].token`; completions: `logprobs.tokens` + `text_offset`), and the score is that
token's probability exp(logprob): p for true, 1 - p for false, the same quantity the local `cot`
discriminator computes (same prompt framing: the chat template on both endpoints, given options.tokenizer
for completions). Servers with a reasoning parser (vLLM `--reasoning-parser`) return the reasoning in
`message.reasoning_content`: the answer is `content`, located at the end of the logprob tokens. No verdict ->
verdict forcing (one more completion of max 1 token continuing the answer with the verdict prefix, read from
its top logprobs) or, without forcing, the fallback with `verdict_kind="missing"`. A time budget (the request's
`deadline`, or `time_budget_s`): the reasoning completion is streamed and the stream is closed at the deadline
(the server stops decoding); the text so far is the reasoning and the verdict is forced by the same 1-token call;
the Score says `ran_out="time"` (`"tokens"` when the server stopped at max_tokens). Missing logprobs are an
explicit failure (`verdict_kind="missing"`, `error` says why), never a hard 1.0/0.0.

`openai-logit`: one token with top-k logprobs; P(Yes) vs P(No) summed over Yes/No spellings found among
the top k, normalized. Neither among the top k -> fallback with parse_failure.

Candidates are scored concurrently (the client's semaphore bounds requests in flight).
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx

from core.errors import BackendError
from core.model import Score
from core.runtime.openai_http import OpenAIClient, choice_text, client_from_spec
from discriminators.base import (
    DISCRIMINATORS,
    DiscriminationRequest,
    HTTPDiscriminatorOptions,
    spec_mode,
)
from discriminators.check import wrap_check
from discriminators.cot import opt
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
                 fallback: float | None = None, time_budget_s: float | None = None):
        from discriminators.cot import FALLBACK

        self.spec = spec
        self.time_budget_s = None if time_budget_s is None else float(time_budget_s)
        self.name = spec.name
        self.model = spec.model or spec.name
        self.endpoint = opt(spec, "endpoint", "chat")
        if self.endpoint not in ("chat", "completions"):
            raise ValueError(f"model {spec.name!r}: options.endpoint must be chat or completions")
        self.template = load_prompt(prompt or opt(spec, "prompt", DEFAULT_PROMPTS[self.mode]))
        self.fallback = float(fallback if fallback is not None else opt(spec, "fallback", FALLBACK))
        self.client = client or client_from_spec(spec)

    def _call(self, user: str, **kw: Any) -> dict:
        if self.endpoint == "chat":
            return self.client.chat([{"role": "user", "content": user}], model=self.model, **kw)
        lp = kw.pop("top_logprobs", None)
        kw.pop("logprobs", None)
        return self.client.completions(render_plain(user), model=self.model, logprobs=lp or 0, **kw)

    def score(self, request: DiscriminationRequest) -> list[Score]:
        from discriminators.cot import call_deadline

        users = [self.template.fill(question=request.question, schema=request.schema, sql=s or "",
                                    evidence=request.evidence) for s in request.sqls]
        one = partial(self._score_one, deadline=call_deadline([request], self.time_budget_s))
        if len(users) <= 1:
            return [one(u) for u in users]
        with ThreadPoolExecutor(max_workers=min(len(users), self.client.concurrency)) as ex:
            return list(ex.map(one, users))

    def score_many(self, requests: list[DiscriminationRequest]) -> list[list[Score]]:
        return [self.score(r) for r in requests]

    def _score_one(self, user: str, deadline: float | None = None) -> Score:  # pragma: no cover - overridden
        raise NotImplementedError

    def _mk(self, resp: dict, **kw: Any) -> Score:
        usage = resp.get("usage") or {}
        return Score(discriminator=self.name, checkpoint=resp.get("model") or self.model, mode=self.mode,
                     prompt_tokens=int(usage.get("prompt_tokens", 0)),
                     completion_tokens=int(usage.get("completion_tokens", 0)), **kw)

    def close(self) -> None:
        self.client.close()


class OpenAICotDiscriminator(_HTTPDiscriminator):
    """Options: profile (default | paper), budget (512), fallback (-0.5), prompt (cot-v1; paper: cot-paper),
    endpoint (chat|completions), tokenizer (a tokenizer path or id: the completions endpoint then frames the prompt
    with the model's chat template, as the local path does), chat_template (True; paper: False = raw text on the
    completions endpoint), force (verdict forcing: one more 1-token completion with logprobs; True, paper: False),
    early_stop (True: the output is cut at its first complete verdict, as the local engine stops there),
    scoring (full | normalized), top_logprobs (20), ignore_eos (False; sent as the vLLM extension), seed (0)."""

    mode = "cot"

    def __init__(self, spec: Any, *, budget: int | None = None, **kw: Any):
        from discriminators.cot import DEFAULT_BUDGET, FALLBACK, SCORINGS, profile_options

        self.profile_opts = profile_options(spec)
        self.profile = self.profile_opts["profile"]
        d = self.profile_opts.get
        kw.setdefault("prompt", opt(spec, "prompt", d("prompt")))
        kw.setdefault("fallback", opt(spec, "fallback", d("fallback", FALLBACK)))
        super().__init__(spec, **kw)
        self.budget = int(budget if budget is not None
                          else opt(spec, "budget", opt(spec, "max_new_tokens", d("budget", DEFAULT_BUDGET))))
        self.top_logprobs = int(opt(spec, "top_logprobs", 20))
        self.ignore_eos = bool(opt(spec, "ignore_eos", False))
        self.seed = opt(spec, "seed", 0)
        self.chat_template = bool(opt(spec, "chat_template", d("chat_template", True)))
        self.force = bool(opt(spec, "force", d("force", True)))
        self.early_stop = bool(opt(spec, "early_stop", d("early_stop", True)))
        self.scoring = str(opt(spec, "scoring", "full"))
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(SCORINGS)} (got {self.scoring!r})")
        if not self.chat_template and self.endpoint == "chat":
            raise ValueError(f"model {spec.name!r}: raw-text prompts (chat_template=false, the paper profile) need "
                             "options.endpoint = \"completions\"")
        self._tokenizer = None
        self.tokenizer_id = opt(spec, "tokenizer")

    def settings(self) -> dict:
        from discriminators.cot import _sha

        return {"profile": self.profile, "prompt": self.template.id, "prompt_sha": _sha(self.template.text),
                "chat_template": self.chat_template, "budget": self.budget, "fallback": self.fallback,
                "force": self.force, "early_stop": self.early_stop, "scoring": self.scoring,
                "endpoint": self.endpoint, "tokenizer": self.tokenizer_id}

    def _prompt_text(self, user: str) -> str:
        """The completions endpoint's prompt: raw text, the model's chat template (options.tokenizer), or the
        "### Instruction" framing when no tokenizer is configured."""
        from discriminators.prompts import render_prompt

        if not self.chat_template:
            return user
        if self.tokenizer_id and self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_id)
        return render_prompt(self._tokenizer, user, "chat")[0] if self._tokenizer is not None else render_plain(user)

    def _complete(self, user: str, prefill: str | None, **kw: Any) -> dict:
        """One completion of the candidate's prompt; `prefill` continues the assistant's answer (forcing)."""
        if self.endpoint == "chat":
            msgs = [{"role": "user", "content": user}]
            if prefill is not None:
                msgs.append({"role": "assistant", "content": prefill})
                kw.update(continue_final_message=True, add_generation_prompt=False)
            return self.client.chat(msgs, model=self.model, logprobs=True, top_logprobs=self.top_logprobs, **kw)
        return self.client.completions(self._prompt_text(user) + (prefill or ""), model=self.model,
                                       logprobs=self.top_logprobs, add_special_tokens=False, **kw)

    def _stream(self, user: str, deadline: float, **kw: Any) -> tuple[dict, bool]:
        """The reasoning completion streamed until it ends or `deadline` (monotonic) passes; returns the response
        assembled in the non-streamed shape (text/content, logprobs, finish_reason None when cut) and whether the
        deadline cut it. Closing the stream makes the server stop decoding."""
        chat = self.endpoint == "chat"
        if chat:
            path = "/chat/completions"
            payload = {"messages": [{"role": "user", "content": user}], "model": self.model, "logprobs": True,
                       "top_logprobs": self.top_logprobs, **kw}
        else:
            path = "/completions"
            payload = {"prompt": self._prompt_text(user), "model": self.model, "logprobs": self.top_logprobs,
                       "add_special_tokens": False, **kw}
        payload = {k: v for k, v in payload.items() if v is not None}
        payload.update(stream=True, stream_options={"include_usage": True})
        text, reasoning, finish, usage, model = [], [], None, {}, self.model
        content_lp: list[dict] = []
        toks: list[str] = []
        tlps: list[float | None] = []
        tops: list[dict] = []
        cut = False
        c = self.client
        timeout = max(deadline - time.monotonic(), 0.05)
        try:
            with c._sem, c._http.stream("POST", path, json=payload, timeout=min(c.timeout, timeout + 30.0)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise BackendError(f"{c.base}{path}: HTTP {r.status_code}: {r.text[:500]}")
                for line in r.iter_lines():
                    if time.monotonic() >= deadline:
                        cut = True
                        break
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    ev = json.loads(data)
                    model = ev.get("model") or model
                    usage = ev.get("usage") or usage
                    for ch in ev.get("choices") or []:
                        finish = ch.get("finish_reason") or finish
                        lp = ch.get("logprobs") or {}
                        if chat:
                            d = ch.get("delta") or {}
                            text.append(d.get("content") or "")
                            reasoning.append(d.get("reasoning_content") or d.get("reasoning") or "")
                            content_lp += lp.get("content") or []
                        else:
                            text.append(ch.get("text") or "")
                            toks += lp.get("tokens") or []
                            tlps += lp.get("token_logprobs") or []
                            tops += lp.get("top_logprobs") or []
        except httpx.TimeoutException as e:
            raise BackendError(f"{c.base}{path}: the stream timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise BackendError(f"{c.base}{path}: {type(e).__name__}: {e}") from e
        n = len(content_lp) if chat else len(toks)
        if cut or not usage:
            usage = {"prompt_tokens": int((usage or {}).get("prompt_tokens", 0)), "completion_tokens": n}
        if chat:
            msg = {"role": "assistant", "content": "".join(text)}
            if any(reasoning):
                msg["reasoning_content"] = "".join(reasoning)
            choice = {"index": 0, "finish_reason": None if cut else finish, "message": msg,
                      "logprobs": {"content": content_lp} if content_lp else None}
        else:
            choice = {"index": 0, "finish_reason": None if cut else finish, "text": "".join(text),
                      "logprobs": {"tokens": toks, "token_logprobs": tlps, "top_logprobs": tops} if toks else None}
        return {"model": model, "choices": [choice], "usage": usage}, cut

    def _score_one(self, user: str, deadline: float | None = None) -> Score:
        from discriminators.cot import forced_score, verdict_score
        from discriminators.verdict import find_verdict, first_complete_verdict, forcing_text, uses_thinking

        kw = {"temperature": 0.0, "max_tokens": self.budget, "seed": self.seed, "ignore_eos": self.ignore_eos or None}
        cut = False
        if deadline is None:
            resp = self._complete(user, None, **kw)
        else:
            resp, cut = self._stream(user, deadline, **kw)
        choices = resp.get("choices") or []
        if not choices:
            raise BackendError(f"{self.client.base}: the server returned no choices")
        ch = choices[0]
        content = choice_text(ch) or ""
        msg = ch.get("message") or {}
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")  # vLLM --reasoning-parser
        finished = ch.get("finish_reason") == "stop"
        ran_out = "time" if cut else ("tokens" if ch.get("finish_reason") == "length" else None)
        spent = {"reasoning_tokens": int((resp.get("usage") or {}).get("completion_tokens", 0))}
        tl = token_offsets(ch)
        lp_text = tl[0] if tl and tl[0] else None
        prompt_tail = self._prompt_text("") if self.endpoint == "completions" else ""
        if reasoning is not None:  # the answer is `content`; the logprobs (when given) cover reasoning + answer
            text, thinking, base = content, False, None
            if lp_text is not None:
                k = lp_text.rfind(content) if content else -1
                base = k if k >= 0 else None
        else:
            text = lp_text if lp_text is not None else content
            thinking, base = uses_thinking(text, prompt_tail), 0 if lp_text is not None else None
        stopped = False
        if self.early_stop:  # the local engine stops a row at its first complete verdict: same rule, after the fact
            v0 = first_complete_verdict(text, thinking=thinking)
            if v0 is not None:
                text, stopped, ran_out = text[:v0.end], True, None
        v = find_verdict(text, thinking=thinking, finished=finished or stopped)
        shown = content if reasoning is None else f"<think>{reasoning}</think>{content}"
        if v is not None:
            if tl is None or base is None:
                return self._mk(resp, score=self.fallback, verdict=v.value, parse_failure=True, reasoning=shown,
                                verdict_kind="missing",
                                error="the server returned no token logprobs for the answer: no probability")
            _, spans, lps, tops = tl
            pos = base + v.start
            idx = next((i for i, (a, b) in enumerate(spans) if a <= pos < b), None)
            if idx is None or idx >= len(lps) or lps[idx] is None:
                return self._mk(resp, score=self.fallback, verdict=v.value, parse_failure=True, reasoning=shown,
                                verdict_kind="missing", error="no logprob for the verdict token")
            p = math.exp(float(lps[idx]))
            score = verdict_score(v.value, p)
            if self.scoring == "normalized":
                pt, pf = _top_pair(tops[idx] if idx < len(tops) else None)
                if pt + pf <= 0:
                    return self._mk(resp, score=self.fallback, verdict=v.value, parse_failure=True, reasoning=shown,
                                    verdict_kind="missing", error="normalized scoring needs top_logprobs")
                _, score = forced_score(pt, pf, "normalized")
            return self._mk(resp, score=score, verdict=v.value, reasoning=shown, verdict_kind="natural",
                            ran_out=ran_out, **spent)
        if not self.force:
            return self._mk(resp, score=self.fallback, verdict=None, parse_failure=True, reasoning=shown,
                            verdict_kind="missing", ran_out=ran_out, **spent)
        # verdict forcing: one more completion of 1 token after the reasoning and the verdict prefix
        gen = content if reasoning is None else f"{reasoning}</think>{content}"
        prefill = gen + forcing_text(gen, thinking or reasoning is not None and "</think>" not in gen)
        fresp = self._complete(user, prefill, temperature=0.0, max_tokens=1, seed=self.seed)
        fch = (fresp.get("choices") or [{}])[0]
        ftl = token_offsets(fch)
        pt, pf = _top_pair(ftl[3][0] if ftl and ftl[3] else None)
        usage = {k: int((resp.get("usage") or {}).get(k, 0)) + int((fresp.get("usage") or {}).get(k, 0))
                 for k in ("prompt_tokens", "completion_tokens")}
        if pt + pf <= 0:
            return self._mk({**resp, "usage": usage}, score=self.fallback, verdict=None, parse_failure=True,
                            reasoning=shown, verdict_kind="missing", ran_out=ran_out, **spent,
                            error="verdict forcing: neither true nor false among the returned top logprobs")
        verdict, score = forced_score(pt, pf, self.scoring)
        return self._mk({**resp, "usage": usage}, score=score, verdict=verdict, reasoning=shown, verdict_kind="forced",
                        forced_probs=[pt, pf], ran_out=ran_out, **spent)


def _top_pair(top: dict | None) -> tuple[float, float]:
    """(P(true), P(false)) summed over the spellings ("true", " true") among one step's top logprobs."""
    pt = pf = 0.0
    for k, v in (top or {}).items():
        if v is None:
            continue
        w = k.strip()
        if w == "true" and k in ("true", " true"):
            pt += math.exp(v)
        elif w == "false" and k in ("false", " false"):
            pf += math.exp(v)
    return pt, pf


class OpenAILogitDiscriminator(_HTTPDiscriminator):
    """Options: prompt (logit-v1), endpoint, top_logprobs (20), fallback (0.5)."""

    mode = "logit"

    def __init__(self, spec: Any, **kw: Any):
        kw.pop("budget", None)
        super().__init__(spec, **kw)
        self.top_logprobs = int(opt(spec, "top_logprobs", 20))

    def _score_one(self, user: str, deadline: float | None = None) -> Score:
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


@DISCRIMINATORS.register("openai-cot", summary="chain-of-thought soft score over an OpenAI-compatible server",
                         options=HTTPDiscriminatorOptions)
def openai_cot(spec: Any, **kw: Any) -> Any:
    """CoT soft score over an OpenAI-compatible server (`spec.url`, `model`)."""
    return wrap_check(spec, OpenAICotDiscriminator(spec, **kw))


@DISCRIMINATORS.register("openai-logit", summary="yes/no score over an OpenAI-compatible server",
                         options=HTTPDiscriminatorOptions)
def openai_logit(spec: Any, **kw: Any) -> Any:
    """Yes/No score over an OpenAI-compatible server."""
    return wrap_check(spec, OpenAILogitDiscriminator(spec, **kw))


@DISCRIMINATORS.register("openai", summary="`openai-cot` or `openai-logit` by options.mode",
                         options=HTTPDiscriminatorOptions)
def openai_backend(spec: Any, **kw: Any) -> Any:
    """`openai-cot` or `openai-logit` by `options.mode` (default cot)."""
    return (openai_cot if spec_mode(spec) == "cot" else openai_logit)(spec, **kw)
