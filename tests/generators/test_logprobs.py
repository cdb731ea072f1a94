"""Sequence logprobs recorded at generation time, for every generator backend kind (issue 26): the local
`transformers` backend and `embedded` (from the logits generate() already returns), the `openai` backend against
the project's own loopback server (`sqlarbiter models serve-openai`), a server that returns none (the feature is
missing, with a flag), and the candidates they become (`CandidatePool.add_many`)."""

from __future__ import annotations

import math

import pytest

from api.openai_server import create_openai_app, serve_in_thread
from core.runtime.hf import sample
from core.specs import ModelSpec
from generators.base import GenerationRequest, GenerationResult, SamplingParams, sequence_logprob
from generators.constrained import sql_end_stopping
from generators.hf import TransformersGenerator
from generators.openai import OpenAIGenerator, choice_token_logprobs

SCHEMA = "CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, age INT, country TEXT);"


def _req(n=2, temperature=0.8):
    return GenerationRequest(question="How many singers are older than 30?", schema=SCHEMA,
                             params=SamplingParams(n=n, temperature=temperature, top_p=0.95, max_tokens=12, seed=3))


def _check(res: GenerationResult, n: int) -> None:
    assert len(res.logprobs) == n == len(res.logprob_tokens) and not res.logprobs_missing
    for lp, k in zip(res.logprobs, res.logprob_tokens, strict=True):
        assert lp is not None and lp <= 0.0 and math.isfinite(lp) and k is not None and k >= 1


def test_transformers_backend_records_sequence_logprobs(tiny_model):
    gen = TransformersGenerator(loaded=tiny_model, name="tiny-gen")
    res = gen.generate(_req())
    _check(res, 2)
    # greedy: the total equals the sum of the sampled tokens' logprobs from the core sampler
    g = gen.generate(_req(n=1, temperature=0))
    ids = gen.prompt_ids(_req(n=1, temperature=0))
    s = sample(tiny_model, ids, n=1, temperature=0, max_tokens=12, logprobs=0,
               stopping_criteria=sql_end_stopping(tiny_model.tokenizer, len(ids)))[0]
    assert g.logprobs[0] == pytest.approx(sum(s.token_logprobs), abs=1e-4) and g.logprob_tokens[0] == len(s.ids)


def test_embedded_backend_records_sequence_logprobs(tiny_model, monkeypatch):
    import generators.embedded as emb

    monkeypatch.setattr(emb, "embedded_checkpoint", lambda: str(tiny_model.path))
    spec = ModelSpec(name="embedded", role="generator", backend="embedded", options={"constrained": False})
    gen = emb.embedded_generator(spec, loaded=tiny_model)
    _check(gen.generate(_req()), 2)


@pytest.fixture(scope="module")
def server(tiny_model):
    with serve_in_thread(create_openai_app("tiny", tiny_model)) as url:
        yield url


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_openai_backend_asks_the_loopback_server_for_logprobs(server, endpoint):
    spec = ModelSpec(name="http-gen", role="generator", backend="openai", url=server, model="tiny",
                     options={"endpoint": endpoint})
    gen = OpenAIGenerator(spec)
    try:
        _check(gen.generate(_req()), 2)
    finally:
        gen.close()


class _NoLogprobsClient:
    """A server that ignores `logprobs` (returns choices without them)."""

    base = "http://no-logprobs"

    def __init__(self):
        self.seen: list[dict] = []

    def chat(self, messages, **kw):
        self.seen.append(kw)
        return {"choices": [{"index": i, "message": {"content": "SELECT 1"}} for i in range(kw["n"])],
                "usage": {"prompt_tokens": 3, "completion_tokens": kw["n"]}}

    def close(self):
        pass


def test_a_server_without_logprobs_leaves_the_feature_missing_with_a_flag():
    client = _NoLogprobsClient()
    gen = OpenAIGenerator(ModelSpec(name="g", role="generator", backend="openai", url="http://x", model="m"),
                          client=client)
    res = gen.generate(_req())
    assert client.seen[0]["logprobs"] is True
    assert res.logprobs == [None, None] and res.logprobs_missing and any("logprobs" in n for n in res.notes)


def test_parsing_and_candidates_carry_the_logprob():
    from planner.normalize import CandidatePool

    assert choice_token_logprobs({"logprobs": {"content": [{"logprob": -0.5}, {"logprob": -1.0}]}}) == [-0.5, -1.0]
    assert choice_token_logprobs({"logprobs": {"token_logprobs": [-0.25, None]}}) == [-0.25, None]
    assert choice_token_logprobs({"logprobs": None}) is None
    assert sequence_logprob([-0.25, None, -0.75]) == (-1.0, 2) and sequence_logprob(None) == (None, None)
    pool = CandidatePool()
    pool.add_many(["SELECT 1", "SELECT 2", "SELECT 1"], source="g", logprobs=[-1.0, -2.0, -3.0],
                  logprob_tokens=[2, 2, 2])
    assert [(c.logprob, c.logprob_tokens, c.duplicates) for c in pool.candidates] == [(-1.0, 2, 2), (-2.0, 2, 1)]
