"""The text-to-SQL generation prompt (version `gen-v1`), shared by every generator backend.

`build_messages(request)` returns chat messages (system + optional few-shot turns + the question);
`core.runtime.chat.render_prompt(tokenizer, messages)` applies the tokenizer's chat template when it has one and
falls back to a plain "Instruction/Response" layout otherwise. The same text is shown in docs/prompts.md.
"""

from __future__ import annotations

from generators.base import GenerationRequest

PROMPT_VERSION = "gen-v2"

SYSTEM = (
    "You are an expert data analyst who writes {dialect} SQL. Answer with exactly one SQL query that "
    "answers the question over the given database schema, inside a ```sql code block, and nothing else."
    "\n\nDatabase schema:\n{schema}"
)

USER = """{evidence_line}Question: {question}
Write one {dialect} SQL query that answers the question."""


def _user(question: str, evidence: str | None, dialect: str) -> str:
    ev = f"Hint: {evidence.strip()}\n" if evidence and evidence.strip() else ""
    return USER.format(evidence_line=ev, question=question.strip(), dialect=_dialect(dialect))


def _dialect(d: str) -> str:
    return {"sqlite": "SQLite", "duckdb": "DuckDB", "postgres": "PostgreSQL", "postgresql": "PostgreSQL",
            "mysql": "MySQL"}.get(d.lower(), d)


def build_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """System instruction with the schema (once), few-shot (question, sql) exchanges, then the question.
    Examples are question/SQL pairs only (DAIL-SQL's organisation): they may come from other databases
    (`planner.fewshot`), and the schema is not repeated for each, which keeps the prompt short."""
    if not request.question or not request.question.strip():
        raise ValueError("generation request has an empty question")
    msgs = [{"role": "system", "content": SYSTEM.format(dialect=_dialect(request.dialect),
                                                        schema=request.schema.strip())}]
    for q, sql in request.few_shot:
        msgs.append({"role": "user", "content": _user(q, None, request.dialect)})
        msgs.append({"role": "assistant", "content": f"```sql\n{sql.strip()}\n```"})
    msgs.append({"role": "user", "content": _user(request.question, request.evidence, request.dialect)})
    return msgs
