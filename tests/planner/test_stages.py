"""planner.stages: the execute, discriminate and select units shared by the pipeline and eval replay, on the
real demo database and the real sandboxed executor. Scoring callables here are small deterministic
functions (the stage's contract is the callable; the real model runs in the pipeline tests)."""

from __future__ import annotations

import pytest

from core.errors import BackendError
from core.model import Candidate, ErrorKind, ExecutionResult, Score, ScoredCandidate
from planner import stages
from planner.select import POLICIES, policy_names

GOOD = "SELECT count(*) FROM singer WHERE age > 30"
OTHER = "SELECT count(*) FROM singer"
BAD = "SELECT nope FROM singer"


def cands(*sqls, rejected=()):
    return [ScoredCandidate(candidate=Candidate(sql=s, source="t", sample_index=k,
                                                rejected="not a query" if k in rejected else None))
            for k, s in enumerate(sqls)]


class CountingExecutor:
    def __init__(self, inner):
        self.inner, self.sqls = inner, []

    def execute(self, db_id, sql, *, dialect="sqlite"):
        self.sqls.append(sql)
        return self.inner.execute(db_id, sql, dialect=dialect)


def test_execute_runs_checks_rejects_and_memoizes(executor):
    cs = cands(GOOD, BAD, "DROP TABLE singer", "  ", GOOD, rejected={2})
    ex = CountingExecutor(executor)
    memo: dict[str, ExecutionResult] = {}
    stages.execute(cs, ex, "demo", engine="sqlite", memo=memo)
    assert ex.sqls == [GOOD, BAD]  # the rejected and the blank one never run; the repeated GOOD runs once
    assert cs[0].execution.ok and cs[0].execution.fingerprint
    assert not cs[1].execution.ok and cs[1].execution.error_kind is not None
    assert cs[2].execution.error_kind == ErrorKind.REJECTED and cs[2].execution.error == "not a query"
    assert not cs[3].execution.ok and cs[3].execution.error == "empty"
    assert cs[4].execution is cs[0].execution


def test_execute_indices_and_check(executor):
    cs = cands(GOOD, OTHER, BAD)
    stages.execute(cs, executor, "demo", indices=[1])
    assert cs[0].execution is None and cs[1].execution.ok and cs[2].execution is None

    seen = []

    def check():
        seen.append(len(seen))
        if len(seen) == 2:
            raise TimeoutError("deadline")

    with pytest.raises(TimeoutError):
        stages.execute(cs, executor, "demo", check=check)
    assert cs[0].execution.ok and cs[2].execution is None  # stopped before the second candidate


def test_score_targets_follow_the_policy_metadata(executor):
    cs = cands(GOOD, BAD, "DROP TABLE singer", OTHER, rejected={2})
    stages.execute(cs, executor, "demo")
    for p in policy_names():
        info = POLICIES.info(p)
        want = ([] if not info.needs_scores else [0, 3] if info.executable_only else [0, 1, 3])
        assert stages.score_targets(cs, p) == want, p
    assert stages.score_targets(cs, ["vote", "check-rerank"]) == [0, 3]
    assert stages.score_targets(cs, ["check-rerank", "rerank"]) == [0, 1, 3]  # the union
    cs[0].scores.append(Score(score=0.9, discriminator="d"))
    assert stages.score_targets(cs, "rerank", scored_by="d") == [1, 3]
    assert stages.score_targets(cs, "rerank", scored_by="other") == [0, 1, 3]


def rule_scores(reqs):
    """Score = 0.9 for SQL with a WHERE clause, else 0.2; records each call's batch."""
    rule_scores.calls.append(len(reqs))
    return [[Score(score=0.9 if "WHERE" in s else 0.2, verdict="WHERE" in s) for s in r.sqls] for r in reqs]


def test_discriminate_batches_questions_dedups_sqls_and_reports(executor):
    rule_scores.calls = []
    q1 = cands(GOOD, OTHER, GOOD, BAD)
    q2 = cands(OTHER)
    for c in (q1, q2):
        stages.execute(c, executor, "demo", memo={})
    cached: list[tuple[str, float]] = []
    j1 = stages.score_job(q1, stages.score_targets(q1, "rerank"), question="q1", schema="s",
                          on_score=lambda sql, s: cached.append((sql, s.score)))
    j2 = stages.score_job(q2, [0], question="q2", schema="s", evidence="hint")
    assert j1.sqls == [GOOD, OTHER, BAD] and j1.request.executions[0] is q1[0].execution
    assert j2.request.evidence == "hint"
    assert stages.score_job(q2, [], question="q", schema="s") is None

    out = stages.discriminate([j1, j2], rule_scores, name="d", checkpoint="ck")
    assert rule_scores.calls == [2]  # both questions in one call
    assert [[s.score for s in o] for o in out] == [[0.9, 0.2, 0.2], [0.2]]
    assert [c.scores[-1].score for c in q1] == [0.9, 0.2, 0.9, 0.2]  # the repeated SQL shares its score
    assert all(c.scores[-1].discriminator == "d" and c.scores[-1].checkpoint == "ck" for c in q1 + q2)
    assert cached == [(GOOD, 0.9), (OTHER, 0.2), (BAD, 0.2)]
    assert stages.discriminate([], rule_scores) == [] and rule_scores.calls == [2]

    unlabelled = cands(GOOD)
    stages.discriminate([stages.score_job(unlabelled, [0], question="q", schema="s")], rule_scores)
    assert unlabelled[0].scores[-1].discriminator == ""  # no name: the scores are kept as returned


def test_discriminate_rejects_a_wrong_number_of_scores():
    c = cands(GOOD, OTHER)
    job = stages.score_job(c, [0, 1], question="q", schema="s")
    with pytest.raises(BackendError, match="returned 1 scores for 2 SQLs"):
        stages.discriminate([job], lambda reqs: [[Score(score=0.5)] for _ in reqs], name="d")
    with pytest.raises(BackendError, match="for 0 requests"):
        stages.discriminate([job], lambda reqs: [], name="d")


def test_select_skips_rejected_maps_indices_and_resets(executor):
    cs = cands("DROP TABLE singer", BAD, GOOD, OTHER, GOOD + " ", rejected={0})
    stages.execute(cs, executor, "demo")
    for c, s in zip(cs, [0.99, 0.95, 0.3, 0.6, 0.4], strict=True):
        c.scores.append(Score(score=s))
    assert stages.select(cs, "first") == (1, "first of 4 candidates")  # the rejected one is never eligible
    assert stages.select(cs, "rerank")[0] == 1  # best score among non-rejected, executable or not
    assert stages.select(cs, "check-rerank")[0] == 3
    i, _ = stages.select(cs, "vote")
    assert i == 2 and cs[2].cluster == cs[4].cluster  # GOOD twice is the largest result cluster
    assert stages.select(cs, "hybrid")[0] == 4  # cluster {2, 4} sums 0.7 > 0.6; its best member is 4
    stages.select(cs, "first")
    assert all(c.cluster is None and c.selection_score is None for c in cs)  # reset before each run
    assert stages.select(cands(BAD, rejected={0}), "vote") == (None, "no candidates")
