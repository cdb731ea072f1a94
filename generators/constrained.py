"""Schema-constrained decoding on local checkpoints (transformers / embedded backends), with xgrammar.

`grammar_processor(loaded, grammar)` returns a fresh `transformers.LogitsProcessor` (xgrammar's
`xgrammar.contrib.hf.LogitsProcessor`, one per `generate` call) that masks, at every step and for every
sampled row of the batch, the tokens the grammar (`generators.grammar.sql_grammar`) does not allow. The
compiled grammar is cached per (tokenizer, grammar text): compiling a schema grammar against a 49k-token
vocabulary takes about a second, a cached one nothing. When the grammar ends (the closing ```), only the
end-of-sequence token is allowed, so sampling stops where the SQL ends.

`SqlEndStopping(tokenizer, prompt_len)` is the stop rule for unconstrained sampling: a row stops once its
text holds a closed ```...``` block or a `;` after a SELECT, instead of running to `max_tokens`.

`stop_strings_stopping(tokenizer, prompt_len, stops)` stops a row once its generated text holds one of `stops`
(the step boundaries of step mode, an OpenAI request's `stop`), and `stop_cut(tokenizer, ids, stops)` says where:
the kept text, the stop found, and how many tokens make up the kept text and were decoded up to the stop.

Log-probabilities are unaffected: `core.runtime.hf.sample` reports them from the raw logits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

_CACHE: OrderedDict[tuple[int, str], Any] = OrderedDict()
_COMPILERS: dict[int, Any] = {}
_LOCK = threading.Lock()
_CACHE_SIZE = 64


def _compiler(loaded: Any):
    import xgrammar as xgr

    tok = loaded.tokenizer
    key = id(tok)
    comp = _COMPILERS.get(key)
    if comp is None:
        vocab = getattr(getattr(loaded.model, "config", None), "vocab_size", None) or len(tok)
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=max(int(vocab), len(tok)),
                                                  stop_token_ids=loaded.eos_token_ids() or None)
        comp = xgr.GrammarCompiler(info, max_threads=1)
        _COMPILERS[key] = comp
    return comp


def compiled_grammar(loaded: Any, grammar: str):
    """The xgrammar CompiledGrammar of an EBNF `grammar` for this model's tokenizer (cached)."""
    import xgrammar as xgr

    key = (id(loaded.tokenizer), grammar)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
        compiled = _compiler(loaded).compile_grammar(xgr.Grammar.from_ebnf(grammar))
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return compiled


def grammar_processor(loaded: Any, grammar: str):
    """A fresh logits processor enforcing `grammar` on every row of one `generate` call."""
    from xgrammar.contrib.hf import LogitsProcessor

    return LogitsProcessor(compiled_grammar(loaded, grammar))


def sql_finished(text: str) -> bool:
    """Whether a completion already holds a whole answer: a closed ``` block, or a `;` after SELECT/WITH."""
    first = text.find("```")
    if first >= 0 and text.find("```", first + 3) >= 0:
        return True
    up = text.upper()
    start = max(up.find("SELECT"), -1)
    if start >= 0:
        rest = text[start:]
        return _semicolon_outside_quotes(rest)
    return False


def _semicolon_outside_quotes(s: str) -> bool:
    quote = None
    for c in s:
        if quote:
            if c == quote:
                quote = None
        elif c in ("'", '"', "`"):
            quote = c
        elif c == ";":
            return True
    return False


