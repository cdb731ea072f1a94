"""Route-and-Reason's task decomposer for SQL (issue 29, Build 1): a question split into ordered sub-questions, each a
CTE step of one query (the step format: `sqlbox.steps`), then the chain composed step by step.

The decomposer is ONE model call (a pair's generator backend, `decompose`). It writes a short numbered list, one line
per step, in the format `DECOMPOSE_PROMPT_VERSION`:

    1. Status of city where Population > 1500 [tables: city] [needs: -]
    2. Status of city where Population < 500 [tables: city] [needs: -]
    3. s1 INTERSECT s2 [tables: -] [needs: 1, 2]

`<n>. <sub-question> [tables: <schema tables it reads, or ->] [needs: <earlier steps it reads, or ->]`; step k is
referred to as `sk` in the text (the canonical step names of `sqlbox.steps.to_chain`); the last step gives the answer.
An easy question is one line. Why this format: it is line-oriented (a 135M model keeps a line's shape far better
than nested JSON, and a line cut short is visible), every part is closed by a bracket, so a parser can check it
strictly (`parse_decomposition`), and a constrained backend can be held to it by a grammar
(`decomposition_grammar`: the numbering, the table names of the schema, and `needs` that name earlier steps only).
A list is refused (`DecompositionError`, with `kind` and a `reason`) when it is empty, longer than `max_steps`, a
line is not of the form, a sub-question is longer than `TEXT_MAX` characters, the numbering skips, a step needs a
step that does not exist or is not earlier, a step names a table the schema does not have (case-insensitive), a step
reads nothing (no table, no step), or a step before the last is read by no later step. The caller then takes the whole-question path and says why.

Few-shot examples (`decomposition_examples`): the retrieved Spider train examples (`planner.fewshot.retrieve`, as
the planner's `few_shot`), their gold SQL rewritten as a chain by `sqlbox.steps.to_chain`: one subtask per step, the
step's generated comment as the sub-question, the schema tables its SQL reads, and the earlier steps it reads.

Composing (`compose`): step k's prefix is `prefix_for(steps 1..k-1)` followed by the sub-question as the step's
comment ("-- <sub-question>\\n"); the step's tier (`planner.stepwise.Tier`; one per subtask, chosen by an allocator)
writes only the step's body, which stops at the step boundary. A constrained tier writes under the body grammar of
that step (`body_grammar`: a CTE opened by WITH for the first of several, a comma when another CTE follows, the
final SELECT last). The finished chain is one ordinary candidate (normalize, guard, execute, discriminate, select).
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from generators.base import StepResult, cut_at_step_boundary
from planner.stepwise import StepMemo, Tier, TierUsage, continue_tier
from sqlbox.steps import StepChain, StepParseError, parse_chain, prefix_for, step_state, to_chain

DECOMPOSE_PROMPT_VERSION = "decompose-v1"
MAX_STEPS = 6
DECOMPOSE_TOKENS = 256  # decoded tokens for the whole list (6 lines of SQL-like sub-questions fit)
LIST_OPENER = "1."  # forced: the answer starts with the list (no space after it: see generators.base.StepRequest)
LIST_STOPS = ("\n\n", "```")  # the list ends at a blank line, a code fence, or EOS
TEXT_MAX = 120  # characters of a sub-question (a step comment: `sqlbox.steps.COMMENT_MAX` is 100); the grammar
# lets a constrained model write one more, so a sub-question that runs on is cut there and refused, not kept

DECOMPOSE_SYSTEM = (
    "You split a question about a database into the steps of one {dialect} query. Each step computes one intermediate "
    "result, and the last step gives the answer. Write one line per step:\n"
    "<n>. <what the step computes> [tables: <the tables it reads, or ->] [needs: <the earlier steps it reads, "
    "or ->]\n"
    "A step reads only tables of the schema and earlier steps; step k is called sk. Most questions need one step. "
    "Write the list and nothing else.\n\nDatabase schema:\n{schema}"
)
DECOMPOSE_USER = "{evidence_line}Question: {question}\nSplit the question into steps."

_LINE = re.compile(r"^(\d+)\.\s*(.*?)\s*\[tables:\s*([^\]]*?)\s*\]\s*\[needs:\s*([^\]]*?)\s*\]\s*$", re.IGNORECASE)
_NONE = {"", "-", "none"}


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Subtask:
    """One step of a decomposition. `index` is the step's number as written (1-based); `needs` the numbers of the
    earlier steps it reads; `tables` the schema tables it names (spelled as the schema spells them)."""

    index: int
    text: str
    needs: tuple[int, ...] = ()
    tables: tuple[str, ...] = ()

    def line(self) -> str:
        tables = ", ".join(self.tables) or "-"
        needs = ", ".join(map(str, self.needs)) or "-"
        return f"{self.index}. {self.text} [tables: {tables}] [needs: {needs}]"


@dataclass
class Decomposition:
    """A validated decomposition. `confidence`: the decomposer's own, exp(mean token logprob) of the list it wrote
    (the forced "1." excluded; None when the backend gave no logprobs, or for a list that was not generated)."""

    subtasks: list[Subtask]
    confidence: float | None = None
    raw: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    constrained: bool = False
    elapsed_ms: float = 0.0

    @property
    def text(self) -> str:
        return format_decomposition(self.subtasks)

    def __len__(self) -> int:
        return len(self.subtasks)

    def record(self) -> dict[str, Any]:
        """What the Plan records (`route.details["r2"]["decomposition"]`)."""
        return {"subtasks": [{"index": s.index, "text": s.text, "needs": list(s.needs), "tables": list(s.tables)}
                             for s in self.subtasks],
                "confidence": None if self.confidence is None else round(self.confidence, 6), "raw": self.raw,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "model": self.model,
                "constrained": self.constrained, "prompt_version": DECOMPOSE_PROMPT_VERSION,
                "elapsed_ms": round(self.elapsed_ms, 3)}


class DecompositionError(ValueError):
    """The decomposer's list is refused. `kind` names the rule (for counting: empty, format, too_long, numbering,
    too_many, needs_missing, needs_later, unknown_table, reads_nothing, unused, length), `reason` says what was wrong; a
    refusal from `decompose` also carries the raw text and the tokens it cost."""

    def __init__(self, kind: str, reason: str, *, raw: str = "", prompt_tokens: int = 0, completion_tokens: int = 0,
                 confidence: float | None = None):
        super().__init__(reason)
        self.kind, self.reason, self.raw = kind, reason, raw
        self.prompt_tokens, self.completion_tokens, self.confidence = prompt_tokens, completion_tokens, confidence


def format_decomposition(subtasks: Sequence[Subtask]) -> str:
    return "\n".join(s.line() for s in subtasks)


# ---------------------------------------------------------------------------------------------- parse
def _schema_tables(schema: Any) -> dict[str, str]:
    """lower-cased name -> name as the schema spells it (a `sqlbox.schema.Schema`, a mapping table -> columns, or
    an iterable of names)."""
    if schema is None:
        return {}
    if hasattr(schema, "tables"):
        names = [t.name for t in schema.tables]
    else:
        names = list(schema)
    return {n.lower(): n for n in names}


def _listing(names: Any, cap: int = 20) -> str:
    names = sorted(names)
    return ", ".join(names[:cap]) + (f", ... ({len(names)} in all)" if len(names) > cap else "")


def _numbers(field_text: str, k: int) -> tuple[int, ...]:
    if field_text.strip().lower() in _NONE:
        return ()
    out = []
    for part in field_text.split(","):
        p = part.strip()
        if not p.isdigit():
            raise DecompositionError("format", f"step {k}: needs must be step numbers or '-', not {field_text!r}")
        out.append(int(p))
    return tuple(dict.fromkeys(out))


def parse_decomposition(text: str, schema: Any, max_steps: int = MAX_STEPS) -> Decomposition:
    """Read and check a decomposer's list (format: module docstring). `schema` (a `sqlbox.schema.Schema`, a mapping
    table -> columns or a list of table names; None: table names are not checked) gives the tables a step may
    name. Raises `DecompositionError` with the first rule broken."""
    lines = [ln.strip() for ln in (text or "").strip().split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DecompositionError("empty", "the decomposition is empty: no step")
    if len(lines) > max_steps:
        raise DecompositionError("too_many", f"the decomposition has {len(lines)} steps, more than max_steps "
                                             f"({max_steps})")
    known = _schema_tables(schema)
    subtasks: list[Subtask] = []
    for k, line in enumerate(lines, 1):
        m = _LINE.match(line)
        if m is None:
            raise DecompositionError("format", f"step {k} is not '<n>. <sub-question> [tables: ...] [needs: ...]': "
                                               f"{line[:120]!r}")
        number, body, tables_text, needs_text = int(m.group(1)), m.group(2).strip(), m.group(3), m.group(4)
        if number != k:
            raise DecompositionError("numbering", f"line {k} is numbered {number} (steps are numbered 1, 2, ...)")
        if not body:
            raise DecompositionError("format", f"step {k} has no sub-question")
        if len(body) > TEXT_MAX:
            raise DecompositionError("too_long", f"step {k}'s sub-question is longer than {TEXT_MAX} characters "
                                                 "(a model that repeats itself)")
        if "`" in body:
            raise DecompositionError("format", f"step {k}'s sub-question holds a backtick (it becomes a SQL comment)")
        needs = _numbers(needs_text, k)
        tables: list[str] = []
        if tables_text.strip().lower() not in _NONE:
            for name in (t.strip().strip('"`[]') for t in tables_text.split(",")):
                if not name:
                    raise DecompositionError("format", f"step {k}: an empty table name in {tables_text!r}")
                if known and name.lower() not in known:
                    raise DecompositionError(
                        "unknown_table", f"step {k} names table {name!r}, which the schema does not have "
                                         f"(tables: {_listing(known.values())})")
                spelled = known.get(name.lower(), name)
                if spelled not in tables:
                    tables.append(spelled)
        subtasks.append(Subtask(k, body, needs, tuple(tables)))
    n = len(subtasks)
    for s in subtasks:
        for j in s.needs:
            if j < 1 or j > n:
                raise DecompositionError("needs_missing", f"step {s.index} needs step {j}, which does not exist "
                                                          f"(the list has {n} step{'s' if n > 1 else ''})")
            if j >= s.index:
                what = "itself" if j == s.index else "a later step"
                raise DecompositionError("needs_later", f"step {s.index} needs step {j}, {what}: a step may read "
                                                        "only earlier steps")
        if not s.needs and not s.tables:
            raise DecompositionError("reads_nothing", f"step {s.index} reads nothing (no table, no earlier step)")
    used = {j for s in subtasks for j in s.needs}
    for s in subtasks[:-1]:
        if s.index not in used:
            raise DecompositionError("unused", f"step {s.index} is read by no later step (only the last step gives "
                                               "the answer)")
    return Decomposition(subtasks=subtasks, raw=text)


# ---------------------------------------------------------------------------------------------- examples
def _step_tables(sql: str, dialect: str, step_names: set[str]) -> tuple[str, ...]:
    """The tables a step's SQL reads, in order of first appearance, less the chain's step names and the CTEs it
    defines inside itself."""
    from sqlglot import exp

    from sqlbox.guard import Rejected, parse_statements

    try:
        stmts = parse_statements(sql, dialect)
    except (Rejected, ValueError):
        return ()
    out: dict[str, str] = {}
    for root in stmts:
        if root is None:
            continue
        inner = {c.alias_or_name.lower() for c in root.find_all(exp.CTE)}
        for t in root.find_all(exp.Table):
            low = t.name.lower()
            if t.name and low not in step_names and low not in inner:
                out.setdefault(low, t.name)
    return tuple(out.values())


def subtasks_of_chain(chain: StepChain, dialect: str = "sqlite") -> list[Subtask]:
    """A gold chain as a decomposition: one subtask per step, its comment as the sub-question, the schema tables its
    SQL reads, and the earlier steps it reads (by name)."""
    from sqlglot import exp

    from sqlbox.guard import Rejected, parse_statements

    names = {s.name.lower(): k for k, s in enumerate(chain.steps, 1) if s.name is not None}
    out = []
    for k, step in enumerate(chain.steps, 1):
        try:
            stmts = [s for s in parse_statements(step.sql, dialect) if s is not None]
        except (Rejected, ValueError):
            stmts = []
        read = {t.name.lower() for st in stmts for t in st.find_all(exp.Table)}
        needs = tuple(sorted(names[r] for r in read if r in names and names[r] < k))
        text = " ".join(step.comment.split()) or ("the answer" if step.is_final else f"step {k}")
        out.append(Subtask(k, text.replace("`", "'"), needs, _step_tables(step.sql, dialect, set(names))))
    return out


@functools.lru_cache(maxsize=4096)
def _example_text(sql: str, dialect: str, max_steps: int) -> str | None:
    try:
        chain = to_chain(sql, dialect=dialect)
    except (StepParseError, ValueError):
        return None
    if len(chain.steps) > max_steps:
        return None
    subs = subtasks_of_chain(chain, dialect)
    try:  # an example must itself be a valid list (e.g. a step whose SQL reads no table is left out)
        parse_decomposition(format_decomposition(subs), None, max_steps)
    except DecompositionError:
        return None
    return format_decomposition(subs)


def decomposition_examples(shots: Sequence[tuple[str, str]], dialect: str = "sqlite",
                           max_steps: int = MAX_STEPS) -> list[tuple[str, str]]:
    """(question, decomposition list) few-shot examples from (question, gold SQL) pairs (e.g. `planner.fewshot.
    retrieve`): the gold rewritten as a chain (`sqlbox.steps.to_chain`), one subtask per step (`subtasks_of_chain`).
    An example that does not rewrite, has more than `max_steps` steps, or is not a valid list is left out. The
    rewrite is memoised in this process (it takes milliseconds; nothing is read from disk)."""
    out = []
    for q, sql in shots:
        text = _example_text(sql, dialect, max_steps)
        if text is not None:
            out.append((q, text))
    return out


# ---------------------------------------------------------------------------------------------- the model call
def _dialect_name(d: str) -> str:
    return {"sqlite": "SQLite", "duckdb": "DuckDB", "postgres": "PostgreSQL", "postgresql": "PostgreSQL",
            "mysql": "MySQL"}.get(d.lower(), d)


def decomposer_messages(question: str, schema_prompt: str, examples: Sequence[tuple[str, str]], *,
                        dialect: str = "sqlite", evidence: str | None = None,
                        prefix: str | None = LIST_OPENER) -> list[dict[str, str]]:
    """The decomposer prompt (`DECOMPOSE_PROMPT_VERSION`): the instruction with the schema, the few-shot exchanges
    (question -> list), the question; with `prefix`, a final assistant message to continue (the forced "1.")."""
    if not question or not question.strip():
        raise ValueError("the decomposer needs a question")

    def user(q: str, ev: str | None) -> str:
        line = f"Hint: {ev.strip()}\n" if ev and ev.strip() else ""
        return DECOMPOSE_USER.format(evidence_line=line, question=q.strip())

    msgs = [{"role": "system", "content": DECOMPOSE_SYSTEM.format(dialect=_dialect_name(dialect),
                                                                schema=schema_prompt.strip())}]
    for q, listing in examples:
        msgs += [{"role": "user", "content": user(q, None)}, {"role": "assistant", "content": listing.strip()}]
    msgs.append({"role": "user", "content": user(question, evidence)})
    if prefix is not None:
        msgs.append({"role": "assistant", "content": prefix})
    return msgs


def _lit(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def decomposition_grammar(schema: Any, max_steps: int = MAX_STEPS) -> str:
    """EBNF (xgrammar) of the list after the forced "1.": up to `max_steps` numbered lines; a sub-question (one line,
    no bracket or backtick), the schema's table names (or "-"), and `needs` that name earlier steps only (or "-")."""
    tables = sorted(_schema_tables(schema).values())
    if not tables:
        raise ValueError("the decomposition grammar needs the schema's tables")
    rules = [f'text ::= [^ \\t\\r\\n`\\[\\]] [^\\r\\n`\\[\\]]{{0,{TEXT_MAX}}}', 'tables ::= "-" | table (", " table)*',
             "table ::= " + " | ".join(_lit(t) for t in tables)]
    tail = ""
    for k in range(max_steps, 0, -1):
        needs = '"-"' if k == 1 else f'"-" | num{k} (", " num{k})*'
        rules.append(f"needs{k} ::= {needs}")
        if k > 1:
            rules.append(f"num{k} ::= " + " | ".join(_lit(str(j)) for j in range(1, k)))
        rules.append(f'line{k} ::= " " text " [tables: " tables "] [needs: " needs{k} "]"')
        opener = "" if k == 1 else f'"\\n{k}." '
        tail = f"({opener}line{k}{(' ' + tail) if tail else ''})" + ("" if k == 1 else "?")
    return "\n".join([f"root ::= {tail}", *rules]) + "\n"


