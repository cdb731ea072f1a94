"""Prompt framing shared by every model role: a tokenizer's chat template when it has one, else a plain
"### Instruction / ### Response" layout for base models."""

from __future__ import annotations

from typing import Any


def render_plain(messages: list[dict[str, str]]) -> str:
    """The fallback layout for tokenizers without a chat template (base models)."""
    parts = []
    for m in messages:
        label = {"system": "", "user": "### Instruction:\n", "assistant": "### Response:\n"}[m["role"]]
        parts.append(f"{label}{m['content']}\n\n")
    return "".join(parts) + "### Response:\n"


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Prompt text for `messages`: the chat template (with the generation prompt) or the plain layout.
    Tokenize the result with `add_special_tokens=False` when a chat template was applied (it has them)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return render_plain(messages)
