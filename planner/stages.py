"""The execute, discriminate and select stages, as units both the pipeline (`planner.pipeline`, POST /plan)
and eval replay (`eval.replay`) run. Every stage works on a `list[ScoredCandidate]` (one question's
candidates) and fills it in place:

- `execute`: runs candidates through an executor (anything with `execute(db_id, sql, *, dialect)`);
  a rejected candidate is never run (it gets a `REJECTED` result), a blank one gets a failed result.
  `memo` shares one result between identical SQLs (replay pools repeat them); `check` is called before
  each candidate (the pipeline's deadline check).
- discriminate: `score_targets` says which candidates a policy can use scores of (derived from the
  policy's `needs_scores` / `executable_only`: none, the executable ones, or every non-rejected one);
  `score_job` turns one question's targets into a `ScoreJob` (its distinct SQLs and their
  `DiscriminationRequest`); `discriminate` scores several questions' jobs with ONE call of a scoring
  callable (`score_many(requests) -> scores per request`: a discriminator's `score_many` for
  cross-question batching, or its `score` per request) and appends each score to every target candidate
  with that SQL. `on_score` lets a caller keep a cache (replay's `ScoresCache`).
- `select`: runs a policy (`planner.select`) on the non-rejected candidates and returns the index into the
  whole list; the policy reads them and returns a `Selection`, and this stage records its result clusters
  and ranking values in each candidate's `cluster` / `selection_score` (reset first, so it may run several
  times: one per policy, or after each cascade step). `ranker` is the caller's `planner.ranker.RankerState`
  (a Planner's own; None: no artifact, no priors).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from core.errors import BackendError
from core.model import ErrorKind, ExecutionResult, Score, ScoredCandidate
from discriminators.base import DiscriminationRequest
from planner.select import SelectionContext, executable, executable_only, needs_scores
from planner.select import select as run_policy

if TYPE_CHECKING:
    from planner.ranker import RankerState

ScoreMany = Callable[[Sequence[DiscriminationRequest]], Sequence[Sequence[Score]]]


class SupportsExecute(Protocol):
    def execute(self, db_id: str, sql: str, *, dialect: str = "sqlite") -> ExecutionResult: ...


# ---------------------------------------------------------------------------------------------- execute
def execute(cands: Sequence[ScoredCandidate], executor: SupportsExecute, db_id: str, *,
            indices: Iterable[int] | None = None, engine: str = "duckdb",
            memo: dict[str, ExecutionResult] | None = None, check: Callable[[], None] | None = None) -> None:
    """Set `execution` of the candidates at `indices` (default: all). Rejected candidates get a REJECTED
    result and blank ones a failed one without running; `memo` (SQL -> result) reuses results of identical
    SQLs; `check()` runs before each candidate (it may raise, e.g. a deadline)."""
    for i in range(len(cands)) if indices is None else indices:
        if check is not None:
            check()
        sc = cands[i]
        c = sc.candidate
        if c.rejected:
            sc.execution = ExecutionResult(ok=False, error_kind=ErrorKind.REJECTED, error=c.rejected, engine=engine)
            continue
        if memo is not None and c.sql in memo:
            sc.execution = memo[c.sql]
            continue
        if not c.sql.strip():
            res = ExecutionResult(ok=False, error="empty", engine=engine)
        else:
            res = executor.execute(db_id, c.sql, dialect=c.dialect)
        if memo is not None:
            memo[c.sql] = res
        sc.execution = res


# ---------------------------------------------------------------------------------------------- discriminate
def score_targets(cands: Sequence[ScoredCandidate], policies: str | Iterable[str], *,
                  scored_by: str | None = None) -> list[int]:
    """Indices of the candidates whose scores `policies` (one name or several) can use: none for a policy
    that needs no scores, the executable ones for an executable-only policy, else every non-rejected one.
    `scored_by`: leave out candidates that already carry a score of that discriminator."""
    pols = [policies] if isinstance(policies, str) else list(policies)
    scoring = [p for p in pols if needs_scores(p)]
    if not scoring:
        return []
    any_candidate = any(not executable_only(p) for p in scoring)
    out = [i for i, sc in enumerate(cands)
           if not sc.candidate.rejected and (any_candidate or executable(sc))]
    if scored_by is not None:
        out = [i for i in out if not any(s.discriminator == scored_by for s in cands[i].scores)]
    return out


@dataclass
class ScoreJob:
    """One question's candidates to score: its distinct SQLs, the request for them, where the scores go."""

    cands: Sequence[ScoredCandidate]
    indices: list[int]
    sqls: list[str]
    request: DiscriminationRequest
    on_score: Callable[[str, Score], None] | None = field(default=None, repr=False)


