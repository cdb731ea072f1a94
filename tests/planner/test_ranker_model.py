"""planner.ranker_model: the cluster scorer (a free and a vote-anchored booster, averaged in log-odds)."""

from __future__ import annotations

import numpy as np
import pytest

from planner import ranker
from planner.ranker_model import VoteAnchored, VoteAnchoredEnsemble

VOTE = ranker.FEATURES.index("vote_share")
PRIOR = ranker.FEATURES.index("prior_share")
EMPTY = ranker.FEATURES.index("empty")


def rows(n: int = 1200, seed: int = 0, empty_matters: bool = False):
    """Cluster rows whose correctness follows the vote share, and with `empty_matters` is never right when empty."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(ranker.FEATURES)))
    share = rng.uniform(0.05, 0.95, size=n)
    X[:, VOTE] = share
    X[:, PRIOR] = np.clip(share + rng.normal(0, 0.02, size=n), 0, 1)
    X[:, EMPTY] = (rng.random(n) < 0.3).astype(float)
    y = (rng.random(n) < share).astype(int)
    if empty_matters:
        y[X[:, EMPTY] == 1] = 0
    return X, y


def test_the_anchored_member_starts_from_vote():
    """Its base is a logistic on the log-odds of vote and prior-weighted vote share: more votes, a higher score."""
    X, y = rows()
    m = VoteAnchored((VOTE, PRIOR)).fit(X, y)
    low, high = X[:5].copy(), X[:5].copy()
    low[:, [VOTE, PRIOR]], high[:, [VOTE, PRIOR]] = 0.2, 0.8
    assert (m.base_.decision_function(m._base_x(high)) > m.base_.decision_function(m._base_x(low))).all()


def test_the_ensemble_averages_its_members_log_odds_and_learns_beyond_vote():
    X, y = rows(empty_matters=True)
    m = VoteAnchoredEnsemble(ranker.FEATURES).fit(X, y)
    p = m.predict_proba(X[:50])
    assert p.shape == (50, 2)
    assert np.allclose(p.sum(axis=1), 1.0) and ((p >= 0) & (p <= 1)).all()
    pf = np.clip(m.free.predict_proba(X[:50])[:, 1], 1e-6, 1 - 1e-6)
    z = (np.log(pf / (1 - pf)) + m.anchored.decision_function(X[:50])) / 2
    assert np.allclose(p[:, 1], 1 / (1 + np.exp(-z)))
    full, empty = X[:200].copy(), X[:200].copy()
    full[:, EMPTY], empty[:, EMPTY] = 0.0, 1.0
    assert m.predict_proba(empty)[:, 1].mean() < m.predict_proba(full)[:, 1].mean() - 0.2


def test_an_artifact_with_the_ensemble_survives_save_and_load(tmp_path):
    X, y = rows(400)
    art = ranker.RankerArtifact(model=VoteAnchoredEnsemble(ranker.FEATURES).fit(X, y), features=list(ranker.FEATURES))
    back = ranker.RankerArtifact.load(art.save(tmp_path / "r.joblib"))
    assert back.score_clusters(X[:20].tolist()) == pytest.approx(art.score_clusters(X[:20].tolist()))