def sql_end_stopping(tokenizer: Any, prompt_len: int):
    """A transformers StoppingCriteria: per row, stop once `sql_finished` holds for the generated text."""
    import torch
    from transformers import StoppingCriteria

    class SqlEndStopping(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # transformers' signature
            done = [sql_finished(tokenizer.decode(row[prompt_len:], skip_special_tokens=True))
                    for row in input_ids.tolist()]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return SqlEndStopping()


LOOP_MAX_PERIOD = 16  # token patterns up to this long are checked for repetition
LOOP_REPEATS = 4  # a pattern of 2+ tokens repeated this many times in a row at the end of a row is a loop
LOOP_REPEATS_ONE = 8  # ... and a single token repeated this many times


def looping(ids: list[int], *, max_period: int = LOOP_MAX_PERIOD, repeats: int = LOOP_REPEATS,
            repeats_one: int = LOOP_REPEATS_ONE) -> bool:
    """Do the last tokens of `ids` repeat one pattern of 1..max_period tokens `repeats` times in a row (a single
    token `repeats_one` times)? A small model that falls into such a loop ("Dog_ID, Dog_ID, Dog_ID, ...") never
    finishes its query; in SQL, a clause repeated verbatim four times in a row does not occur."""
    n = len(ids)
    for p in range(1, max_period + 1):
        k = repeats_one if p == 1 else repeats
        span = p * k
        if n < span:
            break
        tail = ids[n - span:]
        if all(tail[j] == tail[j + p] for j in range(span - p)):
            return True
    return False


def loop_stopping(prompt_len: int, eos_ids: list[int] | tuple[int, ...] = (), pad_id: int | None = None):
    """A transformers StoppingCriteria: the batch stops once every row is finished (it holds an EOS, or ends in the
    padding of a finished row) or ends in a loop (`looping`), at least one of them a loop; the rows that looped are
    in `.looped` (batch row indices). A loop stops the batch only when nothing else is still being written, so a
    grammar's logits processor never sees a row stopped while others run (xgrammar would refuse its padding), and
    the common case -- one looping sample holding three finished ones back until max_tokens -- ends at once."""
    import torch
    from transformers import StoppingCriteria

    eos = set(eos_ids)

    class LoopStopping(StoppingCriteria):
        def __init__(self):
            self.looped: set[int] = set()

        def __call__(self, input_ids, scores, **kwargs):  # transformers' signature
            loops, busy = set(), False
            for r, row in enumerate(input_ids.tolist()):
                gen = row[prompt_len:]
                if any(t in eos for t in gen) or (gen and pad_id is not None and gen[-1] == pad_id):
                    continue
                if looping(gen):
                    loops.add(r)
                else:
                    busy = True
            stop = bool(loops) and not busy
            if stop:
                self.looped |= loops
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return LoopStopping()


def deadline_stopping(deadline: float | None = None, budget_s: float | None = None):
    """A transformers StoppingCriteria: every row stops once `time.monotonic()` reaches `deadline` (an instant), or
    `budget_s` seconds after the criterion is first called (the first decoded token: the prompt's prefill and a
    grammar's compilation do not count), whichever comes first; `.fired` says whether it did."""
    import time

    import torch
    from transformers import StoppingCriteria

    class DeadlineStopping(StoppingCriteria):
        def __init__(self):
            self.fired = False
            self.until: float | None = None

        def __call__(self, input_ids, scores, **kwargs):  # transformers' signature
            now = time.monotonic()
            if self.until is None:
                ends = [t for t in (deadline, None if budget_s is None else now + budget_s) if t is not None]
                self.until = min(ends) if ends else float("inf")
            if now >= self.until:
                self.fired = True
            return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)

    return DeadlineStopping()


def stop_strings_stopping(tokenizer: Any, prompt_len: int, stops: list[str] | tuple[str, ...]):
    """A transformers StoppingCriteria: per row, stop once the generated text (special tokens skipped) holds one of
    `stops`: the token that completes a stop string is the row's last."""
    import torch
    from transformers import StoppingCriteria

    stops = [x for x in stops if x]

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # transformers' signature
            done = []
            for row in input_ids.tolist():
                text = tokenizer.decode(row[prompt_len:], skip_special_tokens=True)
                done.append(any(x in text for x in stops))
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopStrings()


@dataclass
class StopCut:
    """Where a generated row stops on a stop string (`stop_cut`)."""

    text: str  # the generated text before the first stop string (all of it when none)
    stop: str | None  # the stop string found, None when none
    spans: list[tuple[int, int]]  # the character span of each kept token in `text` (`core.runtime.hf.token_spans`)
    n_kept: int  # tokens that make up `text`: those starting before the stop (all when none)
    n_decoded: int  # tokens decoded up to and including the one that completed the stop (all when none)


def stop_cut(tokenizer: Any, ids: list[int], stops: list[str] | tuple[str, ...] | None) -> StopCut:
    """Cut generated `ids` at the first of `stops` in their text (special tokens skipped). Tokens a row holds past
    the completing one (padding of a batched decode whose other rows went on) are not counted."""
    from core.runtime.hf import token_spans

    text, spans = token_spans(tokenizer, ids, skip_special_tokens=True)
    hits = [(text.find(x), x) for x in (stops or []) if x and x in text]
    if not hits:
        return StopCut(text, None, spans, len(ids), len(ids))
    cut, stop = min(hits)
    end = cut + len(stop)
    n_kept = next((i for i, (a, _) in enumerate(spans) if a >= cut), len(spans))
    n_decoded = next((i + 1 for i, (_, b) in enumerate(spans) if b >= end), len(spans))
    return StopCut(text[:cut], stop, spans[:n_kept], n_kept, n_decoded)