def score_job(cands: Sequence[ScoredCandidate], indices: Iterable[int], *, question: str, schema: str,
              evidence: str | None = None, on_score: Callable[[str, Score], None] | None = None) -> ScoreJob | None:
    """A ScoreJob for the candidates at `indices` (each distinct SQL once, with its execution), or None
    when there is nothing to score."""
    idx = list(indices)
    first_of: dict[str, int] = {}
    for i in idx:
        first_of.setdefault(cands[i].candidate.sql, i)
    if not first_of:
        return None
    sqls = list(first_of)
    req = DiscriminationRequest(question=question, schema=schema, evidence=evidence, sqls=sqls,
                                executions=[cands[first_of[s]].execution for s in sqls])
    return ScoreJob(cands=cands, indices=idx, sqls=sqls, request=req, on_score=on_score)


def discriminate(jobs: Sequence[ScoreJob], score_many: ScoreMany, *, name: str | None = None,
                 checkpoint: str | None = None) -> list[list[Score]]:
    """Score every job with one `score_many` call; append each score to the job's target candidates with
    that SQL and pass it to `on_score`. With `name`, scores are labelled with the discriminator's name (and
    `checkpoint` when the backend set none). Returns the scores per job (one per distinct SQL)."""
    if not jobs:
        return []
    results = list(score_many([j.request for j in jobs]))
    label = name if name is not None else "discriminator"
    if len(results) != len(jobs):
        raise BackendError(f"discriminator {label!r} returned scores for {len(results)} requests, not {len(jobs)}")
    out: list[list[Score]] = []
    for job, scores in zip(jobs, results, strict=True):
        scores = list(scores)
        if len(scores) != len(job.sqls):
            raise BackendError(f"discriminator {label!r} returned {len(scores)} scores for {len(job.sqls)} SQLs")
        if name is not None:
            scores = [s.model_copy(update={"discriminator": name, "checkpoint": s.checkpoint or checkpoint})
                      for s in scores]
        by_sql = dict(zip(job.sqls, scores, strict=True))
        for i in job.indices:
            job.cands[i].scores.append(by_sql[job.cands[i].candidate.sql])
        if job.on_score is not None:
            for sql, s in by_sql.items():
                job.on_score(sql, s)
        out.append(scores)
    return out


# ---------------------------------------------------------------------------------------------- select
def select(cands: Sequence[ScoredCandidate], policy: str, question: str = "", *,
           ranker: RankerState | None = None) -> tuple[int | None, str]:
    """Run `policy` on the non-rejected candidates (rejected ones are never eligible); returns (index into
    `cands` or None, reason). Records the policy's clusters and ranking values in every candidate's `cluster`
    and `selection_score` (None for the others). `question` is the question's text (the ranker's literal and
    result-shape cues), `ranker` the caller's ranker state."""
    for sc in cands:
        sc.selection_score = None
        sc.cluster = None
    eligible = [i for i, sc in enumerate(cands) if not sc.candidate.rejected]
    if not eligible:
        return None, "no candidates"
    sel = run_policy(policy, [cands[i] for i in eligible], SelectionContext(question=question, ranker=ranker))
    for i, k in zip(eligible, sel.clusters, strict=False):
        cands[i].cluster = k
    for i, v in zip(eligible, sel.scores, strict=False):
        cands[i].selection_score = v
    return (None if sel.index is None else eligible[sel.index]), sel.reason
