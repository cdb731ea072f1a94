"""The data model that flows through the pipeline: Question -> Candidate -> ExecutionResult -> Score -> Plan.

All objects are pydantic models, so a Plan serializes to JSON and back without loss
(`Plan.model_validate_json(plan.model_dump_json()) == plan`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Question(_Model):
    """A natural-language question over one registered database."""

    text: str
    db_id: str
    evidence: str | None = None  # BIRD-style external knowledge / hints
    id: str | None = None  # caller's id (e.g. the dataset index), kept for logging


class Candidate(_Model):
    """One SQL proposal from a generator (or from a candidate pool when replaying)."""

    sql: str
    source: str  # generator name / checkpoint, or the system that produced it
    normalized: str | None = None  # canonical formatting (sqlglot), filled by normalize
    dedup_key: str | None = None  # equal keys = the same query up to formatting
    dialect: str = "sqlite"  # dialect the SQL was written in
    rejected: str | None = None  # reason the SQL guard refused it (not a single read-only query)
    sample_index: int | None = None  # position among the generator's N samples
    duplicates: int = 1  # how many generated samples collapsed into this candidate
    # the generator's sequence log-probability of this sample (sum of its token logprobs) and its token count;
    # None: the backend reported none (a server without logprobs, a replayed pool without `logprob` fields)
    logprob: float | None = None
    logprob_tokens: int | None = None


class ErrorKind(StrEnum):
    """Why an execution did not succeed."""

    REJECTED = "rejected"  # the guard refused it (DDL/DML, file access, several statements, ...)
    PARSE = "parse"  # sqlglot could not parse it
    BINDER = "binder"  # unknown table/column, type error at bind time
    RUNTIME = "runtime"  # failed while running
    TIMEOUT = "timeout"  # interrupted at the per-query deadline
    TOO_LARGE = "too_large"  # hit the memory limit
    INTERNAL = "internal"  # an executor fault, not the candidate's


class ExecutionResult(_Model):
    """What running one candidate produced. Rows are a bounded preview; the fingerprints cover all rows."""

    ok: bool
    error_kind: ErrorKind | None = None
    error: str | None = None
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)  # preview, at most the preview cap
    row_count: int = 0  # rows produced (capped at the executor's row cap)
    truncated: bool = False  # row_count reached the row cap
    elapsed_ms: float = 0.0
    fingerprint: str | None = None  # order-insensitive multiset hash of all rows
    ordered_fingerprint: str | None = None  # order-sensitive hash of all rows
    engine: str = "duckdb"
    executed_sql: str | None = None  # the SQL as run (after transpilation)


class Score(_Model):
    """A discriminator's judgement of one candidate."""

    score: float  # soft score, higher = more likely correct: [0, 1] for a verdict; the configured fallback
    # (default -0.5) when there is none; the check mode's worst (-1.0) for a non-executable candidate
    verdict: bool | None = None  # the emitted (or forced) true/false, None when there is none
    parse_failure: bool = False  # no verdict: score is the configured fallback
    verdict_kind: str | None = None  # natural (written) | forced (verdict forcing) | missing (none) | not_executable
    forced_probs: list[float] | None = None  # verdict forcing: [P(true), P(false)] after the verdict prefix
    error: str | None = None  # why a verdict or its probability is missing (e.g. the server returned no logprobs)
    reasoning: str | None = None  # the generated chain of thought
    discriminator: str = ""  # name of the configured discriminator
    checkpoint: str | None = None  # which checkpoint actually scored it
    mode: str = "cot"  # cot | logit | check
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None  # tokens of reasoning generated before the verdict (or before forcing)
    ran_out: str | None = None  # "tokens" | "time": the budget that ended the reasoning; None: it ended on its own
    represented_by: int | None = None  # a copy of candidate i's score: i represents this result cluster


class TokenUsage(_Model):
    """Tokens and money spent by one model within a plan."""

    model: str
    role: str  # generator | discriminator
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # in the configured currency unit (cost per 1k tokens x tokens / 1000)
    calls: int = 0


