"""Prompt framing shared by every model role: a tokenizer's chat template when it has one, else a plain
"### Instruction / ### Response" layout for base models.

`render_continuation` frames a conversation whose final (assistant) message is to be continued, not answered:
the prompt ends with that message's content exactly, byte for byte (the step hand-off of issue 28)."""

from __future__ import annotations

from typing import Any


def render_plain(messages: list[dict[str, str]], *, continue_final: bool = False) -> str:
    """The fallback layout for tokenizers without a chat template (base models). `continue_final`: the final
    message is an assistant message to continue: the prompt ends with its content (no trailing separator)."""
    if continue_final:
        _check_final(messages)
        return render_plain(messages[:-1]) + messages[-1]["content"]
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


def render_continuation(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Prompt text that continues the final (assistant) message of `messages`: the chat template with
    `continue_final_message=True, add_generation_prompt=False` (vLLM's and transformers' convention), or the
    plain layout's continuation. The text always ends with the final message's content exactly: a template that
    trims a message (transformers then drops its trailing white space, e.g. the space of a forced "-- ") gets
    the trimmed characters back, so the model continues the very prefix it was given."""
    content = _check_final(messages)
    if not getattr(tokenizer, "chat_template", None):
        return render_plain(messages, continue_final=True)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                         continue_final_message=True)
    if text.endswith(content):
        return text
    stripped = content.rstrip()
    if stripped and text.endswith(stripped):
        return text + content[len(stripped):]
    raise ValueError("the chat template does not end the prompt with the final message's content; "
                     "it cannot be continued")


def _check_final(messages: list[dict[str, str]]) -> str:
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("continuing a message needs a final assistant message")
    return messages[-1]["content"]
