"""Selection policies on hand-built candidates."""

import pytest

from core.model import Candidate, ErrorKind, ExecutionResult, Score, ScoredCandidate
from planner.select import (
    POLICIES,
    PolicyError,
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
    assert select("rerank", cands)[0] == 1
    assert select("check-rerank", cands)[0] == 2


def test_vote_picks_largest_cluster_counting_duplicates_and_first_on_ties():
    cands = [sc("a", "r1"), sc("b", "r2"), sc("c", "r2"), sc("d", "r1", dup=2)]
    i, reason = select("vote", cands)
    assert i == 0 and "3 of 5" in reason  # r1: 1 + 2 duplicates beats r2: 2 (5 samples)
    assert [c.cluster for c in cands] == [0, 1, 1, 0]
    tie = [sc("a", "r1"), sc("b", "r2")]
    assert select("vote", tie)[0] == 0


def test_hybrid_weights_clusters_by_summed_scores():
    cands = [sc("a", "r1", 0.9), sc("b", "r2", 0.5), sc("c", "r2", 0.45), sc("d", "r2", 0.2)]
    i, _ = select("hybrid", cands)
    assert i == 1  # r2 sums to 1.15 > 0.9; best member of r2 is b
    only_one = [sc("a", "r1", 0.9), sc("b", "r2", 0.5)]
    assert select("hybrid", only_one)[0] == 0


@pytest.mark.parametrize("policy", ["check-rerank", "vote", "hybrid", "ranker"])
def test_nothing_executes_means_nothing_chosen(policy):
    i, reason = select(policy, [sc("a", None, 0.9), sc("b", None, 0.8)])
    assert i is None and "no candidate executes" in reason


def test_all_policies_registered():
    assert set(POLICIES.names()) == {"first", "rerank", "check-rerank", "vote", "hybrid", "ranker"}
    assert policy_names()[0] == "first"  # registration order: the baseline first (the order of eval reports)
    assert all(POLICIES.meta(p).get("summary") for p in policy_names())


def test_first_is_one_more_policy():
    assert not needs_scores("first") and not executable_only("first")
    assert select("first", [sc("a", None), sc("b", "r1")]) == (0, "first of 2 candidates")  # no check
    assert select("first", [])[0] is None


def test_metadata_matches_what_each_policy_does():
    assert [p for p in policy_names() if needs_scores(p)] == ["hybrid", "rerank", "check-rerank"]
    assert [p for p in policy_names() if not executable_only(p)] == ["first", "rerank"]
    assert reported_policies(True) == policy_names()
    assert reported_policies(False) == ["first", "vote", "hybrid", "ranker"]
    assert reported_policies(False, ["rerank", "vote"]) == ["vote"]


def test_hybrid_without_scores_is_vote():
    """`hybrid` declares without_scores="vote": on unscored candidates it chooses what vote chooses."""
    import random

    rng = random.Random(0)
    for _ in range(200):
        cands = [sc(f"s{k}", rng.choice([None, "r1", "r2", "r3"]), dup=rng.randint(1, 3)) for k in range(rng.randint(1, 7))]
        assert select("hybrid", cands)[0] == select("vote", cands)[0]


def test_check_policy_usage_errors_list_the_choices():
    assert check_policy("vote", has_discriminator=False) == "vote"
    with pytest.raises(PolicyError, match="choose one of: first, vote, hybrid, rerank, check-rerank, ranker"):
        check_policy("best")
    with pytest.raises(PolicyError, match="needs a discriminator.*choose one of: first, vote, ranker$"):
        check_policy("rerank", has_discriminator=False)


def test_a_policy_that_needs_the_question_gets_it_and_the_others_do_not(monkeypatch):
    """`needs_question` policies (the ranker) get the question's text from the pipeline's select stage."""
    from planner import stages

    seen = []

    def by_question(cs, question=""):
        seen.append(question)
        return 0, "first"

    monkeypatch.setitem(POLICIES._items, "test-q", by_question)
    monkeypatch.setitem(POLICIES._meta, "test-q", {"needs_question": True, "executable_only": True})
    assert stages.select([sc("a", "r1")], "test-q", "How many singers?")[0] == 0
    assert seen == ["How many singers?"]
    assert POLICIES.meta("ranker")["needs_question"] and not POLICIES.meta("vote").get("needs_question")
    assert select("vote", [sc("a", "r1")], "ignored")[0] == 0  # a policy without it takes candidates only
