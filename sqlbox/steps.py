"""The CTE step format: a query written as a chain of steps, each a CTE opened by a one-line comment, then the
final SELECT (issue 28; the conventions are in the issue's contract):

    -- singers from France
    WITH s1 AS (SELECT * FROM singer WHERE country = 'France'),
    -- how many there are
    s2 AS (SELECT count(*) AS n FROM s1)
    -- the answer
    SELECT n FROM s2

The whole chain is one ordinary query (comments included), so it goes through normalize, guard, execute,
discriminate and select like any candidate. This module owns the text format and nothing else:

- `split_step_texts` / `parse_chain`: text -> steps, validated with sqlglot (`StepChain`, or `StepParseError`
  with the reason);
- `prefix_for` / `cut_step`: the continuation protocol (the prefix a model continues for the next step, and
  where its output stops: the next step's comment, the closing fence, or the end);
- `step_state`: what the next step must be (a CTE, the final SELECT), the step names and their columns so far;
- `partial_query`: the runnable query of steps 1..k (`SELECT * FROM <step k> LIMIT n`);
- `to_chain`: an ordinary query rewritten as a chain (uncorrelated subqueries and set-operation branches become
  earlier steps; correlated ones stay inline);
- `prose_steps` and the prose step kind: reasoning prose split at blank lines, as TRIM's code does, then the SQL in a
  ```sql block;
- `StepKind` / `step_kind`: the two kinds ("cte", "prose") behind one interface (prefix, cut, stops, complete,
  answer, what the process reward runs), which the step loop and the generators read.

Text is split by scanning lines and sqlglot's tokens; rewriting works on sqlglot's tree, never on the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp
from sqlglot.tokens import TokenType

from sqlbox.guard import Rejected, guard, parse_statements, render, tokenize

FENCE = "```"
COMMENT_MAX = 100  # generated comments are one line of at most this many characters


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


class StepParseError(ValueError):
    """The text is not a valid step chain; `reason` says why (e.g. "step 2 is neither a CTE nor the final
    SELECT")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Step:
    """One step of a chain.

    name: the CTE's name (None for the final SELECT); comment: the step's comment line without `--` ("" when
    the step has none); sql: the step's query (the CTE body inside its parentheses, or the final SELECT); text:
    the step's text as written ("-- comment\\n<body line(s)>", never ending with a newline)."""

    name: str | None
    comment: str
    sql: str
    text: str

    @property
    def is_final(self) -> bool:
        return self.name is None


@dataclass(frozen=True)
class StepChain:
    """A chain of steps: CTE steps, then (when complete) the final SELECT."""

    steps: tuple[Step, ...]

    @property
    def text(self) -> str:
        """The chain's text: the step texts joined by newlines (one ordinary SQL query when complete)."""
        return "\n".join(s.text for s in self.steps)

    @property
    def names(self) -> tuple[str, ...]:
        """The CTE steps' names, in order."""
        return tuple(s.name for s in self.steps if s.name is not None)

    @property
    def final(self) -> Step | None:
        """The final SELECT step (None when the chain is not complete)."""
        return self.steps[-1] if self.complete else None

    @property
    def complete(self) -> bool:
        """The last step is the final SELECT."""
        return bool(self.steps) and self.steps[-1].is_final

    def texts(self) -> list[str]:
        """The step texts (what `prefix_for` and `partial_query` take)."""
        return [s.text for s in self.steps]


@dataclass(frozen=True)
class StepState:
    """Where a partial chain stands.

    expect: what the next step must be: "first" (no step yet: a CTE opened by WITH, or a one-step SELECT),
    "cte" (the last step is a CTE ending with ","), "final" (the last step is a CTE without a trailing comma: the
    final SELECT follows), "any" (no constraint can be told: the chain is complete, or its text is not a chain
    prefix; then `error` says why). names: the CTE names so far; columns: each CTE's output column names
    (aliases and bare column names of its SELECT list, a CTE's own column list when it has one; `SELECT *` from an
    earlier step takes that step's columns); complete: the last step is the final SELECT."""

    expect: str
    names: tuple[str, ...] = ()
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    complete: bool = False
    error: str | None = None


# --------------------------------------------------------------------------------------------------
# Text: fences, step texts, the continuation protocol, prose
# --------------------------------------------------------------------------------------------------


def strip_fence(text: str) -> str:
    """The SQL inside a ```sql fence (text before an opening fence is dropped, and everything from the closing
    fence on); text without a fence is returned as it is."""
    s = text.strip()
    if s.startswith(FENCE):
        nl = s.find("\n")
        body = "" if nl < 0 else s[nl + 1:]
        end = body.find(FENCE)
        return body if end < 0 else body[:end]
    first = s.find(FENCE)
    if first < 0:
        return s
    second = s.find(FENCE, first + len(FENCE))
    if second < 0:  # only a closing fence
        return s[:first]
    nl = s.find("\n", first)
    return s[nl + 1:second] if 0 <= nl < second else ""


def _step_starts(lines: list[str]) -> list[bool]:
    """For each line: does it begin (after spaces) with `--` outside string literals, quoted names and block
    comments?"""
    out = []
    quote: str | None = None  # the open quote character, or "*" inside a block comment
    for line in lines:
        out.append(quote is None and line.lstrip().startswith("--"))
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            if quote == "*":
                if line.startswith("*/", i):
                    quote, i = None, i + 1
            elif quote is not None:
                if ch == quote:
                    quote = None
            elif line.startswith("--", i):
                break  # a line comment: the rest of the line is comment
            elif line.startswith("/*", i):
                quote, i = "*", i + 1
            elif ch in "'\"`":
                quote = ch
            i += 1
    return out


def split_step_texts(text: str) -> list[str]:
    """Split a chain's text into step texts: a step starts at each line that begins (after spaces) with `--`
    outside string literals; a surrounding ```sql fence is stripped. Text before the first comment line (a model
    that wrote no comment) is its own step. Each step text is stripped (it never ends with a newline); empty
    pieces are dropped."""
    lines = strip_fence(text).split("\n")
    pieces: list[list[str]] = [[]]
    for line, starts in zip(lines, _step_starts(lines), strict=True):
        if starts and any(x.strip() for x in pieces[-1]):
            pieces.append([])
        pieces[-1].append(line)
    return [t for t in ("\n".join(p).strip() for p in pieces) if t]


OPENER = "--"  # the forced opening of a step's comment (see `prefix_for`)


def prefix_for(step_texts: list[str], opener: str = OPENER) -> str:
    """The text a model continues to write the next step: the opening fence, the steps so far (one per line),
    and the forced `opener` of the next step's comment. The default is "--", not "-- ": BPE tokenizers read a
    prompt ending in "-- " as "--" + a lone " " token, which models rarely saw before a word (SmolLM2-135M then
    writes an empty comment), while after "--" the model writes " what this step computes" itself."""
    return "```sql\n" + "".join(t + "\n" for t in step_texts) + opener


STOPS = ("\n--", FENCE)  # a step ends where the next step's comment opens ("step"), or at the closing fence ("end")
BOUNDARIES = {"\n--": "step", FENCE: "end"}


def find_boundary(generated: str, stops: tuple[str, ...] = STOPS) -> tuple[int, str | None]:
    """(index, stop) of the first step boundary of `stops` (default the CTE steps' `STOPS`) in `generated`;
    (len(generated), None) when none."""
    hits = [(i, b) for i, b in ((generated.find(b), b) for b in stops) if i >= 0]
    return min(hits) if hits else (len(generated), None)


def cut_step(generated: str, opener: str = OPENER) -> tuple[str, str]:
    """(step_text, boundary) for what a model generated after `prefix_for(..., opener)`: the step text is `opener`
    + the generated text up to the first "\\n--" (the next step's comment: boundary "step") or "```" (the closing
    fence: "end"), whichever comes first, right-stripped; "eos" when neither occurs."""
    i, stop = find_boundary(generated)
    return (opener + generated[:i]).rstrip(), BOUNDARIES.get(stop or "", "eos")


PROSE_SEPARATOR = "\n\n"  # a prose step ends at a blank line, as TRIM's code delimits steps
PROSE_STOPS = (PROSE_SEPARATOR,)


def prose_steps(text: str) -> list[str]:
    """Reasoning prose split into steps at blank lines ("\\n\\n"), as TRIM's code delimits steps; pieces are
    stripped and empty ones dropped."""
    return [p.strip() for p in text.split(PROSE_SEPARATOR) if p.strip()]


def prose_prefix(step_texts: list[str]) -> str:
    """The text a prose model continues for the next step: the steps so far, each followed by a blank line (the
    first step continues an empty answer)."""
    return "".join(t + PROSE_SEPARATOR for t in step_texts)


def cut_prose_step(generated: str) -> tuple[str, str]:
    """(step_text, boundary) for what a model generated after `prose_prefix`: the text up to the first blank line
    ("step"), stripped; "eos" when there is none."""
    i = generated.find(PROSE_SEPARATOR)
    if i < 0:
        return generated.strip(), "eos"
    return generated[:i].strip(), "step"


def prose_answer(step_texts: list[str], *, final: bool = False) -> str | None:
    """The SQL answer of a prose trace: the body of its first ```sql (or ```) block once the block is closed; with
    `final` (the model has stopped), an unclosed block's body too. None while the trace has no block (the answer is
    not written yet) or the block is empty."""
    trace = PROSE_SEPARATOR.join(step_texts)
    start = trace.find(FENCE)
    if start < 0:
        return None
    nl = trace.find("\n", start)
    if nl < 0:
        return None
    end = trace.find(FENCE, nl + 1)
    if end < 0 and not final:
        return None
    body = (trace[nl + 1:] if end < 0 else trace[nl + 1:end]).strip()
    return body or None


@dataclass(frozen=True)
class StepKind:
    """How one kind of step is written and continued: the two kinds are "cte" (the CTE step format above) and
    "prose" (reasoning paragraphs split at blank lines, then the SQL in a ```sql block, as TRIM's code splits a
    trace). The step loop (`planner.stepwise`), the generators' `continue_step` and the process reward read
    everything kind-specific from here."""

    name: str
    stops: tuple[str, ...]  # where a model call stops (the step boundary)
    boundaries: Mapping[str, str]  # stop string -> boundary name ("step" | "end")
    joiner: str  # between step texts in the whole answer

    def prefix(self, step_texts: list[str]) -> str:
        return prefix_for(step_texts) if self.name == "cte" else prose_prefix(step_texts)

    def cut(self, generated: str, opener: str = "") -> tuple[str, str]:
        """(step text, boundary) of a model's output after `prefix(...)` (+ the forced `opener`, cte only)."""
        return cut_step(generated, opener or OPENER) if self.name == "cte" else cut_prose_step(generated)

    def text_of(self, kept: str, opener: str = "") -> str:
        """A step's text from what a model generated before the boundary (`kept`): the forced opener and the text,
        right-stripped (cte, as `cut_step`); the paragraph, stripped (prose, as `cut_prose_step`)."""
        return (opener + kept).rstrip() if self.name == "cte" else kept.strip()

    def find_boundary(self, generated: str) -> tuple[int, str | None]:
        return find_boundary(generated, self.stops)

    def complete(self, step_texts: list[str], dialect: str = "sqlite") -> bool:
        """Is the answer written: the final SELECT (cte), or a closed SQL block (prose)?"""
        if self.name == "cte":
            return step_state(step_texts, dialect).complete
        return prose_answer(step_texts) is not None

    def answer(self, step_texts: list[str], dialect: str = "sqlite") -> str:
        """The finished answer's SQL: the chain's text, validated (cte), or the trace's SQL block (prose).
        `StepParseError` with the reason when there is none."""
        if self.name == "cte":
            chain = parse_chain(self.joiner.join(step_texts), dialect=dialect)
            if not chain.complete:
                raise StepParseError(f"no final SELECT after {len(step_texts)} step(s)")
            return self.joiner.join(step_texts)
        sql = prose_answer(step_texts, final=True)
        if sql is None:
            raise StepParseError(f"no ```sql block after {len(step_texts)} prose step(s)")
        _parse_query(sql, dialect)
        return sql

    def runnable(self, step_texts: list[str], *, limit: int = 100, dialect: str = "sqlite") -> str | None:
        """What the process reward's execution part runs after these steps: the partial chain (cte), or the
        trace's SQL once it is written (prose; None before: a reasoning paragraph does not run)."""
        if self.name == "cte":
            return partial_query(step_texts, limit=limit, dialect=dialect)
        return prose_answer(step_texts)


STEP_KINDS = {"cte": StepKind("cte", STOPS, BOUNDARIES, "\n"),
              "prose": StepKind("prose", PROSE_STOPS, {PROSE_SEPARATOR: "step"}, PROSE_SEPARATOR)}


def step_kind(name: str | StepKind | None) -> StepKind:
    """The step kind named `name` (default "cte"); ValueError naming the kinds."""
    if isinstance(name, StepKind):
        return name
    kind = STEP_KINDS.get(name or "cte")
    if kind is None:
        raise ValueError(f"unknown step kind {name!r}; choose one of: {', '.join(STEP_KINDS)}")
    return kind


# --------------------------------------------------------------------------------------------------
# Structure: the top-level units of a chain's text (each CTE, then the final query), from sqlglot's tokens
# --------------------------------------------------------------------------------------------------


@dataclass
class _Unit:
    kind: str  # "cte" | "final"
    first: int  # token index range [first, last]
    last: int
    name: str | None = None  # the CTE's name (unquoted)
    name_text: str | None = None  # the name as written (quoted when it was)
    body: tuple[int, int] | None = None  # char span [start, end) of the query: the CTE body or the final query
    comma: bool = False  # a CTE followed by ","
    columns: tuple[str, ...] = ()  # the CTE's column list, when it has one


def _closing(tokens: list, i: int) -> int:
    """Index of the parenthesis that closes the one at `i`; -1 when it is not closed."""
    depth = 0
    for j in range(i, len(tokens)):
        t = tokens[j].token_type
        if t == TokenType.L_PAREN:
            depth += 1
        elif t == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return j
    return -1


def _units(text: str, tokens: list) -> tuple[list[_Unit], str | None, int]:
    """The units of `text`: each CTE of a top-level WITH (the first carries WITH [RECURSIVE], each its trailing
    comma), then the final query. Tolerates a prefix (a chain cut after a CTE); returns (units, error, at): the
    error of the first part that is not a unit, and the character position where it is."""
    units: list[_Unit] = []
    n = len(tokens)

    def fail(reason: str, k: int) -> tuple[list[_Unit], str, int]:
        return units, reason, tokens[min(k, n - 1)].start

    i = 0
    if n and tokens[0].token_type == TokenType.WITH:
        i = 2 if n > 1 and tokens[1].token_type == TokenType.RECURSIVE else 1
        start = 0
        while True:
            if i >= n:  # a prefix may end after "name AS (...),"
                return (units, None, 0) if units else fail("WITH without a CTE", i)
            name_tok = tokens[i]
            if units and name_tok.token_type in (TokenType.SELECT, TokenType.L_PAREN, TokenType.VALUES):
                return fail(f"CTE {units[-1].name} ends with ',' but the final SELECT follows", i)
            if name_tok.token_type in (TokenType.L_PAREN, TokenType.R_PAREN, TokenType.COMMA):
                return fail(f"expected a CTE name, found {name_tok.text!r}", i)
            j, columns = i + 1, ()
            if j < n and tokens[j].token_type == TokenType.L_PAREN:  # a column list
                close = _closing(tokens, j)
                if close < 0:
                    return fail(f"CTE {name_tok.text} has an unclosed column list", i)
                columns = tuple(t.text for t in tokens[j + 1:close] if t.token_type != TokenType.COMMA)
                j = close + 1
            if j >= n or tokens[j].token_type != TokenType.ALIAS:
                return fail(f"expected AS after CTE name {name_tok.text}", i)
            j += 1
            while j < n and tokens[j].text.upper() in ("NOT", "MATERIALIZED"):
                j += 1
            if j >= n or tokens[j].token_type != TokenType.L_PAREN:
                return fail(f"expected ( after {name_tok.text} AS", i)
            close = _closing(tokens, j)
            if close < 0:
                return fail(f"CTE {name_tok.text} is not closed", i)
            if close == j + 1:
                return fail(f"CTE {name_tok.text} has an empty body", i)
            body = (tokens[j + 1].start, tokens[close - 1].end + 1)
            comma = close + 1 < n and tokens[close + 1].token_type == TokenType.COMMA
            last = close + 1 if comma else close
            units.append(_Unit("cte", start, last, name_tok.text, text[name_tok.start:name_tok.end + 1], body, comma,
                               columns))
            i = start = last + 1
            if not comma:
                break
    if i < n:
        last = n - 1
        while last >= i and tokens[last].token_type == TokenType.SEMICOLON:
            last -= 1
        if last < i:
            return fail("no query after the CTEs", i)
        kind = tokens[i].token_type
        if kind not in (TokenType.SELECT, TokenType.L_PAREN, TokenType.VALUES):
            if i + 2 < n and tokens[i + 1].token_type == TokenType.ALIAS and tokens[i + 2].token_type == TokenType.L_PAREN:
                where = "the first CTE step must start with WITH" if not units else f"CTE {units[-1].name} has no ','"
                return fail(f"CTE {tokens[i].text} without WITH before it ({where})", i)
            return fail(f"the final query does not start with SELECT (found {tokens[i].text!r})", i)
        units.append(_Unit("final", i, n - 1, body=(tokens[i].start, tokens[last].end + 1)))
    return units, None, 0


def _tokens(text: str, dialect: str) -> list:
    try:
        return tokenize(text, dialect)
    except Rejected as e:
        raise StepParseError(f"does not parse: {e.reason}") from None


def _comment_of(step_text: str) -> tuple[str, int]:
    """(comment, offset of the body) of a step text: its first line when that is a `--` comment."""
    if not step_text.lstrip().startswith("--"):
        return "", 0
    nl = step_text.find("\n")
    line = step_text if nl < 0 else step_text[:nl]
    return line.strip()[2:].strip(), (len(step_text) if nl < 0 else nl + 1)


def _steps_of(texts: list[str], dialect: str, *, complete: bool) -> tuple[list[Step], list[_Unit]]:
    """Match step texts to the units of their joined text: each step must be exactly one CTE or the final query.
    With `complete`, the last step must be the final query."""
    chain = "\n".join(texts)
    tokens = _tokens(chain, dialect)
    units, error, at = _units(chain, tokens)
    if error:
        raise StepParseError(f"step {_step_at(texts, at)}: {error}" if len(texts) > 1 else error)
    if complete and (not units or units[-1].kind != "final"):
        raise StepParseError(f"the chain has no final SELECT (it ends with CTE step {len(texts)})")
    unit_of_token = [0] * len(tokens)
    for u, unit in enumerate(units):
        for t in range(unit.first, unit.last + 1):
            unit_of_token[t] = u
    steps: list[Step] = []
    offset = 0
    final_step = None
    for k, t in enumerate(texts, 1):
        comment, body_at = _comment_of(t)
        lo, hi = offset + body_at, offset + len(t)
        offset += len(t) + 1
        mine = [i for i, tok in enumerate(tokens) if lo <= tok.start < hi]
        if not mine:
            raise StepParseError(f"step {k} has no SQL after its comment")
        touched = sorted({unit_of_token[i] for i in mine})
        if any(units[u].kind == "final" for u in touched) and final_step is None:
            final_step = k
            if k < len(texts):
                raise StepParseError(f"final SELECT before the last step (step {k} of {len(texts)})")
        if len(touched) > 1:
            kinds = " and ".join(f"{units[u].name or 'the final SELECT'}" for u in touched)
            raise StepParseError(f"step {k} holds more than one step ({kinds})")
        unit = units[touched[0]]
        if mine[0] != unit.first or mine[-1] != unit.last:
            raise StepParseError(f"step {k} is neither a CTE nor the final SELECT (it holds part of "
                                 f"{unit.name or 'the final SELECT'})")
        assert unit.body is not None
        steps.append(Step(unit.name, comment, chain[unit.body[0]:unit.body[1]], t))
    return steps, units


def _step_at(texts: list[str], pos: int) -> int:
    offset = 0
    for k, t in enumerate(texts, 1):
        offset += len(t) + 1
        if pos < offset:
            return k
    return len(texts)


def _texts(steps: list[str] | StepChain) -> list[str]:
    return steps.texts() if isinstance(steps, StepChain) else list(steps)


# --------------------------------------------------------------------------------------------------
# Parse and validate
# --------------------------------------------------------------------------------------------------


def _parse_query(text: str, dialect: str) -> exp.Expression:
    try:
        stmts = parse_statements(text, dialect)
    except Rejected as e:
        raise StepParseError(f"does not parse: {e.reason}") from None
    if len(stmts) != 1:
        raise StepParseError(f"does not parse as one query ({len(stmts)} statements)")
    root = stmts[0]
    if not isinstance(root, exp.Query):
        raise StepParseError(f"not a query ({type(root).__name__})")
    return root


def _table_names(node: exp.Expression) -> set[str]:
    """Lower-cased names of the tables `node` reads, less the CTEs it defines inside itself."""
    inner = {c.alias_or_name.lower() for c in node.find_all(exp.CTE)}
    return {t.name.lower() for t in node.find_all(exp.Table) if isinstance(t.this, exp.Identifier)} - inner


def parse_chain(text: str, dialect: str = "sqlite") -> StepChain:
    """Parse and validate a complete chain (a ```sql fence around it is stripped).

    The whole text must parse (sqlglot, `dialect`) as one SELECT/WITH query; each step must be one CTE
    definition (`[WITH [RECURSIVE] ]name AS (query)[,]`) or the final query (last step only); names are unique
    (case-insensitive); a CTE step may read only tables and EARLIER steps (itself too under WITH RECURSIVE).
    Unknown tables are the guard's business, not checked here. Plain SQL without comments is one step, or, with
    CTEs, one step per CTE plus the final query (comments ""). Raises `StepParseError` with the reason."""
    texts = split_step_texts(text)
    if not texts:
        raise StepParseError("empty chain: no SQL")
    if len(texts) == 1 and not texts[0].lstrip().startswith("--"):
        # plain SQL: one step per unit
        tokens = _tokens(texts[0], dialect)
        units, error, _ = _units(texts[0], tokens)
        if error:
            raise StepParseError(error)
        texts = [texts[0][tokens[u.first].start:tokens[u.last].end + 1] for u in units] or texts
    steps, _ = _steps_of(texts, dialect, complete=True)
    root = _parse_query("\n".join(texts), dialect)
    with_ = root.args.get("with")
    ctes = list(with_.expressions) if with_ else []
    if len(ctes) != len(steps) - 1:
        raise StepParseError(f"does not parse as {len(steps) - 1} CTEs and a final SELECT "
                             f"(sqlglot reads {len(ctes)} CTEs)")
    recursive = bool(with_ and with_.args.get("recursive"))
    seen: dict[str, int] = {}
    for k, step in enumerate(steps[:-1], 1):
        assert step.name is not None
        low = step.name.lower()
        if low in seen:
            raise StepParseError(f"step {k} repeats the name {step.name} (step {seen[low]})")
        seen[low] = k
    for k, cte in enumerate(ctes, 1):
        for ref in sorted(_table_names(cte.this)):
            j = seen.get(ref)
            if j is not None and (j > k or (j == k and not recursive)):
                what = "itself (not under WITH RECURSIVE)" if j == k else f"step {j}, a later step"
                raise StepParseError(f"step {k} ({steps[k - 1].name}) reads {ref}, which is {what}")
    return StepChain(tuple(steps))


def step_state(step_texts: list[str] | StepChain, dialect: str = "sqlite") -> StepState:
    """What the next step must be after `step_texts` (see `StepState`); never raises: a text that is not a
    chain prefix gives expect "any" with the `error`."""
    texts = _texts(step_texts)
    if not texts:
        return StepState("first")
    try:
        steps, units = _steps_of(texts, dialect, complete=False)
    except StepParseError as e:
        return StepState("any", error=e.reason)
    names = tuple(s.name for s in steps if s.name is not None)
    columns: dict[str, tuple[str, ...]] = {}
    for step, unit in zip(steps, units, strict=False):
        if step.name is not None:
            columns[step.name] = _output_columns(step.sql, dialect, columns, unit)
    if steps[-1].is_final:
        return StepState("any", names, columns, complete=True)
    return StepState("cte" if units[len(steps) - 1].comma else "final", names, columns)


def _output_columns(sql: str, dialect: str, earlier: dict[str, tuple[str, ...]], unit: _Unit) -> tuple[str, ...]:
    if unit.columns:
        return unit.columns
    try:
        q = _parse_query(sql, dialect)
    except StepParseError:
        return ()
    while isinstance(q, exp.SetOperation):
        q = q.this
    if not isinstance(q, exp.Select):
        return ()
    lower = {k.lower(): v for k, v in earlier.items()}
    out: list[str] = []
    for e in q.expressions:
        if isinstance(e, exp.Star):
            for src in _sources(q):
                if isinstance(src, exp.Table):
                    out.extend(lower.get(src.name.lower(), ()))
        elif isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
            out.extend(lower.get(e.table.lower(), ()))  # t.* of an earlier step
        elif isinstance(e, exp.Alias | exp.Column) and e.alias_or_name:
            out.append(e.alias_or_name)
    return tuple(out)


def partial_query(step_texts_or_chain: list[str] | StepChain, k: int | None = None, *, limit: int = 100,
                  dialect: str = "sqlite") -> str:
    """The runnable query of steps 1..k (all steps when `k` is None): when step k is the final SELECT, the chain
    text itself; else the text of steps 1..k with its trailing comma removed, then
    "\\nSELECT * FROM <name of step k> LIMIT <limit>". Raises `StepParseError` when steps 1..k are not a chain
    prefix."""
    texts = _texts(step_texts_or_chain)
    k = len(texts) if k is None else k
    if not 1 <= k <= len(texts):
        raise StepParseError(f"no step {k} (the chain has {len(texts)})")
    texts = texts[:k]
    steps, units = _steps_of(texts, dialect, complete=False)
    chain = "\n".join(texts)
    if steps[-1].is_final:
        return chain
    unit = units[len(steps) - 1]
    if unit.comma:
        tokens = _tokens(chain, dialect)
        chain = chain[:tokens[unit.last].start].rstrip()
    return f"{chain}\nSELECT * FROM {unit.name_text} LIMIT {int(limit)}"


# --------------------------------------------------------------------------------------------------
# Rewrite: an ordinary query as a chain
# --------------------------------------------------------------------------------------------------


def _sources(select: exp.Select) -> list[exp.Expression]:
    """The FROM and JOIN sources of a SELECT (tables and derived tables), in order."""
    out = []
    from_ = select.args.get("from")
    if from_ is not None:
        out.append(from_.this)
    out.extend(j.this for j in select.args.get("joins") or [])
    return out


def _source_name(src: exp.Expression) -> str:
    if isinstance(src, exp.Table | exp.Subquery):
        return src.alias_or_name.lower()
    return ""


def _query_names(q: exp.Expression) -> list[str] | None:
    """Output names of a query's SELECT list (its leftmost branch); None when a `*` makes them unknown."""
    while isinstance(q, exp.SetOperation | exp.Subquery):
        q = q.this
    if not isinstance(q, exp.Select):
        return None
    names = []
    for e in q.expressions:
        if isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star)):
            return None
        names.append(e.alias_or_name.lower())
    return names


