"""Sampling and detokenization primitives on a loaded checkpoint, shared by the generator backends,
the discriminators and the OpenAI-compatible test server.

`sample()` draws n samples with temperature/top_p/max_tokens/seed, per-token logprobs and top-k alternatives
from the raw logits; `token_spans()` is incremental detokenization: the character span each generated token
contributes to the decoded text, used to map an answer in the text back to its token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.runtime.checkpoint import LoadedModel


def token_spans(tokenizer: Any, ids: list[int], *, skip_special_tokens: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """Incrementally decode `ids`. Returns (text, spans) where spans[i] = (start, end) is the part of `text`
    that token i added. A token that completes only part of a multi-byte character adds nothing (an empty
    span); the character is attributed to the token that completes it. Concatenating the token texts gives
    `text` exactly, so an offset in `text` maps back to exactly one generated token."""
    text = ""
    spans: list[tuple[int, int]] = []
    prefix_offset = read_offset = 0
    for k in range(len(ids)):
        prev = tokenizer.decode(ids[prefix_offset:read_offset], skip_special_tokens=skip_special_tokens,
                                clean_up_tokenization_spaces=False)
        cur = tokenizer.decode(ids[prefix_offset:k + 1], skip_special_tokens=skip_special_tokens,
                               clean_up_tokenization_spaces=False)
        if len(cur) > len(prev) and not cur.endswith("\ufffd") and cur.startswith(prev):
            start = len(text)
            text += cur[len(prev):]
            spans.append((start, len(text)))
            prefix_offset, read_offset = read_offset, k + 1
        else:
            spans.append((len(text), len(text)))
    return text, spans


def token_at(spans: list[tuple[int, int]], char_pos: int) -> int | None:
    """Index of the token whose span contains `char_pos` (None if none does)."""
    for i, (s, e) in enumerate(spans):
        if s <= char_pos < e:
            return i
    return None


def encode(loaded: LoadedModel, text: str, *, templated: bool) -> list[int]:
    """Token ids of a prompt. Chat-templated text already holds its special tokens (no BOS added)."""
    return list(loaded.tokenizer(text, add_special_tokens=not templated)["input_ids"])


@dataclass
class Sample:
    """One generated completion."""

    ids: list[int]  # generated tokens, up to and including the EOS when it stopped on one
    text: str  # decoded without special tokens
    finish_reason: str  # "stop" (EOS or a stop string) | "length"
    token_logprobs: list[float] = field(default_factory=list)  # log p(chosen token) from the raw logits
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)  # per step, k best (id, logprob)
    row: int = 0  # the batch row it was decoded in (a stopping criterion's per-row record): greedy n > 1 shares row 0


def sample(loaded: LoadedModel, prompt_ids: list[int], *, n: int = 1, temperature: float = 0.7, top_p: float = 1.0,
           max_tokens: int = 256, seed: int | None = None, logprobs: int | None = None,
           stop: list[str] | None = None, ignore_eos: bool = False, logits_processor: Any = None,
           stopping_criteria: Any = None) -> list[Sample]:
    """n completions of one prompt. temperature 0 = greedy. Log-probabilities come from the raw (unscaled)
    logits, as OpenAI-compatible servers report them; `logprobs=k` also keeps the k best per step.
    `logits_processor` (e.g. a grammar mask from `generators.constrained`) and `stopping_criteria` are
    passed to `generate` as they are (a single object or a list)."""
    import torch
    from transformers import GenerationConfig

    if n < 1 or max_tokens < 1:
        raise ValueError("n and max_tokens must be >= 1")
    if not prompt_ids:
        raise ValueError("empty prompt")
    model, tok = loaded.model, loaded.tokenizer
    eos = loaded.eos_token_ids()
    greedy = temperature is None or temperature <= 0
    cfg = GenerationConfig(
        max_new_tokens=int(max_tokens), do_sample=not greedy, num_return_sequences=1 if greedy else n,
        temperature=None if greedy else float(temperature), top_p=None if greedy else float(top_p),
        top_k=None, pad_token_id=loaded.pad_token_id,
        # [] (not None) for ignore_eos: generate() fills a None eos_token_id from the model config and stops there
        eos_token_id=[] if ignore_eos else eos,
        bos_token_id=None, output_logits=logprobs is not None, return_dict_in_generate=True,
    )
    inp = torch.tensor([prompt_ids], device=loaded.device)
    with loaded.lock, torch.inference_mode():
        if seed is not None:
            torch.manual_seed(int(seed))
        extra: dict[str, Any] = {}
        if logits_processor is not None:
            from transformers import LogitsProcessorList

            lps = logits_processor if isinstance(logits_processor, list) else [logits_processor]
            extra["logits_processor"] = LogitsProcessorList(lps)
        if stopping_criteria is not None:
            from transformers import StoppingCriteriaList

            scs = stopping_criteria if isinstance(stopping_criteria, list) else [stopping_criteria]
            extra["stopping_criteria"] = StoppingCriteriaList(scs)
        if not greedy and n > 1 and len(prompt_ids) > 1:
            # prefill the prompt ONCE and give every sample a copy of its KV cache (generate would otherwise
            # expand the prompt to n rows and prefill each)
            # logits_to_keep=1: the prefill's logits are not used (all of them: a (len, vocab) float matrix)
            cache = model(input_ids=inp[:, :-1], use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(n)
            inp = inp.repeat(n, 1)
            cfg.num_return_sequences = 1
            extra["past_key_values"] = cache
        out = model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), generation_config=cfg,
                             use_model_defaults=False, **extra)
    seqs = out.sequences[:, len(prompt_ids):].tolist()
    rows = [0] * n if greedy else list(range(n))  # greedy: one decode, n identical samples
    logps = None
    if logprobs is not None and out.logits:
        logps = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # [n, steps, vocab]
    samples = []
    for r in rows:
        row = seqs[r]
        ids, finish = [], "length"
        for t in row:
            ids.append(t)
            if not ignore_eos and t in eos:
                finish = "stop"
                break
        s = Sample(ids=ids, text=tok.decode(ids, skip_special_tokens=True), finish_reason=finish, row=r)
        if logps is not None:
            lp = logps[r, : len(ids)]
            s.token_logprobs = lp.gather(-1, torch.tensor(ids, device=lp.device)[:, None])[:, 0].tolist()
            if logprobs > 0:
                v, i = lp.topk(min(int(logprobs), lp.shape[-1]), dim=-1)
                s.top_logprobs = [list(zip(ii, vv, strict=True)) for ii, vv in zip(i.tolist(), v.tolist(), strict=True)]
        if stop:
            cut = min((s.text.find(x) for x in stop if x and x in s.text), default=-1)
            if cut >= 0:
                s.text, s.finish_reason = s.text[:cut], "stop"
        samples.append(s)
    return samples
