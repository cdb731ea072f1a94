"""planner.ranker: label-free priors, cluster features, the policy, the artifact, confidence and abstention."""

from __future__ import annotations

import random

import pytest

from core.model import Candidate, ExecutionResult, Plan, Question, Score, ScoredCandidate
from planner import ranker
from planner.select import POLICIES, SelectionContext, check_policy, executable_only, needs_scores, select


def sc(sql: str, source: str, fp: str | None, rows=((1,),), score: float | None = None) -> ScoredCandidate:
    ex = (ExecutionResult(ok=True, fingerprint=fp, columns=["c"] * len(rows[0]) if rows else ["c"],
                          rows=[list(r) for r in rows], row_count=len(rows))
          if fp is not None else ExecutionResult(ok=False, error="no such table"))
    return ScoredCandidate(candidate=Candidate(sql=sql, source=source), execution=ex,
                           scores=[Score(score=score)] if score is not None else [])


@pytest.fixture
def state() -> ranker.RankerState:
    """A ranker state of its own (a Planner owns one; there is no process-global one to clean up)."""
    return ranker.RankerState()


def pick(cands, st: ranker.RankerState | None = None, question: str = ""):
    return select("ranker", cands, SelectionContext(question=question, ranker=st))


def test_agreement_priors_rank_reliable_sources_above_noise_without_labels():
    rng = random.Random(0)
    acc = {"good1": 0.9, "good2": 0.85, "ok1": 0.7, "ok2": 0.65, "noise1": 0.2, "noise2": 0.25}
    qs = []
    for q in range(200):
        d: dict[str, str | None] = {s: f"t{q}" if rng.random() < a else f"{s}{q}{rng.randrange(3)}"
                                    for s, a in acc.items()}
        d["broken"] = None
        qs.append(d)
    pri = ranker.agreement_priors(qs)
    assert min(pri["good1"], pri["good2"]) > max(pri["ok1"], pri["ok2"])
    assert min(pri["ok1"], pri["ok2"]) > max(pri["noise1"], pri["noise2"]) > pri["broken"]


def test_policy_is_registered_with_metadata_and_needs_no_discriminator():
    assert "ranker" in POLICIES.names()
    assert not needs_scores("ranker") and executable_only("ranker")
    assert check_policy("ranker", has_discriminator=False) == "ranker"


def test_without_artifact_the_ranker_is_a_prior_weighted_vote(state):
    cands = [sc("SELECT a", "weak1", "x"), sc("SELECT b", "weak2", "x"), sc("SELECT c", "strong", "y"),
             sc("SELECT d", "weak3", None)]
    sel = pick(cands, state)
    assert sel.index in (0, 1) and "prior-weighted vote" in sel.reason  # equal priors: the larger cluster
    assert sel.clusters == (0, 0, 1, None)
    state._outcomes.update({"strong": [50, 50], "weak1": [5, 50], "weak2": [5, 50]})
    state._priors = None
    assert pick(cands, state).index == 2  # logged outcomes make the strong source outweigh two weak ones
    assert pick(cands).index in (0, 1)  # another state (here: none) does not see those outcomes
    assert pick([sc("x", "a", None)], state).index is None


def test_cluster_features_need_no_gold_and_read_result_shape_and_cues():
    cands = [sc("SELECT count(*) FROM t", "a", "x", rows=((3,),)), sc("SELECT name FROM t", "b", "y",
                                                                     rows=(("p",), ("q",))),
             sc("SELECT NULL", "c", "z", rows=((None,),))]
    cl = ranker.cluster_features(cands, "How many singers are there?", {})
    assert len(cl.members) == 3 and all(len(r) == len(ranker.FEATURES) for r in cl.rows)
    f = [dict(zip(ranker.FEATURES, r, strict=True)) for r in cl.rows]
    assert f[0]["howmany_one_value"] == 1.0 and f[1]["howmany_one_value"] == 0.0
    assert f[0]["sql_agg"] == 1.0 and f[2]["all_null"] == 1.0
    lit = ranker.literal_features("Singers older than 30 from 'France'", "SELECT * FROM s WHERE age > 30 AND c = 'France'")
    assert lit["lit_q_numbers_in_sql"] == 1.0 and lit["lit_sql_strings_in_q"] == 1.0