class _Resolver:
    """Decides whether a subquery refers to anything outside itself (a correlated subquery)."""

    def __init__(self, root: exp.Expression, schema: Mapping[str, Iterable[str]] | None):
        self.schema = None if schema is None else {t.lower(): {c.lower() for c in cols} for t, cols in schema.items()}
        self.ctes = {c.alias_or_name.lower(): c for c in root.find_all(exp.CTE)}
        self.steps: dict[str, exp.Query] = {}  # extracted steps: name -> query

    def provides(self, src: exp.Expression, column: str) -> bool | None:
        """Does source `src` have a column named `column`? None: cannot tell."""
        if isinstance(src, exp.Subquery):
            names = _query_names(src.this)
        elif isinstance(src, exp.Table):
            cte = self.ctes.get(src.name.lower())
            if src.name.lower() in self.steps:
                names = _query_names(self.steps[src.name.lower()])
            elif cte is not None:
                cols = cte.args["alias"].columns if cte.args.get("alias") else None
                names = [c.name.lower() for c in cols] if cols else _query_names(cte.this)
            elif self.schema is not None and src.name.lower() in self.schema:
                return column in self.schema[src.name.lower()]
            else:
                return None
        else:
            return None
        return None if names is None else column in names

    def correlated(self, q: exp.Expression) -> bool:
        """True when a column inside `q` resolves to a source outside it. A qualified column resolves by its
        qualifier; an unqualified one (with a schema) to the innermost SELECT whose sources have that column
        (one found nowhere is a select alias or SQLite's double-quoted string: local). Without a schema an
        unqualified column is taken as local."""
        for col in q.find_all(exp.Column):
            if isinstance(col.this, exp.Star) and not col.table:
                continue
            inner, outer, node = [], [], col.parent
            while node is not None:
                if isinstance(node, exp.Select):
                    (inner if _within(node, q) else outer).append(node)
                node = node.parent
            if col.table:
                qual = col.table.lower()
                if not any(qual in {_source_name(s) for s in _sources(sel)} for sel in inner):
                    return True  # an outer alias, or a name found nowhere: keep inline
            elif self.schema is not None and outer:
                name = col.name.lower()
                if any(self.provides(s, name) for sel in inner for s in _sources(sel)):
                    continue
                if any(name in [e.alias.lower() for e in sel.expressions if isinstance(e, exp.Alias)]
                       for sel in inner):
                    continue
                if any(self.provides(s, name) is not False for sel in outer for s in _sources(sel)):
                    return True
        return False


