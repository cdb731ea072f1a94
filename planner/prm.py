"""The process reward (PRM) of one CTE step (issue 28, Build 2): how likely the query SO FAR -- steps 1..k of a chain
(the step format: `sqlbox.steps`) -- is a correct start toward answering the question. Two parts, each recorded
and each switchable off:

- verdict: the discriminator's P(correct) on the partial chain text, with the step prompt (`step-logit-v1` |
  `step-cot-v1`; build the discriminator from the pair's spec with `discriminators.step.step_discriminator`): one
  `DiscriminationRequest` with `sqls=[the partial chain text]` and `executions=[its result]`, scored by the same
  token-probability soft score as a candidate;
- execution: the partial chain run as `sqlbox.steps.partial_query(step_texts, limit=...)` through the planner's
  sandboxed executor (guarded and sandboxed like any candidate): error, empty, all NULL (in the preview rows), row
  count (capped at `limit`), and the row-count change from the previous step; `exec_score` (`exec_score`) maps
  them to [0, 1]: an error 0, an empty or all-NULL result `EXEC_EMPTY`, rows 1.

A prose step (`kind="prose"`: reasoning paragraphs, then the SQL in a ```sql block, `sqlbox.steps.STEP_KINDS`) is
scored on the reasoning so far with the prose step prompt (`step-prose-logit-v1` | `step-prose-cot-v1`), and its
execution part runs only once the trace holds its SQL (before that the part is None: a paragraph does not run).
`combine` makes the reward from the parts that are on (a part that is off is None and left out of `parts`; with
one part on, the reward is that part): "product" (verdict_p * exec_score), "mean", "min", "verdict" or
"execution" (that part only, the other still recorded).

The default is "product", chosen by `benchmarks/prm_quality.py` (BENCHMARKS.md "Process reward quality (issue
28)": 300 good + 300 bad execution-labelled Spider dev steps, the embedded model in logit mode): product, mean and
min rank alike (AUROC 0.745 / 0.745 / 0.746, the execution part alone 0.742, the verdict part alone 0.510), and a
logistic regression over the parts' features, cross-validated by database, does worse (0.703), so no fitted artifact.
Of the three, the product is the one that keeps a failing step at 0 whatever the verdict says, so under a
threshold policy (TRIM-Thr) a step that errors is always handed off.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from core.model import ExecutionResult
from sqlbox.steps import step_kind

COMBINES = ("product", "mean", "min", "verdict", "execution")
DEFAULT_COMBINE = "product"
EXEC_EMPTY = 0.25  # exec_score of a step that runs but returns no rows, or only NULLs
ERROR_CHARS = 160  # `StepReward.error` is cut to this many characters


class SupportsExecute(Protocol):
    def execute(self, db_id: str, sql: str, *, dialect: str = "sqlite") -> ExecutionResult: ...


@dataclass
class StepReward:
    """The process reward of one step and its parts (None: that part was off, or did not run)."""

    score: float  # the combined reward in [0, 1]
    verdict_p: float | None = None  # the discriminator's P(correct) on the partial chain
    verdict_kind: str | None = None  # the Score's: natural | forced | missing | not_executable (logit: None)
    ok: bool | None = None  # the partial chain ran
    error: str | None = None  # why it did not (short)
    empty: bool | None = None  # ran, no rows
    all_null: bool | None = None  # ran, rows, every value NULL (in the preview rows)
    rows: int | None = None  # row count, capped at the limit
    row_delta: int | None = None  # rows - the previous step's rows (None for step 1 or when unknown)
    exec_score: float | None = None  # the execution part in [0, 1]
    parts: list[str] = field(default_factory=list)  # "verdict", "execution": the parts that were used
    prompt_tokens: int = 0  # of the PRM's discriminator call
    completion_tokens: int = 0
    elapsed_ms: float = 0.0
    sql: str | None = None  # the partial query that ran

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def exec_score(ok: bool, empty: bool, all_null: bool) -> float:
    """The execution part: 0 for an error, `EXEC_EMPTY` for an empty or all-NULL result, 1 for rows."""
    if not ok:
        return 0.0
    return EXEC_EMPTY if (empty or all_null) else 1.0


def combine_parts(verdict_p: float | None, exec_part: float | None, how: str = DEFAULT_COMBINE) -> float:
    """The reward from the parts that are on (None: off). With one part, that part; with none, 0.5 (no signal)."""
    if how not in COMBINES:
        raise ValueError(f"unknown combine {how!r}; choose one of: {', '.join(COMBINES)}")
    if how == "verdict" and verdict_p is not None:
        return verdict_p
    if how == "execution" and exec_part is not None:
        return exec_part
    have = [x for x in (verdict_p, exec_part) if x is not None]
    if not have:
        return 0.5
    if len(have) == 1:
        return have[0]
    if how == "mean":
        return (have[0] + have[1]) / 2.0
    if how == "min":
        return min(have)
    return have[0] * have[1]


def _all_null(res: ExecutionResult) -> bool:
    return bool(res.rows) and all(v is None for row in res.rows for v in row)


def _short(text: str | None) -> str:
    t = " ".join((text or "failed").split())
    return t if len(t) <= ERROR_CHARS else t[:ERROR_CHARS - 3] + "..."


def _verdict_p(score: Any) -> float:
    """A Score's soft score as P(correct) in [0, 1]: the check mode's worst (a non-executable step) is 0, a missing
    verdict (the fallback, below 0) is 0.5 (no opinion)."""
    s = float(score.score)
    if s < 0.0:
        return 0.0 if getattr(score, "verdict_kind", None) == "not_executable" else 0.5
    return min(1.0, s)


class ProcessReward:
    """Scores one step of a CTE chain (see the module docstring). `discriminator`: any discriminator (usually
    `discriminators.step.step_discriminator(pair spec)`); `executor`: anything with `execute(db_id, sql, *,
    dialect) -> ExecutionResult` (the planner's sandboxed executor). A part without its object is off."""

    def __init__(self, *, discriminator: Any = None, executor: SupportsExecute | None = None,
                 use_verdict: bool = True, use_execution: bool = True, combine: str = DEFAULT_COMBINE,
                 limit: int = 100, kind: str = "cte"):
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; choose one of: {', '.join(COMBINES)}")
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.discriminator, self.executor = discriminator, executor
        self.use_verdict = bool(use_verdict and discriminator is not None)
        self.use_execution = bool(use_execution and executor is not None)
        self.combine, self.limit = combine, int(limit)
        self.kind = step_kind(kind)

    def run_partial(self, *, db_id: str, dialect: str,
                    step_texts: list[str]) -> tuple[str | None, ExecutionResult | None]:
        """(the partial query, its result) for steps 1..k (`StepKind.runnable`: the partial chain; a prose trace's
        SQL once written); a chain that cannot be made into a query is a failed result that says why (nothing runs).
        (None, None) for a prose step before the SQL: nothing to run yet, the execution part stays off."""
        try:
            sql = self.kind.runnable(step_texts, limit=self.limit, dialect=dialect)
            if sql is None:
                return None, None
        except Exception as e:  # noqa: BLE001 - any failure to build the query is a failed step, with its reason
            return None, ExecutionResult(ok=False, error=f"cannot build the partial query: {type(e).__name__}: {e}")
        return sql, self.executor.execute(db_id, sql, dialect=dialect)  # type: ignore[union-attr]

    def score(self, *, question: str, schema: str, evidence: str | None, db_id: str, dialect: str,
              step_texts: list[str], prev_rows: int | None = None) -> StepReward:
        """The reward of the last step of `step_texts` (steps 1..k); `prev_rows`: the previous step's `rows`."""
        from discriminators.base import DiscriminationRequest

        t0 = time.perf_counter()
        if not step_texts:
            raise ValueError("step_texts is empty: nothing to score")
        out = StepReward(score=0.5)
        res: ExecutionResult | None = None
        if self.use_execution:
            out.sql, res = self.run_partial(db_id=db_id, dialect=dialect, step_texts=step_texts)
        if res is not None:
            out.ok = bool(res.ok)
            if res.ok:
                out.rows = min(int(res.row_count), self.limit)
                out.empty = out.rows == 0
                out.all_null = _all_null(res)
                out.row_delta = None if prev_rows is None else out.rows - int(prev_rows)
            else:
                out.error = _short(f"{res.error_kind}: {res.error}" if res.error_kind else res.error)
            out.exec_score = exec_score(out.ok, bool(out.empty), bool(out.all_null))
            out.parts.append("execution")
        if self.use_verdict:
            req = DiscriminationRequest(question=question, schema=schema, evidence=evidence,
                                        sqls=[self.kind.joiner.join(step_texts)],
                                        executions=[res] if res is not None else None)
            (sc,) = self.discriminator.score(req)  # type: ignore[union-attr]
            out.verdict_p = _verdict_p(sc)
            out.verdict_kind = sc.verdict_kind
            out.prompt_tokens, out.completion_tokens = int(sc.prompt_tokens), int(sc.completion_tokens)
            out.parts.append("verdict")
        out.score = combine_parts(out.verdict_p, out.exec_score, self.combine)
        out.elapsed_ms = (time.perf_counter() - t0) * 1000.0
        return out


def features(r: StepReward) -> list[float]:
    """[verdict_p, ok, empty, all_null, log1p(rows), sign(row_delta)]: the inputs of the logistic regression that
    `benchmarks/prm_quality.py` compares the fixed combinations with (missing values as 0; verdict_p as 0.5)."""
    d = r.row_delta
    return [0.5 if r.verdict_p is None else r.verdict_p, float(bool(r.ok)), float(bool(r.empty)),
            float(bool(r.all_null)), math.log1p(r.rows or 0), 0.0 if not d else math.copysign(1.0, d)]
