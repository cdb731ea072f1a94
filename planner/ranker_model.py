"""The ranker's cluster scorer: P(cluster correct) from a cluster's feature row (`planner.ranker.FEATURES`).

Two gradient-boosted members, averaged in log-odds (`VoteAnchoredEnsemble`):

- **free**: scikit-learn `HistGradientBoostingClassifier` on every feature. It learns where agreement misleads
  (result shape, SQL shape, priors, order and likelihood evidence), and on its own it can leave vote on evidence
  that does not hold on a new database.
- **anchored**: a logistic base on the log-odds of the cluster's vote share and prior-weighted vote share, then
  LightGBM boosting from that base (`init_score`), so its trees learn only departures from the (weighted) vote.
  Where the features carry nothing beyond agreement, it keeps vote's order.

Averaging the two keeps what the free member learns where both agree and pulls its doubtful departures back
towards vote: cross-fitted on the four shared pools under six database splits each, the ensemble fell below vote in
2 of the 24 pool-split cells, either member alone in 4 (BENCHMARKS.md, "A vote-anchored member"). Fitted by `eval.select_fit.new_model`; pickled
inside the artifact (`RankerArtifact`), so the class lives here, where the planner loads it.
"""

from __future__ import annotations

import numpy as np

from planner.ranker import logit

ANCHOR_FEATURES = ("vote_share", "prior_share")  # the anchored member's base: vote and prior-weighted vote
SHARE_EPS = 0.02  # shares are clipped to [SHARE_EPS, 1 - SHARE_EPS] before the log-odds
PROBA_EPS = 1e-6  # the free member's probabilities, likewise, before averaging log-odds


def _proba(z: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-z))
    return np.column_stack([1 - p, p])


class VoteAnchored:
    """Logistic regression on the log-odds of the anchor columns, then LightGBM boosting from its scores."""

    def __init__(self, columns: tuple[int, ...], *, n_estimators: int = 150, learning_rate: float = 0.06,
                 num_leaves: int = 15, min_child_samples: int = 20, reg_lambda: float = 1.0):
        self.columns = tuple(columns)
        self.params = {"n_estimators": n_estimators, "learning_rate": learning_rate, "num_leaves": num_leaves,
                       "min_child_samples": min_child_samples, "reg_lambda": reg_lambda}

    def _base_x(self, X: np.ndarray) -> np.ndarray:
        return logit(X[:, list(self.columns)], SHARE_EPS)

    def fit(self, X, y) -> VoteAnchored:
        import lightgbm as lgb
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=float)
        b = self._base_x(X)
        self.base_ = LogisticRegression(C=1.0).fit(b, y)
        self.boost_ = lgb.LGBMClassifier(**self.params, random_state=0, verbose=-1)
        self.boost_.fit(X, y, init_score=self.base_.decision_function(b))
        return self

    def decision_function(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        return self.base_.decision_function(self._base_x(X)) + self.boost_.predict(X, raw_score=True)

    def predict_proba(self, X) -> np.ndarray:
        return _proba(self.decision_function(X))


class VoteAnchoredEnsemble:
    """The free and the anchored member, their log-odds averaged (`predict_proba` like a scikit-learn classifier)."""

    def __init__(self, features: tuple[str, ...] | list[str]):
        names = list(features)
        self.anchored = VoteAnchored(tuple(names.index(f) for f in ANCHOR_FEATURES))

    def fit(self, X, y) -> VoteAnchoredEnsemble:
        from sklearn.ensemble import HistGradientBoostingClassifier

        X = np.asarray(X, dtype=float)
        self.free = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.06, max_leaf_nodes=15,
                                                   min_samples_leaf=20, l2_regularization=1.0,
                                                   random_state=0).fit(X, y)
        self.anchored.fit(X, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        z = (logit(self.free.predict_proba(X)[:, 1], PROBA_EPS) + self.anchored.decision_function(X)) / 2
        return _proba(z)