def _within(node: exp.Expression, q: exp.Expression) -> bool:
    while node is not None:
        if node is q:
            return True
        node = node.parent
    return False


def _direct_queries(node: exp.Expression) -> Iterable[exp.Query]:
    """The queries nested in `node` without another query in between (in tree order)."""
    for child in node.iter_expressions():
        if isinstance(child, exp.Query) and not isinstance(child, exp.Subquery):
            yield child
        else:
            yield from _direct_queries(child)


class _Rewriter:
    def __init__(self, root: exp.Expression, dialect: str, schema: Mapping[str, Iterable[str]] | None):
        self.dialect = dialect
        self.resolver = _Resolver(root, schema)
        used = {i.name.lower() for i in root.find_all(exp.Identifier)}
        used |= {t.lower() for t in (schema or {})}
        self.used = used
        self.nested_ctes = {c.alias_or_name.lower() for c in root.find_all(exp.CTE)
                            if c.parent is not root.args.get("with")}
        self.steps: list[tuple[str, str, str]] = []  # (name, comment, body sql)
        self.counter = 0

    def name(self) -> str:
        while True:
            self.counter += 1
            n = f"s{self.counter}"
            if n not in self.used:
                self.used.add(n)
                return n

    def add(self, q: exp.Query) -> str:
        name = self.name()
        self.resolver.steps[name] = q
        self.steps.append((name, describe(q, self.dialect), render(q, self.dialect)))
        return name

    def extractable(self, q: exp.Query) -> bool:
        """A SELECT or compound in a derived table, a scalar or IN subquery, EXISTS or ANY/ALL, without a WITH of
        its own, reading no CTE of a nested WITH, and not correlated."""
        if not isinstance(q, exp.Select | exp.SetOperation):
            return False
        if q.args.get("with") is not None or _table_names(q) & self.nested_ctes:
            return False
        parent = q.parent
        if isinstance(parent, exp.Subquery):
            alias = parent.args.get("alias")
            if (alias is not None and alias.columns) or isinstance(parent.parent, exp.SetOperation):
                return False
        elif not isinstance(parent, exp.Exists | exp.Any | exp.All):
            return False
        return not self.resolver.correlated(q)

    def reference(self, q: exp.Query, name: str) -> None:
        """Put step `name` where `q` was: `FROM sK [AS alias]` for a derived table, else `SELECT * FROM sK`."""
        parent = q.parent
        if isinstance(parent, exp.Subquery) and isinstance(parent.parent, exp.From | exp.Join):
            table = exp.Table(this=exp.to_identifier(name))
            if parent.alias:
                table.set("alias", exp.TableAlias(this=parent.args["alias"].this.copy()))
            parent.replace(table)
        else:
            q.replace(exp.select("*").from_(name))

    def rewrite(self, q: exp.Query) -> None:
        """Extract the self-contained queries nested in `q` (inner ones first), and, when `q` is a set
        operation, its branches."""
        if isinstance(q, exp.SetOperation):
            if self.compound_ok(q):
                self.rewrite_branches(q)
                return
            for side in (q.this, q.expression):
                self.rewrite(side)
            return
        for inner in list(_direct_queries(q)):
            if isinstance(inner.parent, exp.CTE):
                continue  # a CTE: an existing step (top level) or a nested WITH (left alone)
            self.rewrite(inner)
            if self.extractable(inner):
                self.reference(inner, self.add(inner))

    def rewrite_branches(self, q: exp.SetOperation) -> None:
        for key in ("this", "expression"):
            side = q.args[key]
            if isinstance(side, exp.SetOperation):
                self.rewrite_branches(side)
            else:
                self.rewrite(side)
                side.replace(exp.select("*").from_(self.add(side)))

    def compound_ok(self, q: exp.SetOperation) -> bool:
        """Branches may become steps when every branch is a plain SELECT (no WITH, no ORDER BY/LIMIT of its
        own), none is correlated, and the compound's ORDER BY names output columns (its terms are bare
        names, or are rewritten to ordinals of the leftmost branch)."""
        branches, stack = [], [q]
        while stack:
            node = stack.pop()
            for side in (node.this, node.expression):
                (stack if isinstance(side, exp.SetOperation) else branches).append(side)
        for b in branches:
            if not isinstance(b, exp.Select) or any(b.args.get(k) for k in ("with", "order", "limit", "offset")):
                return False
            if self.resolver.correlated(b) or _table_names(b) & self.nested_ctes:
                return False
        if q is not q.root() and not isinstance(q.parent, exp.Subquery):
            return False
        order = q.args.get("order")
        if order is None:
            return True
        left = q
        while isinstance(left, exp.SetOperation):
            left = left.this
        names = _query_names(left)
        if names is None:
            return False
        rendered = [render(e.unalias(), self.dialect) for e in left.expressions]
        ordinals = {}
        for i, term in enumerate(order.expressions):
            key = term.this
            if (isinstance(key, exp.Column) and not key.table and key.name.lower() in names) or (
                    isinstance(key, exp.Literal) and not key.is_string):
                continue
            text = render(key, self.dialect)
            if text not in rendered:
                return False
            ordinals[i] = rendered.index(text) + 1
        for i, pos in ordinals.items():  # a term that is a column of the leftmost branch: its name, or ordinal
            name = names[pos - 1]
            plain = isinstance(left.expressions[pos - 1], exp.Alias | exp.Column) and names.count(name) == 1
            order.expressions[i].set("this", exp.column(left.expressions[pos - 1].alias_or_name) if plain
                                     else exp.Literal.number(pos))
        return True


