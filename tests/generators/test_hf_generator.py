"""The transformers generator on the real tiny model, checkpoint loading errors, and the embedded default."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from core.errors import CheckpointError
from core.runtime.chat import render_prompt
from core.runtime.checkpoint import choose_device, choose_dtype, load_checkpoint
from core.runtime.hf import sample, token_spans
from core.specs import ModelSpec
from generators.base import GENERATORS, GenerationRequest, SamplingParams
from generators.hf import TransformersGenerator
from generators.prompts import build_messages

SCHEMA = "CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, age INT, country TEXT);"


def _req(n=3, max_tokens=16, seed=7, temperature=0.8):
    return GenerationRequest(question="How many singers are older than 30?", schema=SCHEMA,
                             params=SamplingParams(n=n, temperature=temperature, top_p=0.95, max_tokens=max_tokens, seed=seed))


@pytest.fixture(scope="module")
def gen(tiny_model):
    return TransformersGenerator(loaded=tiny_model, name="tiny-gen")


@pytest.fixture(scope="module")
def first(gen):
    return gen.generate(_req())


def test_generates_n_candidates_with_exact_token_accounting(gen, tiny_model, first):
    req = _req()
    res = first
    assert len(res.sqls) == len(res.raw) == 3
    assert res.model == "tiny-gen"
    tok = tiny_model.tokenizer
    prompt = render_prompt(tok, build_messages(req))
    assert prompt.startswith("<|im_start|>system")  # the chat template was applied
    assert res.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"]) == len(gen.prompt_ids(req))
    # completion tokens: what sample() produced, each at most max_tokens
    samples = sample(tiny_model, gen.prompt_ids(req), n=3, temperature=0.8, top_p=0.95, max_tokens=16, seed=7)
    assert [s.text for s in samples] == res.raw  # same seed, same samples
    assert res.completion_tokens == sum(len(s.ids) for s in samples)
    assert all(1 <= len(s.ids) <= 16 for s in samples)


def test_greedy_samples_are_identical(gen):
    g = gen.generate(_req(n=2, temperature=0.0, max_tokens=8))
    assert g.raw[0] == g.raw[1] and g.completion_tokens % 2 == 0 and 2 <= g.completion_tokens <= 16


def test_logprobs_are_log_softmax_of_a_direct_forward_pass(tiny_model):
    import torch

    ids = tiny_model.tokenizer("SELECT name FROM", add_special_tokens=True)["input_ids"]
    s = sample(tiny_model, ids, n=1, temperature=0.0, max_tokens=6, logprobs=3)[0]
    full = torch.tensor([ids + s.ids])
    with torch.no_grad():
        logits = tiny_model.model(full).logits[0, len(ids) - 1: len(ids) - 1 + len(s.ids)]
    ref = torch.log_softmax(logits.float(), -1)
    for t, (tid, lp) in enumerate(zip(s.ids, s.token_logprobs, strict=True)):
        assert abs(ref[t, tid].item() - lp) < 1e-4
        assert s.top_logprobs[t][0][0] == tid  # greedy: the chosen token is the best one


def test_token_spans_cover_text_and_attribute_multibyte_characters(tiny_model):
    tok = tiny_model.tokenizer
    ids = tok("héllo wörld 日本語 {\"correct\": true}", add_special_tokens=False)["input_ids"]
    text, spans = token_spans(tok, ids)
    assert text == tok.decode(ids, clean_up_tokenization_spaces=False)
    assert "".join(text[a:b] for a, b in spans) == text
    assert spans[-1][1] == len(text)


def test_registry_creates_transformers_backend_from_spec(tiny_checkpoint):
    import generators.registry_all  # noqa: F401
    from core.runtime.embedded import embedded_dtype

    dtype = embedded_dtype()
    spec = ModelSpec(name="local", role="generator", backend="transformers", path=str(tiny_checkpoint),
                     options={"dtype": dtype})
    g = GENERATORS.create(spec.backend, spec)
    assert g.name == "local" and g.loaded.name == "local"
    emb = GENERATORS.create("embedded", ModelSpec(name="emb", role="generator"))
    assert emb.loaded.model is g.loaded.model  # same checkpoint and dtype: one copy of the weights, shared
    other = GENERATORS.create("embedded", ModelSpec(name="emb32", role="generator", options={"dtype": "float32"}))
    assert other.loaded.dtype != emb.loaded.dtype or dtype == "float32"  # options.dtype is honoured


def test_cpu_linears_are_prepacked_and_give_the_same_logits(tiny_checkpoint, tiny_model):
    """On the CPU, load_checkpoint runs every Linear prepacked for oneDNN: float32 logits equal the unpacked
    model's, and bf16 weights (where the CPU runs bf16 natively) stay close to them."""
    import torch

    from core.runtime.checkpoint import cpu_bf16_native

    if tiny_model.device != "cpu" or not torch.backends.mkldnn.is_available():
        pytest.skip("prepacking is a CPU/oneDNN path")
    raw = load_checkpoint(tiny_checkpoint, dtype="float32", prepack=False, share=False)
    assert not any("Packed" in type(m).__name__ for m in raw.model.modules())
    assert any("Packed" in type(m).__name__ for m in tiny_model.model.modules())
    ids = torch.tensor([raw.tokenizer("SELECT count(*) FROM singer WHERE age > 30")["input_ids"]])
    with torch.inference_mode():
        ref = torch.log_softmax(raw.model(input_ids=ids).logits[0].float(), -1)
        packed = torch.log_softmax(tiny_model.model(input_ids=ids).logits[0].float(), -1)
        assert torch.allclose(ref, packed, atol=1e-3)
        if cpu_bf16_native():
            b = load_checkpoint(tiny_checkpoint, dtype="bfloat16", share=False)
            lp = torch.log_softmax(b.model(input_ids=ids).logits[0], -1)
            assert lp.dtype == torch.float32  # logits stay float32: soft scores read the same way
            kl = (ref.exp() * (ref - lp)).sum(-1).mean().item()
            assert kl < 0.02, kl


