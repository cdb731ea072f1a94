"""The discriminator's final answer: where it may stand, what counts as one, and the verdict-forcing prefix.

A verdict is a JSON object whose only key is exactly `correct` and whose value is a JSON boolean:
`{"correct": true}` / `{"correct": false}` (`{"incorrect": true}`, prose such as `correct: true`, or
`{"correct": "yes"}` are not verdicts). It counts only in the final answer:

- when the model reasons inside `<think>` ... `</think>` (the prompt or the output opened `<think>`), the
  answer is the text after the last `</think>`; reasoning that never closed has no answer;
- otherwise the answer is the whole output, but when the output was cut by the budget (no end of turn) the
  verdict must end the text: a verdict followed by more text is a restatement inside unfinished reasoning
  (e.g. the prompt's own `{"correct": true}` / `{"correct": false}` examples), not an answer.

The last verdict of the answer is the one scored. `first_complete_verdict` is the early-stop rule of the
decoding engine: the first verdict object that is complete inside the answer region.
`forcing_text` is what verdict forcing appends when the budget ran out without a verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
VERDICT_PREFIX = '{"correct":'
_OBJ = re.compile(r"\{[^{}]*\}")
_VALUE = re.compile(r'"correct"\s*:\s*(true|false)')
_TRAILER = " \t\r\n`.;,"  # what may follow a verdict that ends a truncated output


@dataclass(frozen=True)
class Verdict:
    value: bool
    start: int  # character offset of the true/false literal in the text
    end: int  # character offset just past the verdict object
    begin: int = 0  # character offset of the verdict object's `{`


def uses_thinking(text: str, prompt_tail: str = "") -> bool:
    """The model reasons in a `<think>` block: the prompt left one open, or the output opened one."""
    tail = prompt_tail.lower()
    opened_in_prompt = tail.rfind(THINK_OPEN) > tail.rfind(THINK_CLOSE)
    return opened_in_prompt or THINK_OPEN in text.lower() or THINK_CLOSE in text.lower()


def answer_start(text: str, thinking: bool) -> int | None:
    """Offset where the final answer may begin (None: the reasoning never ended)."""
    if not thinking:
        return 0
    i = text.lower().rfind(THINK_CLOSE)
    return None if i < 0 else i + len(THINK_CLOSE)


def _verdicts(text: str, start: int):
    for m in _OBJ.finditer(text, start):
        try:
            obj = json.loads(m.group())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and list(obj) == ["correct"] and isinstance(obj["correct"], bool):
            v = _VALUE.search(m.group())
            if v is None:  # pragma: no cover - json.loads accepted it, so the literal is there
                continue
            yield Verdict(obj["correct"], m.start() + v.start(1), m.end(), m.start())


def find_verdict(text: str, *, thinking: bool = False, finished: bool = True) -> Verdict | None:
    """The final answer's verdict (see the module docstring), or None. `finished`: the output ended with an
    end-of-turn token (False: the budget ran out). An output that uses `<think>` tags is always read as reasoning."""
    thinking = thinking or uses_thinking(text)
    start = answer_start(text, thinking)
    if start is None:
        return None
    last = None
    for v in _verdicts(text, start):
        last = v
    if last is None:
        return None
    if not finished and not thinking and text[last.end:].strip(_TRAILER):
        return None
    return last


_LINE_LEAD = " \t`>*-"  # what may stand before an answer on its own line (indent, a code fence, a bullet)


def first_complete_verdict(text: str, *, thinking: bool = False) -> Verdict | None:
    """The first complete verdict inside the answer region: the engine stops the row there. After `</think>`
    any verdict is the answer. Without think tags the answer must stand on its own line (only indentation, a
    code fence or a bullet before it): a verdict quoted mid-sentence (`I must answer {"correct": true} if ...`)
    is a restatement inside the reasoning, so the row goes on (and, if no answer follows, is forced)."""
    thinking = thinking or uses_thinking(text)
    start = answer_start(text, thinking)
    if start is None:
        return None
    for v in _verdicts(text, start):
        if thinking or not text[text.rfind("\n", 0, v.begin) + 1:v.begin].strip(_LINE_LEAD):
            return v
    return None


def forcing_text(text: str, thinking: bool) -> str:
    """What verdict forcing appends to an output without a verdict: close the reasoning when it is open,
    then the verdict prefix; the next token's probabilities give the verdict."""
    close = thinking and answer_start(text, thinking) is None
    return ("\n" + THINK_CLOSE + "\n\n" if close else "\n") + VERDICT_PREFIX