def describe(q: exp.Expression, dialect: str = "sqlite") -> str:
    """A short one-line comment for a step's query (at most COMMENT_MAX characters): e.g. "rows of singer where
    country = 'France'", "count of s1", "s1 INTERSECT s2"."""
    text = _describe(q, dialect)
    text = " ".join(text.split())
    return text if len(text) <= COMMENT_MAX else text[:COMMENT_MAX - 3].rstrip() + "..."


def _step_read(q: exp.Expression) -> str | None:
    """The table name when `q` is `SELECT * FROM name` and nothing more (how a chain reads an earlier step)."""
    if isinstance(q, exp.Select) and len(q.expressions) == 1 and isinstance(q.expressions[0], exp.Star):
        srcs = _sources(q)
        if len(srcs) == 1 and isinstance(srcs[0], exp.Table) and not srcs[0].alias and not any(
                q.args.get(k) for k in ("where", "group", "having", "order", "limit", "joins", "distinct")):
            return srcs[0].name
    return None


def _shown(e: exp.Expression, dialect: str) -> str:
    """An expression rendered for a comment: `(SELECT * FROM sK)` is shown as `sK`."""
    def short(node: exp.Expression) -> exp.Expression:
        name = _step_read(node.this) if isinstance(node, exp.Subquery) and not node.alias else None
        return exp.column(name) if name else node

    return render(e.copy().transform(short), dialect)