class RouteDecision(_Model):
    """Which generator/discriminator pair the router chose, and why."""

    router: str = "fixed"
    pair: str
    generator: str
    discriminator: str
    predicted_quality: float | None = None
    predicted_cost: float | None = None
    escalated: bool = False  # cascade: did it escalate past the first pair
    steps: list[str] = Field(default_factory=list)  # cascade: pairs actually run, in order
    reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class ScoredCandidate(_Model):
    """A candidate with everything the pipeline learned about it."""

    candidate: Candidate
    execution: ExecutionResult | None = None
    scores: list[Score] = Field(default_factory=list)
    cluster: int | None = None  # index of its execution-result cluster (equal fingerprints)
    selection_score: float | None = None  # the value the policy ranked it by


class DiscriminationStep(_Model):
    """How one discriminate stage spent its work: what it scored, what it skipped and why, its budgets, and how the
    verdicts came (counts over the scored rows)."""

    discriminator: str
    targets: int = 0  # candidates whose scores the policy can use
    scored: int = 0  # rows the discriminator actually judged (one per result cluster, plus non-executable ones)
    clusters: int = 0  # executable result clusters among the targets
    per_cluster: bool = True  # one representative per result cluster was scored, its score copied to the members
    skipped: str | None = None  # why the discriminator did not run at all
    token_budget: int | None = None
    time_budget_s: float | None = None  # the call's time budget (from the plan's deadline and limits.discriminate_s)
    ran_out_time: int = 0
    ran_out_tokens: int = 0
    verdicts: dict[str, int] = Field(default_factory=dict)  # verdict_kind -> rows
    reasoning_tokens: int = 0


class SchemaLinking(_Model):
    """Which part of the schema the prompt held (sqlbox.linking): the linked tables (best first, then those
    the foreign-key closure added) and, per table, the columns kept."""

    mode: str = "auto"  # the configured mode that linked (on | auto)
    tables: list[str] = Field(default_factory=list)
    columns: dict[str, list[str]] = Field(default_factory=dict)
    closure: list[str] = Field(default_factory=list)  # tables added by the foreign-key closure
    value_hits: int = 0  # question literals found among column values
    prompt_tokens: int = 0
    full_tokens: int = 0  # the whole schema's prompt, untruncated
    latency_ms: float = 0.0


class Plan(_Model):
    """The answer to one question: the chosen SQL and the full trail of how it was chosen."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    question: Question
    # ok | low_confidence (confidence below abstain_below; chosen still shown) | no_executable_candidate |
    # no_candidates | chosen_not_executable (rerank only)
    status: str = "ok"
    chosen: int | None = None  # index into `candidates`, None when nothing is usable
    chosen_sql: str | None = None
    reason: str | None = None  # why this candidate was chosen (or why none was)
    confidence: float | None = None  # calibrated P(the chosen SQL is correct); None when nothing was chosen
    policy: str = "check-rerank"
    route: RouteDecision | None = None
    candidates: list[ScoredCandidate] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)  # when nothing executes: the errors, explicitly
    timings_ms: dict[str, float] = Field(default_factory=dict)  # stage -> milliseconds
    usage: list[TokenUsage] = Field(default_factory=list)
    total_cost: float = 0.0
    preview: ExecutionResult | None = None  # bounded rows of the chosen SQL, when asked to execute
    linking: SchemaLinking | None = None  # the linked schema subset, when the prompt was linked
    discrimination: list[DiscriminationStep] = Field(default_factory=list)  # one per discriminate stage run
    # e.g. the database's role can do more than read (opted in by privileged_databases)
    warnings: list[str] = Field(default_factory=list)

    @property
    def chosen_candidate(self) -> ScoredCandidate | None:
        return None if self.chosen is None else self.candidates[self.chosen]


def soft_score(c: ScoredCandidate) -> float:
    """The candidate's soft score: the last score attached (the active discriminator's), or 0.5 if unscored."""
    return c.scores[-1].score if c.scores else 0.5


def executable(c: ScoredCandidate) -> bool:
    return c.execution is not None and c.execution.ok
