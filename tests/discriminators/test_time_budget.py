"""The discriminator's time budget (issue 31): at the deadline decoding stops and the verdict is forced, in the same
batched decode locally and by one more 1-token call over HTTP; every Score says how its reasoning ended."""

from __future__ import annotations

import json
import math
import time

import pytest

from discriminators.base import DiscriminationRequest

SCHEMA = "CREATE TABLE singer (singer_id INT, name TEXT, age INT, country TEXT);"
REQ = DiscriminationRequest(question="How many singers are older than 30?", schema=SCHEMA,
                            sqls=["SELECT count(*) FROM singer WHERE age > 30", "SELECT name FROM singer"])


def test_a_call_past_its_time_budget_is_forced_and_says_so(tiny_model):
    """Real embedded model, a tiny time budget: one token from the prefill, then the forcing path of the same
    decode; the scores equal those of a 1-token budget (the same forcing, only the reason differs)."""
    from discriminators.cot import CotDiscriminator

    timed = CotDiscriminator(loaded=tiny_model, budget=64, time_budget_s=1e-3).score(REQ)
    assert [s.verdict_kind for s in timed] == ["forced", "forced"]
    assert [s.ran_out for s in timed] == ["time", "time"]
    assert [s.reasoning_tokens for s in timed] == [1, 1]
    assert all(s.verdict is not None and 0.0 <= s.score <= 1.0 and s.forced_probs for s in timed)
    one = CotDiscriminator(loaded=tiny_model, budget=1).score(REQ)
    assert [s.ran_out for s in one] == ["tokens", "tokens"]
    for a, b in zip(timed, one, strict=True):
        assert a.verdict == b.verdict and abs(a.score - b.score) < 1e-5


def test_the_request_deadline_and_the_reference_path(tiny_model):
    from discriminators.cot import CotDiscriminator

    d = CotDiscriminator(loaded=tiny_model, budget=64)
    req = DiscriminationRequest(question=REQ.question, schema=SCHEMA, sqls=REQ.sqls[:1], deadline=time.monotonic())
    (s,) = d.score(req)  # the request's own deadline (the pipeline's) bounds the call
    assert s.ran_out == "time" and s.verdict_kind == "forced" and s.reasoning_tokens == 1
    (r,) = d.score_reference(req)  # generate(max_time=...): stops at once, then forced
    assert r.ran_out == "time" and r.verdict_kind == "forced" and r.reasoning_tokens <= 2
    (free,) = d.score(DiscriminationRequest(question=REQ.question, schema=SCHEMA, sqls=REQ.sqls[:1]))
    assert free.ran_out in (None, "tokens") and free.reasoning_tokens == free.completion_tokens


def _sse(events: list[dict], delay: float):
    def gen():
        for ev in events:
            time.sleep(delay)
            yield f"data: {json.dumps(ev)}\n\n".encode()
        yield b"data: [DONE]\n\n"
    return gen()


def test_http_streams_until_the_deadline_then_forces_with_one_token(tiny_checkpoint):
    """Over HTTP the reasoning is streamed and the stream closed at the deadline; one more 1-token completion with
    the reasoning so far and the verdict prefix gives the verdict."""
    import httpx

    from core.runtime.openai_http import OpenAIClient
    from core.specs import ModelSpec
    from discriminators.openai import OpenAICotDiscriminator

    seen: list[dict] = []
    words = ["Let", " me", " check", " the", " WHERE", " clause", " carefully", " and", " then"]

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if body.get("stream"):
            events = [{"model": "s", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None,
                                                  "logprobs": {"content": [{"token": w, "logprob": -0.1,
                                                                            "top_logprobs": []}]}}]} for w in words]
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_sse(events, 0.05))
        top = [{"token": " true", "logprob": math.log(0.7)}, {"token": " false", "logprob": math.log(0.2)}]
        return httpx.Response(200, json={"model": "s", "usage": {"prompt_tokens": 50, "completion_tokens": 1},
                                         "choices": [{"index": 0, "finish_reason": "length",
                                                      "message": {"role": "assistant", "content": " true"},
                                                      "logprobs": {"content": [{"token": " true",
                                                                                "logprob": math.log(0.7),
                                                                                "top_logprobs": top}]}}]})

    client = OpenAIClient("http://scripted.invalid/v1", transport=httpx.MockTransport(handler), max_retries=0)
    spec = ModelSpec(name="s", role="discriminator", backend="openai-cot", url="http://scripted.invalid/v1", model="s",
                     options={"budget": 64})
    d = OpenAICotDiscriminator(spec, client=client, time_budget_s=0.18)
    (s,) = d.score(DiscriminationRequest(question="How many singers?", schema=SCHEMA, sqls=["SELECT count(*) FROM singer"]))
    # the stream was closed at the deadline, not read to its end: fewer reasoning tokens than the server sends
    assert s.verdict_kind == "forced" and s.ran_out == "time" and s.verdict is True
    assert s.score == pytest.approx(0.7) and 1 <= s.reasoning_tokens < len(words)
    assert len(seen) == 2 and seen[0]["stream"] is True and seen[0]["max_tokens"] == 64
    force = seen[1]
    assert force["max_tokens"] == 1 and not force.get("stream")
    prefill = force["messages"][-1]["content"]
    assert prefill.startswith("Let me") and prefill.endswith('{"correct":') and force["continue_final_message"]
