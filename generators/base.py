"""The generator protocol and registry."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from core.registry import Registry
from core.specs import BackendInfo
from sqlbox.steps import PROSE_SEPARATOR, STOPS, step_kind


@dataclass
class SamplingParams:
    n: int = 5
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = 0


@dataclass
class GenerationRequest:
    """Everything a generator needs to write SQL for one question."""

    question: str
    schema: str  # serialized schema (CREATE TABLE style), already within its token budget
    evidence: str | None = None
    few_shot: list[tuple[str, str]] = field(default_factory=list)  # (question, sql) examples
    dialect: str = "sqlite"
    params: SamplingParams = field(default_factory=SamplingParams)
    grammar: str | None = None  # EBNF of the answer (generators.grammar.sql_grammar, wrap="fence"); used by
    # generators whose `constrained` setting is on, ignored by the others
    # the time budget (`limits.generate_s`, issue 31): decoding stops `time_budget_s` seconds after the first decoded
    # token (the prompt's prefill does not count), or at `deadline` (a time.monotonic() instant: the plan's deadline
    # less a reserve), whichever comes first; the samples not finished by then are dropped (`GenerationResult.
    # dropped`). The local backends (transformers, embedded) stop decoding; an OpenAI-compatible server's request is
    # bounded by the backend's HTTP timeout instead
    time_budget_s: float | None = None
    deadline: float | None = None


@dataclass
class GenerationResult:
    """N raw completions, the SQL extracted from each, and the token usage."""

    sqls: list[str]  # extracted SQL, one per sample ("" when nothing could be extracted)
    raw: list[str]  # raw completions
    model: str  # checkpoint / model name that produced them
    prompt_tokens: int = 0
    completion_tokens: int = 0
    constrained: bool = False  # sampled under the request's grammar
    notes: list[str] = field(default_factory=list)  # e.g. a server refused the grammar: sampled unconstrained
    # per sample: the sequence log-probability (sum of token logprobs) and its token count; None where the
    # backend gave none (an OpenAI-compatible server that returns no logprobs: `logprobs_missing` is then True)
    logprobs: list[float | None] = field(default_factory=list)
    logprob_tokens: list[int | None] = field(default_factory=list)
    logprobs_missing: bool = False
    # per sample (aligned with `sqls`; empty: none dropped), why it was dropped before extraction, else None: "time"
    # (still being written at the time budget or the request's deadline), "loop" (the model repeated one token
    # pattern: `generators.constrained.looping`); a dropped sample's `sqls` entry is "" (`DROP_REASONS` says why)
    drops: list[str | None] = field(default_factory=list)

    @property
    def dropped(self) -> dict[str, int]:
        """How many samples were dropped, by why."""
        return dict(Counter(why for why in self.drops if why is not None))


DROP_REASONS = {  # why a sample was dropped, in words
    "time": "the sample was still being written at the generation time budget (limits.generate_s)",
    "loop": "the sample repeated one token pattern (a loop), so decoding stopped it",
}


def drop_reason(why: str) -> str:
    """The words for a dropped sample: its candidate's rejection (`planner.normalize.CandidatePool.add`) and the
    generator's note."""
    return f"dropped: {DROP_REASONS.get(why, why)}"


def sequence_logprob(token_logprobs) -> tuple[float | None, int | None]:
    """(sum, count) of a sample's token logprobs; (None, None) when there are none (None entries are skipped:
    a server may report null for a token it could not score)."""
    vals = [float(x) for x in (token_logprobs or []) if x is not None]
    if not vals:
        return None, None
    return sum(vals), len(vals)


STEP_STOPS = STOPS  # a step ends at the next step's comment or the closing fence (`sqlbox.steps`, the format's home)
STEP_OPENER = "-- "  # every step opens with its comment; the caller forces it as the end of the prefix
STEP_OPENERS = ("-- ", "--")  # "--" (no space): the model writes the space itself; see `StepRequest`


def step_opener(prefix: str, kind: str = "cte") -> str:
    """The forced opening of the step a prefix ends with: its last line, "-- " or "--"; or, when the prefix ends
    with a whole comment line and a newline ("-- <what the step computes>\\n": the caller wrote the comment, as
    Route-and-Reason's composer does with a sub-question), that comment line and its newline. ValueError
    otherwise. A prose step (kind "prose") has no forced opening: "", and its prefix is empty or ends with the blank
    line after the steps so far."""
    if kind == "prose":
        if prefix and not prefix.endswith(PROSE_SEPARATOR):
            raise ValueError(f"a prose step prefix is empty or ends with a blank line, not {prefix[-40:]!r}")
        return ""
    last = prefix[prefix.rfind("\n") + 1:]
    if last in STEP_OPENERS:
        return last
    if last == "" and prefix.endswith("\n"):
        body = prefix[:-1]
        line = body[body.rfind("\n") + 1:]
        if line.startswith("--") and len(line) > 2:
            return line + "\n"
    raise ValueError(f"a step prefix ends with a line holding only {' or '.join(map(repr, STEP_OPENERS))} (the "
                     f"forced opening of the step's comment), or with a whole comment line and a newline, not "
                     f"{last[-40:]!r}")


