"""The no-reasoning discriminator: P("Yes") vs P("No") for the token right after a prompt asking
"Is the SQL correct? Answer Yes or No" (template `logit-v1`), normalized over the two.

Yes/No are token sets (the first token of "Yes", " Yes", "yes", " yes", "YES" and likewise for No), so
the score does not depend on whether the model would put a space first. One forward pass per candidate,
no generation; like the CoT discriminator the question's shared prefix is run once and its KV cache
reused (`score`), with `score_many` (cross-question batch) and `score_reference` (one at a time, no
padding) giving the same scores.
"""

from __future__ import annotations

import copy
from typing import Any

from core.model import Score
from discriminators.base import DISCRIMINATORS, DiscriminationRequest, LocalOptions
from discriminators.check import wrap_check
from discriminators.cot import _LocalDiscriminator

YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES")
NO_WORDS = ("No", " No", "no", " no", "NO")


def _prefill(model, input_ids, attention_mask, position_ids, past):
    import torch

    with torch.inference_mode():
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=past, use_cache=True, logits_to_keep=1)


def encode_rows(pad_id: int, rows: list[list[int]], offset: int, device: str):
    """Left-pad `rows` into (input_ids, row attention mask, position ids starting at `offset`)."""
    import torch

    B, L = len(rows), max(len(r) for r in rows)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    pos = torch.full((B, L), offset, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r)
        ids[b, L - n:] = torch.tensor(r, dtype=torch.long)
        mask[b, L - n:] = 1
        pos[b, L - n:] = torch.arange(offset, offset + n)
    return ids.to(device), mask.to(device), pos.to(device)


def prefix_cache(model, prefix_ids: list[int], device: str):
    """Run the shared prefix once; returns its KV cache (batch 1)."""
    import torch

    ids = torch.tensor([prefix_ids], device=device)
    return _prefill(model, ids, torch.ones_like(ids), None, None).past_key_values


def answer_token_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    ids: list[int] = []
    for w in words:
        enc = tokenizer(w, add_special_tokens=False)["input_ids"]
        if enc and enc[0] not in ids:
            ids.append(int(enc[0]))
    return ids


class LogitDiscriminator(_LocalDiscriminator):
    """Yes/No logit discriminator. Options: prompt ("logit-v1"), batch_size (16), device, dtype."""

    mode = "logit"

    def __init__(self, spec: Any = None, **kw: Any):
        kw.pop("budget", None), kw.pop("fallback", None), kw.pop("ignore_eos", None)
        super().__init__(spec, **kw)
        tok = self._lm().tokenizer
        self.yes_ids = answer_token_ids(tok, YES_WORDS)
        self.no_ids = answer_token_ids(tok, NO_WORDS)
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError("the tokenizer maps Yes and No to a shared first token")

    def score(self, request: DiscriminationRequest) -> list[Score]:
        """All candidates of one question; the shared prefix runs once."""
        lm = self._lm()
        pre, sufs = self.prompt_parts(request)
        if not sufs:
            return []
        probs: list[tuple[float, float]] = []
        with lm.lock:
            kv = prefix_cache(lm.model, pre, lm.device)
            for i in range(0, len(sufs), self.batch_size):
                probs += self._yes_no(sufs[i:i + self.batch_size], pre, kv)
        return [self._score(len(pre) + len(s), py, pn) for s, (py, pn) in zip(sufs, probs, strict=True)]

    def score_many(self, requests: list[DiscriminationRequest]) -> list[list[Score]]:
        """Candidates of many questions in left-padded batches of full prompts."""
        lm = self._lm()
        jobs = []
        for qi, r in enumerate(requests):
            pre, sufs = self.prompt_parts(r)
            jobs += [(qi, ci, pre + s) for ci, s in enumerate(sufs)]
        out: list[list[Score | None]] = [[None] * len(r.sqls) for r in requests]
        with lm.lock:
            for i in range(0, len(jobs), self.batch_size):
                chunk = jobs[i:i + self.batch_size]
                for (qi, ci, p), (py, pn) in zip(chunk, self._yes_no([j[2] for j in chunk], None, None), strict=True):
                    out[qi][ci] = self._score(len(p), py, pn)
        return out  # type: ignore[return-value]

    def score_reference(self, request: DiscriminationRequest) -> list[Score]:
        """One candidate at a time, a plain forward pass over its full prompt."""
        lm = self._lm()
        pre, sufs = self.prompt_parts(request)
        with lm.lock:
            return [self._score(len(pre) + len(s), *self._yes_no([pre + s], None, None)[0]) for s in sufs]

    def _yes_no(self, rows: list[list[int]], prefix: list[int] | None, kv: Any) -> list[tuple[float, float]]:
        import torch

        lm = self._lm()
        P = len(prefix) if prefix else 0
        with torch.inference_mode():
            past = None
            if P:
                past = copy.deepcopy(kv)
                if len(rows) > 1:
                    past.batch_repeat_interleave(len(rows))
            ids, row_mask, pos = encode_rows(lm.pad_token_id, rows, P, lm.device)
            mask = torch.cat([torch.ones((len(rows), P), dtype=torch.long, device=lm.device), row_mask], dim=1)
            p = torch.softmax(_prefill(lm.model, ids, mask, pos, past).logits[:, -1].float(), dim=-1)
            py = p[:, self.yes_ids].sum(-1).tolist()
            pn = p[:, self.no_ids].sum(-1).tolist()
        return list(zip(py, pn, strict=True))

    def _score(self, prompt_tokens: int, p_yes: float, p_no: float) -> Score:
        total = p_yes + p_no
        s = p_yes / total if total > 0 else 0.5
        return Score(score=s, verdict=s >= 0.5, parse_failure=total <= 0, reasoning=None, discriminator=self.name,
                     checkpoint=self.checkpoint, mode=self.mode, prompt_tokens=prompt_tokens, completion_tokens=0)


@DISCRIMINATORS.register("logit", summary="yes/no logit score on a local checkpoint", options=LocalOptions)
def logit(spec: Any = None, **kw: Any) -> Any:
    """Yes/No logit score on a local checkpoint (`spec.path`)."""
    return wrap_check(spec, LogitDiscriminator(spec, **kw))