@dataclass
class _Completion:
    text: str  # generated text after the prefix, cut at the first stop
    boundary: str  # stop | eos | length
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[float] | None
    model: str
    constrained: bool


def _complete_local(backend: Any, messages: list[dict[str, str]], *, max_tokens: int, grammar: str | None,
                    stops: Sequence[str]) -> _Completion:
    from core.runtime.chat import render_continuation
    from core.runtime.hf import encode, sample
    from generators.constrained import grammar_processor, stop_cut, stop_strings_stopping

    lm = backend.loaded
    ids = encode(lm, render_continuation(lm.tokenizer, messages), templated=lm.has_chat_template())
    extra: dict[str, Any] = {"stopping_criteria": stop_strings_stopping(lm.tokenizer, len(ids), tuple(stops))}
    if grammar is not None:
        extra["logits_processor"] = grammar_processor(lm, grammar)
    s = sample(lm, ids, n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=0, logprobs=0, **extra)[0]
    cut = stop_cut(lm.tokenizer, s.ids, tuple(stops))
    boundary = "stop" if cut.stop else ("eos" if s.finish_reason == "stop" else "length")
    return _Completion(cut.text, boundary, len(ids), cut.n_decoded, list(s.token_logprobs[:cut.n_kept]),
                       getattr(backend, "name", "") or "", grammar is not None)