@dataclass
class StepRequest:
    """Continue ONE step of a query written as CTE steps (the step format of `sqlbox.steps`).

    `prefix` is the exact text the model continues, the answer so far: "```sql\n" + the earlier steps' texts, each
    followed by "\n", + "-- " (the forced opening of this step's comment, the contract's form), or + "--": BPE
    tokenizers read a prompt that ends with "-- " as "--" + a lone " " token, which models rarely saw before a
    word (SmolLM2-135M then writes an empty comment, "\n--", at once), while after "--" the model writes " how
    many ..." itself; the step text is the same "-- ..." either way. It is sent as the content of a final
    assistant message that the model continues (not a new turn), after the step-mode prompt
    (`generators.prompts.build_step_messages(request.request)`). `request` supplies the question, schema,
    few-shot examples, dialect and the sampling (temperature, top_p, seed; temperature 0 is greedy; n and
    max_tokens are not used: one step is written, at most `max_tokens` tokens). `grammar` is an EBNF of the rest
    of THIS step (`generators.grammar.step_grammar`), used by generators whose `constrained` setting is on.

    `kind` "prose" (`sqlbox.steps.STEP_KINDS`): the model reasons in paragraphs and ends with the SQL in a ```sql
    block; `prefix` is the paragraphs so far, each followed by a blank line ("" for the first), the prompt is the
    prose step prompt, a step stops at the next blank line, and there is no forced opener and no grammar."""

    request: GenerationRequest
    prefix: str
    grammar: str | None = None
    max_tokens: int = 128
    kind: str = "cte"  # the step kind (`sqlbox.steps.STEP_KINDS`): "prose" continues reasoning paragraphs instead


@dataclass
class StepResult:
    """One continued step.

    `text` is the step's text: the forced opener ("-- " or "--", `step_opener(prefix)`) + the generated text cut at
    the step boundary (`cut_at_step_boundary`), right-stripped (as `sqlbox.steps.cut_step`), so `prefix[:-len(opener)] + text` is the answer so
    far. `raw` is the generated text as the backend
    returned it, before the cut. `boundary`: "step" (the next step's comment "\n--" began), "end" (the closing
    "```"), "eos" (the model, or a grammar that reached its end, ended the sequence) or "length" (max_tokens).
    `completion_tokens`: the tokens decoded for this step up to and including the one that completed the
    boundary (locally the tokens actually generated, an EOS included; over HTTP the server's usage, which with
    vLLM's convention and the loopback server's is the same count). `logprob` / `logprob_tokens`: the sum and count
    of the logprobs of the tokens that make up the kept text (those starting before the boundary; an EOS
    included), None where the backend gave none."""

    text: str
    raw: str
    boundary: str  # step | end | eos | length
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprob: float | None = None
    logprob_tokens: int | None = None
    constrained: bool = False
    notes: list[str] = field(default_factory=list)


def cut_at_step_boundary(generated: str, kind: str = "cte") -> tuple[str, str | None]:
    """(generated text before the first step boundary of the kind's stops (`STEP_STOPS` for CTE steps), the boundary
    found or None)."""
    i, stop = step_kind(kind).find_boundary(generated)
    return generated[:i], stop


def boundary_name(stop: str | None, kind: str = "cte") -> str | None:
    """"step" for "\\n--", "end" for "```" (`sqlbox.steps.BOUNDARIES`); "step" for a prose step's blank line; None
    for anything else."""
    return step_kind(kind).boundaries.get(stop or "")


@runtime_checkable
class Generator(Protocol):
    """A generator backend. `generate(request)` writes N whole queries.

    Optional: `continue_step(request: StepRequest) -> StepResult` continues one step of a query written as CTE
    steps from an exact prefix (the `transformers`/`embedded` and `openai` backends have it; routers check
    `hasattr(generator, "continue_step")`, since it is not part of the runtime-checked protocol)."""

    name: str

    def generate(self, request: GenerationRequest) -> GenerationResult: ...


GENERATORS: Registry[Generator, BackendInfo] = Registry("generator", BackendInfo)
