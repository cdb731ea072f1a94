"""Versioned discriminator prompt templates: the one place prompts live.

Templates are the files `discriminators/prompts/<id>.txt` (`cot-v1`, `cot-paper`, `logit-v1`, and the step
prompts `step-cot-v1`, `step-logit-v1` of the process reward and their prose-step forms `step-prose-*-v1`, ...), with the
placeholders `{question}` and `{sql}` (required), `{schema}` and `{evidence}` (a "Hint: ..." line or nothing;
optional: the paper's prompt has no schema). A template is the user message (framing "chat") or the whole
prompt text (framing "raw", the paper's); `render_parts` applies the model's chat template (with the generation
prompt) and splits the result at the SQL, so the part before it -- instructions, schema, question --
is shared by all candidates of a question (its KV cache is computed once) and only
`sql + suffix` differs per candidate. `planner.prompt_docs.render_docs()` writes docs/prompts.md from these files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

DEFAULT_PROMPTS = {"cot": "cot-v1", "logit": "logit-v1"}
# the per-step process reward's prompts (`discriminators.step`): is the query SO FAR (a partial CTE chain) a correct start
STEP_PROMPTS = {"cot": "step-cot-v1", "logit": "step-logit-v1"}
# ... and for a prose step (reasoning paragraphs, then the SQL: `sqlbox.steps.STEP_KINDS["prose"]`): is the reasoning
# SO FAR correct
PROSE_STEP_PROMPTS = {"cot": "step-prose-cot-v1", "logit": "step-prose-logit-v1"}
STEP_PROMPTS_BY_KIND = {"cte": STEP_PROMPTS, "prose": PROSE_STEP_PROMPTS}
_PLACEHOLDER = re.compile(r"\{(schema|question|evidence|sql)\}")
_SQL_SENTINEL = "\u2063SQLARBITER_SQL\u2063"  # invisible separator: survives chat templates untouched


class PromptError(ValueError):
    """Unknown prompt id or malformed template."""


@dataclass(frozen=True)
class PromptTemplate:
    id: str  # e.g. "cot-v1": mode, then version
    text: str

    @property
    def mode(self) -> str:
        return self.id.rsplit("-", 1)[0]

    def fill(self, *, question: str, schema: str, sql: str, evidence: str | None = None) -> str:
        """The user message for one candidate (single-pass substitution: values are never re-scanned)."""
        ev = f"Hint: {evidence.strip()}\n" if evidence and evidence.strip() else ""
        values = {"schema": schema.strip(), "question": question.strip(), "evidence": ev, "sql": sql.strip()}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)


def list_prompts() -> list[str]:
    """Ids of the shipped templates."""
    return sorted(p.name[:-4] for p in resources.files("discriminators").joinpath("prompts").iterdir()
                  if p.name.endswith(".txt"))


@cache
def load_prompt(prompt_id: str) -> PromptTemplate:
    """The template with this id (e.g. "cot-v1"). Raises PromptError listing the choices."""
    f = resources.files("discriminators").joinpath("prompts", f"{prompt_id}.txt")
    if not re.fullmatch(r"[a-z0-9_-]+", prompt_id or "") or not f.is_file():
        raise PromptError(f"unknown discriminator prompt {prompt_id!r}; choose one of: {', '.join(list_prompts())}")
    text = f.read_text(encoding="utf-8").rstrip("\n")
    missing = {"question", "sql"} - set(_PLACEHOLDER.findall(text))
    if missing or text.count("{sql}") != 1:
        raise PromptError(f"prompt {prompt_id!r} must contain {{question}} and exactly one {{sql}} "
                          "({schema} and {evidence} are optional)")
    return PromptTemplate(prompt_id, text)


def render_plain(user: str) -> str:
    """Layout for tokenizers without a chat template."""
    return f"### Instruction:\n{user}\n\n### Response:\n"


FRAMINGS = ("chat", "raw")


def render_prompt(tokenizer: Any, user: str, framing: str = "chat") -> tuple[str, bool]:
    """(full prompt text, templated) for one filled template: "chat" applies the model's chat template (with
    the generation prompt; "### Instruction:" framing without one), "raw" is the text itself (the paper's
    framing). Both discriminator backends frame prompts through this function."""
    if framing not in FRAMINGS:
        raise PromptError(f"unknown prompt framing {framing!r}; choose one of: {', '.join(FRAMINGS)}")
    if framing == "raw":
        return user, False
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True), True
    return render_plain(user), False


def render_parts(tokenizer: Any, template: PromptTemplate, *, question: str, schema: str,
                 evidence: str | None = None, framing: str = "chat") -> tuple[str, str, bool]:
    """(prefix, suffix, templated): the full prompt for a candidate is prefix + sql + suffix.
    `templated` says a chat template was applied (tokenize without adding special tokens)."""
    user = template.fill(question=question, schema=schema, sql=_SQL_SENTINEL, evidence=evidence)
    full, templated = render_prompt(tokenizer, user, framing)
    if full.count(_SQL_SENTINEL) != 1:
        raise PromptError("the chat template altered the prompt; cannot locate the SQL slot")
    prefix, suffix = full.split(_SQL_SENTINEL)
    return prefix, suffix, templated