def _complete_http(backend: Any, messages: list[dict[str, str]], *, max_tokens: int, grammar: str | None,
                   stops: Sequence[str]) -> _Completion:
    from core.runtime.chat import render_plain
    from core.runtime.openai_http import choice_text
    from generators.openai import choice_token_logprobs, grammar_payload

    kw: dict[str, Any] = {"model": backend.model, "n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": max_tokens,
                          "seed": 0, "stop": list(stops)}
    if grammar is not None:
        kw.update(grammar_payload(backend.grammar_field, grammar))
    if backend.endpoint == "chat":
        kw.update(continue_final_message=True, add_generation_prompt=False, logprobs=True)
        resp = backend.client.chat(messages, **kw)
    else:
        kw["logprobs"] = 0
        resp = backend.client.completions(render_plain(messages, continue_final=True), **kw)
    choices = resp.get("choices") or []
    if not choices:
        raise RuntimeError(f"{backend.client.base}: the server returned no choices")
    c = choices[0]
    raw = choice_text(c)
    hits = [raw.find(x) for x in stops if x in raw]
    text = raw[:min(hits)] if hits else raw
    boundary = "length" if c.get("finish_reason") == "length" and not hits else "stop"
    usage = resp.get("usage") or {}
    lps = choice_token_logprobs(c)
    return _Completion(text, boundary, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                       [x for x in lps if x is not None] if lps else None, backend.name, grammar is not None)


