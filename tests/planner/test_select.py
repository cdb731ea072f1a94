"""Selection policies on hand-built candidates."""

import pytest

from core.model import Candidate, ErrorKind, ExecutionResult, Score, ScoredCandidate
from planner.select import (
    POLICIES,
    PolicyError,
    PolicyInfo,
    Selection,
    SelectionContext,
    check_policy,
    executable_only,
    needs_scores,
    policy_names,
    reported_policies,
    select,
)


def sc(sql, fp=None, score=None, dup=1):
    ex = (ExecutionResult(ok=True, fingerprint=fp) if fp else
          ExecutionResult(ok=False, error_kind=ErrorKind.RUNTIME, error="boom"))
    return ScoredCandidate(candidate=Candidate(sql=sql, source="t", duplicates=dup), execution=ex,
                           scores=[Score(score=score)] if score is not None else [])


def test_rerank_can_pick_non_executable_but_check_rerank_cannot():
    cands = [sc("a", "r1", 0.4), sc("b", None, 0.9), sc("c", "r2", 0.6)]
    assert select("rerank", cands).index == 1
    assert select("check-rerank", cands).index == 2


def test_vote_picks_largest_cluster_counting_duplicates_and_first_on_ties():
    cands = [sc("a", "r1"), sc("b", "r2"), sc("c", "r2"), sc("d", "r1", dup=2)]
    sel = select("vote", cands)
    assert sel.index == 0 and "3 of 5" in sel.reason  # r1: 1 + 2 duplicates beats r2: 2 (5 samples)
    assert sel.clusters == (0, 1, 1, 0) and sel.scores == (3.0, 2.0, 2.0, 3.0)
    assert all(c.cluster is None for c in cands)  # the policy reports clusters, the select stage records them
    tie = [sc("a", "r1"), sc("b", "r2")]
    assert select("vote", tie).index == 0


def test_hybrid_weights_clusters_by_summed_scores():
    cands = [sc("a", "r1", 0.9), sc("b", "r2", 0.5), sc("c", "r2", 0.45), sc("d", "r2", 0.2)]
    assert select("hybrid", cands).index == 1  # r2 sums to 1.15 > 0.9; best member of r2 is b
    only_one = [sc("a", "r1", 0.9), sc("b", "r2", 0.5)]
    assert select("hybrid", only_one).index == 0


@pytest.mark.parametrize("policy", ["check-rerank", "vote", "hybrid", "ranker"])
def test_nothing_executes_means_nothing_chosen(policy):
    sel = select(policy, [sc("a", None, 0.9), sc("b", None, 0.8)])
    assert sel.index is None and "no candidate executes" in sel.reason


def test_all_policies_registered():
    assert set(POLICIES.names()) == {"first", "rerank", "check-rerank", "vote", "hybrid", "ranker", "auto"}
    assert policy_names()[0] == "first"  # registration order: the baseline first (the order of eval reports)
    assert all(POLICIES.info(p).summary for p in policy_names())


def test_first_is_one_more_policy():
    assert not needs_scores("first") and not executable_only("first")
    assert select("first", [sc("a", None), sc("b", "r1")]) == Selection(0, "first of 2 candidates")  # no check
    assert select("first", []).index is None


def test_metadata_matches_what_each_policy_does():
    assert [p for p in policy_names() if needs_scores(p)] == ["hybrid", "rerank", "check-rerank"]
    assert [p for p in policy_names() if not executable_only(p)] == ["first", "rerank", "auto"]
    assert reported_policies(True) == [p for p in policy_names() if p != "auto"]  # auto picks among the reported
    assert reported_policies(False) == ["first", "vote", "hybrid", "ranker"]
    assert reported_policies(False, ["rerank", "vote"]) == ["vote"]


def test_hybrid_without_scores_is_vote():
    """`hybrid` declares without_scores="vote": on unscored candidates it chooses what vote chooses."""
    import random

    rng = random.Random(0)
    for _ in range(200):
        cands = [sc(f"s{k}", rng.choice([None, "r1", "r2", "r3"]), dup=rng.randint(1, 3)) for k in range(rng.randint(1, 7))]
        assert select("hybrid", cands).index == select("vote", cands).index


def test_check_policy_usage_errors_list_the_choices():
    assert check_policy("vote", has_discriminator=False) == "vote"
    with pytest.raises(PolicyError, match="choose one of: first, vote, hybrid, rerank, check-rerank, ranker"):
        check_policy("best")
    with pytest.raises(PolicyError, match="needs a discriminator.*choose one of: first, vote, ranker, auto$"):
        check_policy("rerank", has_discriminator=False)


def test_every_policy_gets_the_selection_context_and_the_stage_records_its_answer(monkeypatch):
    """Policies are called as policy(cands, ctx): the question's text and the caller's ranker state reach them
    through `SelectionContext`; the select stage writes the returned clusters/scores on the candidates."""
    from planner import stages
    from planner.ranker import RankerState

    seen = []

    def by_question(cs, ctx):
        seen.append(ctx)
        return Selection(0, "first", (7,), (0.25,))

    monkeypatch.setitem(POLICIES._items, "test-q", by_question)
    monkeypatch.setitem(POLICIES._info, "test-q", PolicyInfo(summary="test", needs_scores=False))
    state = RankerState()
    cands = [sc("a", "r1")]
    assert stages.select(cands, "test-q", "How many singers?", ranker=state)[0] == 0
    assert seen == [SelectionContext(question="How many singers?", ranker=state)]
    assert cands[0].cluster == 7 and cands[0].selection_score == 0.25
    assert select("vote", [sc("a", "r1")]).index == 0  # without a context: no question, no ranker state


def _cands_for_every_policy():
    import random

    rng = random.Random(3)
    out = []
    for _ in range(40):
        cs = [sc(f"s{k}", rng.choice([None, "r1", "r2", "r3"]), rng.choice([None, 0.1, 0.5, 0.9]), rng.randint(0, 3))
              for k in range(rng.randint(0, 6))]
        if cs and rng.random() < 0.3:
            cs[0].candidate.rejected = "not a query"
        out.append(cs)
    return out


@pytest.mark.parametrize("policy", policy_names())
def test_policies_do_not_mutate_their_input(policy):
    """A policy reads the candidates and returns a Selection; it never writes them (no copies needed)."""
    from planner.ranker import RankerState

    state = RankerState()
    for cands in _cands_for_every_policy():
        before = [c.model_dump() for c in cands]
        select(policy, cands, SelectionContext(question="How many singers are there?", ranker=state))
        assert [c.model_dump() for c in cands] == before
