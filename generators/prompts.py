"""The text-to-SQL generation prompt (version `PROMPT_VERSION`), shared by every generator backend, and its step
mode (version `STEP_PROMPT_VERSION`: the query written as a chain of CTE steps, issue 28).

`build_messages(request)` returns chat messages (system + optional few-shot turns + the question);
`build_step_messages(request, prefix)` the step-mode messages, ending with the assistant's answer so far (`prefix`)
for the model to continue;
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
    return _messages(request, SYSTEM, _user)


def _fenced(sql: str) -> str:
    return f"```sql\n{sql.strip()}\n```"


def _messages(request: GenerationRequest, system: str, user, answer=_fenced) -> list[dict[str, str]]:
    """System (the schema once), the few-shot exchanges (SQL in a ```sql block: `answer(example)`), then the
    question: the layout every prompt shares; `user(question, evidence, dialect)` words a question."""
    if not request.question or not request.question.strip():
        raise ValueError("generation request has an empty question")
    msgs = [{"role": "system", "content": system.format(dialect=_dialect(request.dialect),
                                                        schema=request.schema.strip())}]
    for q, sql in request.few_shot:
        msgs.append({"role": "user", "content": user(q, None, request.dialect)})
        msgs.append({"role": "assistant", "content": answer(sql)})
    msgs.append({"role": "user", "content": user(request.question, request.evidence, request.dialect)})
    return msgs


STEP_PROMPT_VERSION = "steps-v1"

STEP_SYSTEM = (
    "You are an expert data analyst who writes {dialect} SQL. Answer with exactly one SQL query that "
    "answers the question over the given database schema, inside a ```sql code block, and nothing else."
    " Write the query as a chain of steps: each step is one common table expression (CTE) that computes one "
    "intermediate result, and the last step is the final SELECT, which reads from the steps before it. Open every "
    "step with a one-line comment `-- <what this step computes>` and write the step on the next line. The first CTE "
    "starts with WITH; a CTE followed by another CTE ends with a comma. A question that needs a single step is "
    "answered by `-- the answer` and the SELECT. The shape of an answer:"
    "\n\n```sql\n-- orders placed in 2023\nWITH s1 AS (SELECT * FROM orders WHERE year = 2023),"
    "\n-- how many there are\ns2 AS (SELECT count(*) AS n FROM s1)\n-- the answer\nSELECT n FROM s2\n```"
    "\n\nDatabase schema:\n{schema}"
)

STEP_USER = """{evidence_line}Question: {question}
Write one {dialect} SQL query that answers the question, as a chain of commented steps."""


def _step_user(question: str, evidence: str | None, dialect: str) -> str:
    ev = f"Hint: {evidence.strip()}\n" if evidence and evidence.strip() else ""
    return STEP_USER.format(evidence_line=ev, question=question.strip(), dialect=_dialect(dialect))


PROSE_STEP_PROMPT_VERSION = "prose-steps-v1"

PROSE_STEP_SYSTEM = (
    "You are an expert data analyst who writes {dialect} SQL. Think step by step before you answer: write your "
    "reasoning as short paragraphs separated by blank lines, one step per paragraph (which tables and columns the "
    "question needs, how they join, the filters and their values, the grouping, ordering or aggregation). Then write "
    "exactly one SQL query that answers the question over the given database schema, inside a ```sql code block, "
    "and nothing after it.\n\nDatabase schema:\n{schema}"
)

PROSE_STEP_USER = """{evidence_line}Question: {question}
Reason step by step in short paragraphs, then write one {dialect} SQL query that answers the question."""


def _prose_user(question: str, evidence: str | None, dialect: str) -> str:
    ev = f"Hint: {evidence.strip()}\n" if evidence and evidence.strip() else ""
    return PROSE_STEP_USER.format(evidence_line=ev, question=question.strip(), dialect=_dialect(dialect))


def _as_given(answer: str) -> str:
    return answer.strip()


def build_step_messages(request: GenerationRequest, prefix: str | None = None,
                        kind: str = "cte") -> list[dict[str, str]]:
    """The step-mode prompt of step kind `kind` (`sqlbox.steps.STEP_KINDS`): the system instruction (the CTE step
    format, or prose reasoning then a ```sql block; the schema), the few-shot exchanges, then the question. "cte":
    the examples' SQL used as given, in a ```sql block (pass chain-formatted SQL, e.g. `sqlbox.steps` rewrites, to
    show step chains); "prose": each example is a whole answer (reasoning paragraphs and the block,
    `planner.stepwise.prose_examples`). With `prefix` (the answer so far, e.g. "```sql\n-- ", or the prose steps so
    far), a final assistant message holds it, to be continued (`core.runtime.chat.render_continuation`), not
    answered. An empty `prefix` (a prose answer's first step) adds no message: the model starts its answer."""
    if kind == "prose":
        msgs = _messages(request, PROSE_STEP_SYSTEM, _prose_user, answer=_as_given)
    elif kind == "cte":
        msgs = _messages(request, STEP_SYSTEM, _step_user)
    else:
        raise ValueError(f"unknown step kind {kind!r} (cte | prose)")
    if prefix:
        msgs.append({"role": "assistant", "content": prefix})
    return msgs