def _complete(backend: Any, messages: list[dict[str, str]], **kw: Any) -> _Completion:
    """One greedy continuation of `messages`' final assistant message, on a local backend (`loaded`: the
    transformers/embedded generators) or an OpenAI-compatible one (`client`: the openai generator)."""
    if getattr(backend, "loaded", None) is not None:
        return _complete_local(backend, messages, **kw)
    if getattr(backend, "client", None) is not None:
        return _complete_http(backend, messages, **kw)
    raise ValueError(f"generator {getattr(backend, 'name', backend)!r} cannot run the decomposer (neither a local "
                     "checkpoint nor an OpenAI-compatible client)")


def decompose(generator_backend: Any, question: str, schema_prompt: str, schema: Any,
              examples: Sequence[tuple[str, str]], dialect: str = "sqlite", *, evidence: str | None = None,
              max_steps: int = MAX_STEPS, max_tokens: int = DECOMPOSE_TOKENS,
              constrained: bool | None = None) -> Decomposition:
    """ONE greedy model call writes the list (`decomposer_messages`, continued after the forced "1."), which is then
    checked (`parse_decomposition`). `examples`: (question, list) pairs (`decomposition_examples`). `constrained`
    (None: the backend's own `constrained` setting): decode under `decomposition_grammar(schema)`. Raises
    `DecompositionError` (with the raw text and the tokens spent) when the list is refused or ran out of tokens."""
    t0 = time.monotonic()
    use_grammar = bool(getattr(generator_backend, "constrained", False)) if constrained is None else bool(constrained)
    grammar = decomposition_grammar(schema, max_steps) if use_grammar else None
    msgs = decomposer_messages(question, schema_prompt, examples, dialect=dialect, evidence=evidence)
    c = _complete(generator_backend, msgs, max_tokens=max_tokens, grammar=grammar, stops=LIST_STOPS)
    raw = LIST_OPENER + c.text
    conf = math.exp(sum(c.logprobs) / len(c.logprobs)) if c.logprobs else None
    cost = {"raw": raw, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "confidence": conf}
    if c.boundary == "length":
        raise DecompositionError("length", f"the list ran past {max_tokens} tokens", **cost)
    try:
        d = parse_decomposition(raw, schema, max_steps)
    except DecompositionError as e:
        raise DecompositionError(e.kind, e.reason, **cost) from None
    d.confidence, d.prompt_tokens, d.completion_tokens = conf, c.prompt_tokens, c.completion_tokens
    d.model, d.constrained, d.elapsed_ms = c.model, c.constrained, (time.monotonic() - t0) * 1000.0
    return d


