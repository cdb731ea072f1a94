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