def test_missing_and_broken_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    with pytest.raises(CheckpointError, match="failed to load"):
        load_checkpoint(bad)
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"not a gguf file")
    with pytest.raises(CheckpointError, match="not a GGUF"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="needs `path`"):
        TransformersGenerator(ModelSpec(name="x", role="generator", backend="transformers"))


def test_device_and_dtype_choice():
    import torch

    dev = choose_device("auto")
    assert dev == ("cuda" if torch.cuda.is_available() else "cpu")
    assert choose_dtype("cpu") == torch.float32 and choose_dtype("cuda") == torch.bfloat16
    assert choose_dtype("cpu", "bf16") == torch.bfloat16
    with pytest.raises(CheckpointError):
        choose_dtype("cpu", "int3")


def test_embedded_checkpoint_is_cached_and_complete(tiny_checkpoint):
    from core.runtime.embedded import embedded_checkpoint, find_embedded_gguf

    assert find_embedded_gguf().read_bytes()[:4] == b"GGUF"
    assert embedded_checkpoint() == tiny_checkpoint
    assert (Path(tiny_checkpoint) / "config.json").is_file()
    assert (Path(tiny_checkpoint) / "model.safetensors").is_file()


@pytest.mark.slow
def test_embedded_conversion_is_atomic_and_runs_once_under_concurrency(tmp_path):
    """Two threads convert into a fresh cache at once: one converts, the other waits and reuses it."""
    from generators import embedded

    calls = []
    real = embedded.convert_gguf

    def counting(gguf, target):
        calls.append(target)
        return real(gguf, target)

    embedded.convert_gguf = counting
    try:
        out: list[Path] = []
        ts = [threading.Thread(target=lambda: out.append(embedded.embedded_checkpoint(tmp_path))) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        embedded.convert_gguf = real
    assert len(calls) == 1 and len(set(out)) == 1
    target = out[0]
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == [target.name]
    lm = load_checkpoint(target, share=False)
    assert lm.tokenizer.eos_token == "<|im_end|>"
    assert oct(os.stat(target).st_mode)[-3:] == "755"


@pytest.mark.slow
def test_gguf_file_loads_directly():
    from core.runtime.embedded import find_embedded_gguf

    lm = load_checkpoint(find_embedded_gguf(), share=False)
    assert lm.model.config.model_type == "llama"