# ---------------------------------------------------------------------------------------------- composing
def body_grammar(schema: Any, state: Any, index: int, n: int) -> str:
    """EBNF of the BODY of step `index` (0-based) of an `n`-step decomposition, its comment being in the prefix
    already: the schema grammar of `generators.grammar.step_grammar` (earlier steps usable as tables, their columns
    as columns) with the step's shape fixed: one step: the final SELECT; the first of several: `WITH <cte>`; a CTE
    that another CTE follows ends with a comma; the last step: the final SELECT."""
    from generators.grammar import step_grammar

    if n == 1 or index == n - 1:
        expect, comma = "final", None
    else:
        expect, comma = ("first_cte" if index == 0 else "cte"), index < n - 2
    return step_grammar(schema, expect=expect, names=list(state.names), columns=dict(state.columns), comment=False,
                        comma=comma)


def _continue_body(tier: Tier, prefix: str, grammar: str | None, max_tokens: int,
                   memo: StepMemo | None) -> tuple[StepResult, bool]:
    """The tier writes the body after `prefix` (which ends with the step's comment line): the step loop's own call
    (`planner.stepwise.continue_tier`, its memo keyed by the tier, the request and the prefix)."""
    return continue_tier(tier, prefix, grammar=grammar, max_tokens=max_tokens, memo=memo)