def _describe(q: exp.Expression, dialect: str) -> str:
    r = lambda e: _shown(e, dialect)  # noqa: E731
    if isinstance(q, exp.Subquery):
        return _describe(q.this, dialect)
    if isinstance(q, exp.SetOperation):
        op = type(q).__name__.upper()
        if isinstance(q, exp.Union) and not q.args.get("distinct"):
            op = "UNION ALL"
        text = f"{_brief(q.this, dialect)} {op} {_brief(q.expression, dialect)}"
    elif isinstance(q, exp.Select):
        exprs = q.expressions
        if len(exprs) == 1 and isinstance(exprs[0], exp.Star):
            what = "rows"
        elif len(exprs) == 1 and isinstance(exprs[0].unalias(), exp.Count) and isinstance(
                exprs[0].unalias().this, exp.Star):
            what = "count"
        else:
            what = ", ".join(r(e.unalias()) for e in exprs)
        if q.args.get("distinct"):
            what = "distinct " + what
        srcs = [s.name if isinstance(s, exp.Table) else "(subquery)" for s in _sources(q)]
        text = f"{what} of {' join '.join(srcs)}" if srcs else what
        if q.args.get("where") is not None:
            text += f" where {r(q.args['where'].this)}"
        if q.args.get("group") is not None:
            text += " per " + ", ".join(r(e) for e in q.args["group"].expressions)
        if q.args.get("having") is not None:
            text += f" having {r(q.args['having'].this)}"
    else:
        return r(q)
    if q.args.get("order") is not None:
        text += " ordered by " + ", ".join(r(e) for e in q.args["order"].expressions)
    if q.args.get("limit") is not None:
        text += f" limit {r(q.args['limit'].expression)}"
    return text