def _tiny_artifact(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(1)
    X = [[rng.random() for _ in ranker.FEATURES] for _ in range(60)]
    y = [int(r[0] > 0.5) for r in X]
    model = LogisticRegression().fit(X, y)
    return ranker.RankerArtifact(model=model, features=list(ranker.FEATURES), prior_mode="agreement")


def test_artifact_roundtrip_and_clear_errors(tmp_path):
    art = _tiny_artifact(tmp_path)
    p = art.save(tmp_path / "r.joblib")
    back = ranker.RankerArtifact.load(p)
    assert back.features == list(ranker.FEATURES) and back.version == ranker.FORMAT_VERSION
    with pytest.raises(FileNotFoundError):
        ranker.RankerArtifact.load(tmp_path / "missing.joblib")
    import joblib

    joblib.dump({"format": "something-else"}, tmp_path / "bad.joblib")
    with pytest.raises(ValueError, match="not a sqlarbiter ranker"):
        ranker.RankerArtifact.load(tmp_path / "bad.joblib")
    d = {"format": "sqlarbiter-ranker", **art.__dict__, "features": ["other"]}
    joblib.dump(d, tmp_path / "old.joblib")
    with pytest.raises(ValueError, match="feature list"):
        ranker.RankerArtifact.load(tmp_path / "old.joblib")
    state = ranker.RankerState()
    state.load(p)
    assert state.artifact is not None
    sel = pick([sc("SELECT 1", "a", "x"), sc("SELECT 2", "b", "y")], state)
    assert sel.index in (0, 1) and sel.reason.startswith("ranker:")
    assert state.reload() is not None


def test_confidence_and_abstention_on_a_plan():
    cands = [sc("SELECT 1", "a", "x"), sc("SELECT 2", "b", "y"), sc("SELECT 3", "c", "z"), sc("bad", "d", None)]
    plan = Plan(question=Question(text="q", db_id="demo"), candidates=cands, chosen=0, chosen_sql="SELECT 1",
                status="ok", reason="r", policy="vote")
    ranker.annotate_plan(plan, "vote")
    assert plan.confidence == pytest.approx(0.25)  # no artifact: the vote share
    ranker.apply_abstention(plan, 0.2)
    assert plan.status == "ok"
    ranker.apply_abstention(plan, 0.5)
    assert plan.status == "low_confidence" and plan.chosen == 0 and "abstain_below" in plan.reason
    none = Plan(question=Question(text="q", db_id="demo"), candidates=cands, chosen=None, status="no_candidates")
    ranker.annotate_plan(none, "vote")
    ranker.apply_abstention(none, 0.9)
    assert none.confidence is None and none.status == "no_candidates"
    assert Plan.model_validate_json(plan.model_dump_json()) == plan


def test_cascade_escalates_on_low_confidence():
    from core.model import RouteDecision
    from routing.cascade import CascadeRouter

    r = CascadeRouter(tau=0.0, vote_margin=0.0, min_confidence=0.6)
    plan = Plan(question=Question(text="q", db_id="demo"), candidates=[sc("SELECT 1", "a", "x")], chosen=0,
                confidence=0.4, route=RouteDecision(pair="p", generator="g", discriminator="d", steps=["p", "q"]))
    esc = r.should_escalate(plan, 0, ["p", "q"])
    assert esc.escalate and "confidence" in esc.reason and esc.signals["confidence"] == 0.4
    plan.confidence = 0.9
    assert not r.should_escalate(plan, 0, ["p", "q"]).escalate
    with pytest.raises(ValueError):
        CascadeRouter(min_confidence=2.0)


def test_a_missing_configured_artifact_fails_at_startup(tmp_path):
    from planner.config import ConfigError, config_from_dict
    from planner.pipeline import Planner

    cfg = config_from_dict({"defaults": {"ranker": str(tmp_path / "missing.joblib")}}, env={})
    with pytest.raises(ConfigError, match="defaults.ranker"):
        Planner(cfg)


def test_two_planners_in_one_process_do_not_share_a_ranker(tmp_path):
    """The ranker's artifact and cross-question evidence belong to a Planner: loading, reloading, observing
    and feedback in one Planner leave another untouched, and each Planner's plans select with its own."""
    from planner import stages
    from planner.config import config_from_dict
    from planner.pipeline import Planner

    p = _tiny_artifact(tmp_path).save(tmp_path / "r.joblib")
    with_art = Planner(config_from_dict({"defaults": {"ranker": str(p)}}, env={}))
    plain = Planner(config_from_dict({}, env={}))
    try:
        assert with_art.ranker_state is not plain.ranker_state
        assert with_art.ranker_state.artifact is not None and plain.ranker_state.artifact is None
        cands = [sc("SELECT 1", "a", "x"), sc("SELECT 2", "b", "y"), sc("SELECT 3", "c", "y")]
        assert stages.select(cands, "ranker", "q", ranker=with_art.ranker_state)[1].startswith("ranker:")
        assert "prior-weighted vote" in stages.select(cands, "ranker", "q", ranker=plain.ranker_state)[1]
        with_art.reload_ranker()
        assert plain.ranker_state.artifact is None and plain.ranker_state.path is None
        with_art.ranker_state.observe(cands)
        with_art.ranker_state.feedback(cands, 0, True)
        assert plain.ranker_state.priors() == {} and with_art.ranker_state.priors()
        before = with_art.ranker_state.priors()
        plan = plain.plan(Question(text="How many singers are there?", db_id="demo"), policy="ranker", n=2)
        assert plan.candidates and plain.ranker_state.priors()  # the plan fed its own planner's evidence
        assert with_art.ranker_state.priors() == before and with_art.ranker_state.artifact is not None
    finally:
        with_art.close()
        plain.close()


class _FixedScores:
    """A 'model' whose P(correct) for a cluster is read off its vote-share feature row: the smaller cluster wins."""

    def predict_proba(self, rows):
        import numpy as np

        col = ranker.FEATURES.index("prior_share")
        p = np.array([[1.0 - r[col]] for r in rows])
        return np.hstack([1.0 - p, p])


def test_the_ranker_keeps_vote_s_pick_below_its_margin_and_outside_its_training_support():
    cands = [sc("SELECT a", "s1", "x"), sc("SELECT b", "s2", "x"), sc("SELECT c", "s3", "y")]
    art = ranker.RankerArtifact(model=_FixedScores(), features=list(ranker.FEATURES), prior_mode="agreement")
    r = ranker.rank_select(cands, "q", {}, art)
    assert r.index == 2 and r.reason.startswith("ranker:")  # no guard: the ranker's own pick (the minority)
    gap = r.scores[1] - r.scores[0]  # its best cluster over vote's (the first)
    art.meta["vote_guard"] = {"margin": gap + 0.01, "max_candidates": 3}
    r = ranker.rank_select(cands, "q", {}, art)
    assert r.index == select("vote", cands).index == 0 and "less than the margin" in r.reason
    art.meta["vote_guard"] = {"margin": gap - 0.01, "max_candidates": 3}
    assert ranker.rank_select(cands, "q", {}, art).index == 2  # sure enough: it leaves vote
    art.meta["vote_guard"] = {"margin": 0.0, "max_candidates": 1}  # 3 > 2 x 1 candidates: outside its support
    r = ranker.rank_select(cands, "q", {}, art)
    assert r.index == 0 and "training support" in r.reason


def test_fit_vote_guard_adopts_a_margin_only_on_evidence():
    # where the ranker leaves vote by a small score gap it is wrong (vote right), by a large gap it is right
    small = ([0.50, 0.53], 0, [True, False])
    large = ([0.20, 0.90], 0, [False, True])
    g = ranker.fit_vote_guard([small] * 8 + [large] * 8, max_candidates=3)
    assert 0.03 < g["margin"] <= 0.7 and (g["wins"], g["losses"]) == (8, 0) and g["p"] <= ranker.GUARD_P
    assert g["max_candidates"] == 3
    few = ranker.fit_vote_guard([small] * 3 + [large] * 3, max_candidates=3)
    assert few["margin"] == 0.0  # 3 wins and no loss is not evidence at 5 % (p = 0.125): the ranker as fitted
    assert ranker.fit_vote_guard([large] * 20, 3)["margin"] == 0.0  # leaving vote pays: no margin


def test_guard_items_from_held_out_signals():
    from types import SimpleNamespace

    from eval.select_fit import guard_items

    q = SimpleNamespace(labels=[True, True, False, None])
    sig = {"cluster_scores": [0.4, 0.7], "members": [[0, 1], [2]], "vote": 0, "ranker": 2}
    assert guard_items([q], [sig]) == [([0.4, 0.7], 0, [True, False])]
    assert guard_items([q], [{**sig, "vote": None}]) == []  # nothing executes: no question for the guard