@dataclass
class ComposedChain:
    """A decomposition written as a chain, step by step (`compose`). `fallback`: why the chain is not usable (the
    caller takes the whole-question path); `note`: e.g. the chain ended before the decomposition's last step."""

    decomposition: Decomposition
    steps: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    complete: bool = False
    fallback: str | None = None
    note: str | None = None
    usage: dict[str, TierUsage] = field(default_factory=dict)  # by pair
    elapsed_ms: float = 0.0

    @property
    def text(self) -> str | None:
        return "\n".join(self.texts) if self.complete and self.fallback is None else None

    def tokens(self, pair: str | None = None) -> int:
        """Decoded tokens of `pair` (all pairs when None)."""
        return sum(u.completion_tokens for p, u in self.usage.items() if pair is None or p == pair)

    def record(self) -> dict[str, Any]:
        return {"decomposition": self.decomposition.record(), "steps": self.steps, "complete": self.complete,
                "fallback": self.fallback, "note": self.note, "usage": {k: vars(v) for k, v in self.usage.items()},
                "elapsed_ms": round(self.elapsed_ms, 3)}


def compose(decomposition: Decomposition, tiers_by_step: Sequence[Tier], *, schema: Any = None,
            dialect: str = "sqlite", step_tokens: int = 128, memo: StepMemo | None = None) -> ComposedChain:
    """Write the chain of `decomposition`, subtask k by `tiers_by_step[k]` (module docstring). `schema` (a
    `sqlbox.schema.Schema`) gives the body grammar of a tier whose constrained decoding is on (`tier.grammar` set);
    without it such a tier writes unconstrained. Every step's tier, text, tokens and boundary are recorded; the
    chain must parse (`sqlbox.steps.parse_chain`) and end with the final SELECT, else `fallback` says why."""
    subs = decomposition.subtasks
    if len(tiers_by_step) != len(subs):
        raise ValueError(f"{len(tiers_by_step)} tiers for {len(subs)} subtasks")
    t0 = time.monotonic()
    out = ComposedChain(decomposition=decomposition)
    n = len(subs)
    for k, (sub, tier) in enumerate(zip(subs, tiers_by_step, strict=True)):
        state = step_state(out.texts, dialect)
        comment = "-- " + " ".join(sub.text.split())
        prefix = prefix_for(out.texts, opener=comment + "\n")
        grammar = body_grammar(schema, state, k, n) if tier.grammar is not None and schema is not None else None
        res, cached = _continue_body(tier, prefix, grammar, step_tokens, memo)
        body = cut_at_step_boundary(res.raw)[0].rstrip()
        text = f"{comment}\n{body}".rstrip()
        u = out.usage.setdefault(tier.pair, TierUsage())
        u.prompt_tokens += res.prompt_tokens
        u.completion_tokens += res.completion_tokens
        u.calls += 1
        out.steps.append({"index": k, "subtask": sub.index, "pair": tier.pair, "generator": tier.generator,
                          "text": text, "tokens": res.completion_tokens, "prompt_tokens": res.prompt_tokens,
                          "boundary": res.boundary, "constrained": res.constrained, "memo": cached})
        out.texts.append(text)
        if not body.strip():
            out.fallback = f"step {k + 1}: the model wrote no SQL after the comment"
            break
        if res.boundary == "length":
            out.fallback = f"step {k + 1} ran out of tokens ({step_tokens}) before its boundary"
            break
        after = step_state(out.texts, dialect)
        if after.error:
            out.fallback = f"step {k + 1}: {after.error}"
            break
        if after.complete:
            if k < n - 1:
                out.note = f"the final SELECT came at step {k + 1} of {n}"
            break
        if res.boundary == "end":
            out.fallback = f"step {k + 1} closed the answer before the final SELECT"
            break
    out.elapsed_ms = (time.monotonic() - t0) * 1000.0
    if out.fallback is None:
        try:
            out.complete = parse_chain("\n".join(out.texts), dialect=dialect).complete
            if not out.complete:
                out.fallback = f"no final SELECT after {len(out.texts)} step(s)"
        except StepParseError as e:
            out.fallback = f"the composed chain does not parse: {e}"
    return out