def _brief(q: exp.Expression, dialect: str) -> str:
    """A branch of a set operation: a step's name when it reads one step, else its description."""
    return _step_read(q) or f"({_describe(q, dialect)})"


def _schema_map(schema: Any) -> Mapping[str, Iterable[str]] | None:
    if schema is None or isinstance(schema, Mapping):
        return schema
    return {t.name: [c.name for c in t.columns] for t in schema.tables}  # a sqlbox.schema.Schema


def to_chain(sql: str, dialect: str = "sqlite", *, schema: Any = None) -> StepChain:
    """Rewrite an ordinary query as a step chain (sqlglot's tree; the query must pass `sqlbox.guard.guard`).

    Uncorrelated subqueries (in FROM and JOIN, and in expressions: IN (...), scalar comparisons, EXISTS, ANY/ALL)
    and the branches of set operations (UNION/INTERSECT/EXCEPT) become earlier steps, inner ones first, named
    s1, s2, ... (names the query already uses are skipped); each is referenced as `(SELECT * FROM sK)` or
    `FROM sK [AS alias]`. Existing CTEs are kept as steps (before the new ones). Correlated subqueries stay
    inline, and so does anything whose extraction could change the result (a subquery with its own WITH, a
    derived table with a column list, a compound whose ORDER BY cannot name its output columns). A compound's
    ORDER BY/LIMIT stays on the final step. Each step gets a generated one-line comment (`describe`); the final
    step is the outer query. A query with nothing to extract is one step.

    `schema` (a `sqlbox.schema.Schema` or a mapping table -> column names) lets an unqualified column be resolved
    to its table, so that a subquery correlated through one is recognized; without it, unqualified columns are
    taken as the subquery's own (SQLite resolves a name to the innermost table that has it, so a wrong guess gives
    a chain that fails with "no such column", never one that silently returns other rows). Raises
    `StepParseError` when the query does not pass the guard."""
    try:
        root = guard(sql.strip(), dialect)
    except Rejected as e:
        raise StepParseError(f"does not parse: {e.reason}") from None
    while isinstance(root, exp.Subquery) and not root.alias and isinstance(root.this, exp.Query):
        root = root.this.pop()
    rw = _Rewriter(root, dialect, _schema_map(schema))
    with_ = root.args.get("with")
    kept = []
    if with_ is not None:
        for cte in with_.expressions:
            alias = cte.args["alias"]
            head = render(alias.this, dialect)
            if alias.columns:
                head += "(" + ", ".join(render(c, dialect) for c in alias.columns) + ")"
            mat = cte.args.get("materialized")
            kept.append((head + (" AS MATERIALIZED" if mat else " AS NOT MATERIALIZED" if mat is False else " AS"),
                         describe(cte.this, dialect), render(cte.this, dialect)))
        root.set("with", None)
    rw.rewrite(root)
    ctes = kept + [(f"{name} AS", comment, body) for name, comment, body in rw.steps]
    texts = []
    for k, (head, comment, body) in enumerate(ctes):
        lead = ("WITH RECURSIVE " if with_ is not None and with_.args.get("recursive") else "WITH ") if k == 0 else ""
        tail = "," if k < len(ctes) - 1 else ""
        texts.append(f"-- {comment}\n{lead}{head} ({body}){tail}")
    texts.append(f"-- {describe(root, dialect)}\n{render(root, dialect)}")
    return parse_chain("\n".join(texts), dialect)
