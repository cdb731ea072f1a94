"""The one decoding engine (discriminators.batching.BatchedGreedy) on real models: the in-place KV cache with
grouped-query SDPA, transformers' own cache, and plain `generate` agree token for token; padding, shared prefixes,
chunking and EOS stops change nothing a row would see alone."""

from __future__ import annotations

import pytest
import torch

from benchmarks.archs import load_model
from discriminators.batching import KV_CACHES, BatchedGreedy, ScoringJob, gqa_sdpa

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    return load_model("smollm2-135m", device="cpu")  # real weights, 9 query heads over 3 KV heads


@pytest.fixture(scope="module")
def small_random():
    return load_model("qwen2-small", device="cpu", seed=0)  # Qwen2 architecture, 4 query heads over 2 KV heads


def jobs_for(bm):
    enc = bm.tokenizer.encode
    short = ScoringJob(enc("Q: count rows\nSQL: "), [enc("SELECT 1"), enc("SELECT count(*) FROM t WHERE a > 3")])
    long = ScoringJob(enc("Schema: CREATE TABLE t(a int, b text, c real);\n" * 6 + "Q: list all of a\nSQL: "),
                      [enc("SELECT a FROM t WHERE b = 'x' ORDER BY c DESC LIMIT 10")])
    return short, long


def same(a, b, tol=TOL):
    assert a.tokens == b.tokens
    assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)) < tol
    if a.score is not None and b.score is not None:
        assert abs(a.score - b.score) < tol and abs(a.first_score - b.first_score) < tol


@pytest.mark.parametrize("arch", ["tiny", "small_random"])
@pytest.mark.parametrize("kv_cache", KV_CACHES)
def test_batched_rows_equal_generate(arch, kv_cache, request):
    """Rows of two questions with different prefix and suffix lengths, decoded in one batch, equal plain generate."""
    bm = request.getfixturevalue(arch)
    short, long = jobs_for(bm)
    eng = BatchedGreedy(bm.model, budget=8, answer_ids=bm.tokenizer.answer_ids(), kv_cache=kv_cache)
    res, st = eng.run([long, short])
    for job, rows in zip([long, short], res, strict=True):
        for suf, row in zip(job.suffixes, rows, strict=True):
            ref, _ = eng.reference(job.prefix + suf)
            same(ref, row)
            assert row.prompt_tokens == len(job.prefix) + len(suf) and len(row.tokens) == 8
    assert st.rows == 3 and st.generated_tokens == 24 and st.decode_tokens == 21 and st.extra["distinct_prefixes"] == 2
    assert bm.model.config._attn_implementation == "sdpa"  # the engine's attention switch is undone


def test_padding_shared_prefixes_and_chunks_change_nothing(tiny):
    short, long = jobs_for(tiny)
    eng = BatchedGreedy(tiny.model, budget=6, answer_ids=tiny.tokenizer.answer_ids())
    alone, _ = eng.run([short])
    mixed, _ = eng.run([long, short])
    for a, m in zip(alone[0], mixed[1], strict=True):
        same(a, m)
    # two questions with one prompt prefix: it is run once
    twin = ScoringJob(short.prefix, [long.suffixes[0]])
    both, st = eng.run([short, twin])
    assert st.extra["distinct_prefixes"] == 1
    for a, m in zip(alone[0], both[0], strict=True):
        same(a, m)
    # a question split over two batches
    chunked, st = eng.run_many([long, short], batch_size=2)
    assert st.batches == 2
    for rows_a, rows_b in zip(mixed, chunked, strict=True):
        for a, b in zip(rows_a, rows_b, strict=True):
            same(a, b)


@pytest.mark.parametrize("kv_cache", KV_CACHES)
def test_eos_stops_a_row_and_the_others_go_on(tiny, kv_cache):
    """With EOS honoured, a row ends at its first EOS (kept); the same as generate stopping there."""
    short, long = jobs_for(tiny)
    free = BatchedGreedy(tiny.model, budget=20, kv_cache=kv_cache)
    res, _ = free.run([long, short])
    row = res[1][0].tokens  # stop this row at the token it produces 4th; others keep going unless they hit it too
    eos = row[3]
    eng = BatchedGreedy(tiny.model, budget=20, ignore_eos=False, eos_token_ids=[eos], pad_token_id=0,
                        kv_cache=kv_cache)
    stopped, st = eng.run([long, short])
    assert stopped[1][0].tokens == row[:row.index(eos) + 1]
    for job, rows in zip([long, short], stopped, strict=True):
        for suf, r in zip(job.suffixes, rows, strict=True):
            ref, _ = eng.reference(job.prefix + suf)
            same(ref, r)
    assert st.generated_tokens == sum(len(r.tokens) for rows in stopped for r in rows)


def test_all_rows_stopped_ends_the_batch_early(tiny):
    short, _ = jobs_for(tiny)
    first = BatchedGreedy(tiny.model, budget=1).run([short])[0]
    eos = sorted({r.tokens[0] for r in first[0]})  # every row's first token is an EOS
    eng = BatchedGreedy(tiny.model, budget=200, ignore_eos=False, eos_token_ids=eos)
    res, st = eng.run([short])
    assert all(len(r.tokens) == 1 for r in res[0])
    assert st.decode_steps <= 16 + 1  # checked every EOS_CHECK_EVERY steps, not run to the budget


@pytest.mark.parametrize("lq", [1, 5])
def test_gqa_sdpa_equals_repeated_kv_attention(lq):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(0)
    B, Hkv, G, L, D = 3, 2, 3, 11, 8
    module = type("M", (), {"num_key_value_groups": G, "is_causal": True, "training": False})()
    q = torch.randn(B, Hkv * G, lq, D, generator=g)
    k = torch.randn(B, Hkv, L, D, generator=g)
    v = torch.randn(B, Hkv, L, D, generator=g)
    mask = torch.rand(B, 1, lq, L, generator=g) > 0.3
    mask[..., -1] = True  # no fully masked query row
    got, _ = gqa_sdpa(module, q, k, v, mask, scaling=D ** -0.5)
    want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=D ** -0.5)
    assert got.shape == want.shape == (B, lq, Hkv * G, D)
    assert torch.allclose(got, want, atol=1e-5)


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="budget"):
        BatchedGreedy(tiny.model, budget=0)
    with pytest.raises(ValueError, match="kv_cache"):
        BatchedGreedy(tiny.model, budget=1, kv_cache="paged")
    eng = BatchedGreedy(tiny.model, budget=1)
    with pytest.raises(ValueError, match="suffix"):
        eng.run([ScoringJob([1, 2], [[]])])
    with pytest.raises(ValueError, match="batch_size"):
        eng.run_many([ScoringJob([1, 2], [[3]])], 0)
    assert eng.run([]) == ([], eng.run([])[1])


def test_suffix_prefill_in_row_chunks_changes_nothing(tiny, monkeypatch):
    import discriminators.batching as batching

    short, long = jobs_for(tiny)
    eng = BatchedGreedy(tiny.model, budget=5, answer_ids=tiny.tokenizer.answer_ids())
    whole, _ = eng.run([long, short])
    monkeypatch.setattr(batching, "PREFILL_TOKENS", 1)  # one row per suffix-prefill forward
    chunked, _ = eng.run([long, short])
    for rows_a, rows_b in zip(whole, chunked, strict=True):
        for a, b in zip(rows_a, rows_b, strict=True):
            same(a, b)
