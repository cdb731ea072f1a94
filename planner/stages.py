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
- `scoring_plan`: scales the work to the disagreement: one representative per result cluster (`core.clusters`)
  among the targets is scored and `copy_representative_scores` copies its score to the members
  (`Score.represented_by`); with a single executable cluster, a policy that declares it needs no scores then
  (`scores_if_unanimous=False`) skips the discriminator altogether.
- `select`: runs a policy (`planner.select`) on the non-rejected candidates and returns the index into the
  whole list; the policy reads them and returns a `Selection`, and this stage records its result clusters
  and ranking values in each candidate's `cluster` / `selection_score` (reset first, so it may run several
  times: one per policy, or after each cascade step). `ranker` is the caller's `planner.ranker.RankerState`
  (a Planner's own; None: no artifact, no priors).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import BackendError
from core.model import ErrorKind, ExecutionResult, Score, ScoredCandidate, TokenUsage
from discriminators.base import DiscriminationRequest
from planner.select import SelectionContext, executable, executable_only, needs_scores, scores_if_unanimous
from planner.select import select as run_policy

if TYPE_CHECKING:
    from planner.ranker import RankerState

ScoreMany = Callable[[Sequence[DiscriminationRequest]], Sequence[Sequence[Score]]]


class SupportsExecute(Protocol):
    def execute(self, db_id: str, sql: str, *, dialect: str = "sqlite") -> ExecutionResult: ...


# ---------------------------------------------------------------------------------------------- accounting
def usage_entry(usage: dict, model: str, role: str, spec: Any) -> TokenUsage:
    """The plan's `TokenUsage` of (model, role) in `usage` ((model, role) -> (TokenUsage, ModelSpec)), created
    on first use; the caller adds its tokens and calls (priced from the spec when the plan is assembled)."""
    key = (model, role)
    if key not in usage:
        usage[key] = (TokenUsage(model=model, role=role), spec)
    return usage[key][0]


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


# ---------------------------------------------------------------------------------------------- scale to disagreement
@dataclass
class ScoringPlan:
    """What the discriminate stage scores: `indices` (one per result cluster, plus non-executable targets),
    `copies` (member -> the candidate whose score it takes), `clusters` (executable clusters among the targets),
    or `skipped` (why nothing is scored)."""

    indices: list[int]
    copies: dict[int, int]
    clusters: int
    skipped: str | None = None


def scoring_plan(cands: Sequence[ScoredCandidate], targets: Sequence[int], policy: str, *,
                 per_cluster: bool = True, scored_by: str | None = None) -> ScoringPlan:
    """Scale the discriminator's work to the disagreement among `targets` (from `score_targets`):
    - a single executable result cluster among all candidates and a policy with `scores_if_unanimous=False`:
      nothing is scored (`skipped` says why);
    - `per_cluster`: the first target of each result cluster is scored and the other targets copy its score; a
      cluster member already scored by `scored_by` (an earlier cascade step) is reused instead of a new call;
      non-executable targets are scored one by one."""
    from core.clusters import cluster  # the one result-clustering rule

    cl = cluster(cands)
    t = list(targets)
    n_clusters = len({cl.of[i] for i in t if cl.of[i] is not None})
    if t and len(cl) == 1 and not scores_if_unanimous(policy):
        n = len(cl.clusters[0].members)
        return ScoringPlan([], {}, 1, f"all {n} executable candidate(s) share one result; policy {policy!r} needs "
                                      "no scores to choose among them")
    if not per_cluster:
        return ScoringPlan(t, {}, n_clusters)
    rep: dict[int, int] = {}
    if scored_by is not None:
        for i, sc in enumerate(cands):
            k = cl.of[i]
            if k is not None and k not in rep and any(s.discriminator == scored_by and s.represented_by is None
                                                      for s in sc.scores):
                rep[k] = i
    indices: list[int] = []
    copies: dict[int, int] = {}
    for i in t:
        k = cl.of[i]
        if k is None:
            indices.append(i)
        elif k in rep:
            copies[i] = rep[k]
        else:
            rep[k] = i
            indices.append(i)
    return ScoringPlan(indices, copies, n_clusters)


def copy_representative_scores(cands: Sequence[ScoredCandidate], copies: dict[int, int], scored_by: str) -> None:
    """Give each member in `copies` its representative's latest score of `scored_by`, marked `represented_by`."""
    for i, r in copies.items():
        s = next((s for s in reversed(cands[r].scores) if s.discriminator == scored_by), None)
        if s is not None:
            cands[i].scores.append(s.model_copy(update={"represented_by": r}))
