"""CARROT plug-in router: predict quality and cost per pair, pick the best trade-off.

Owns `CarrotModel` (estimators, μ calibration, versioned artifacts) and the `carrot` router.

- Quality: P(correct | question) per pair, from question features (`routing.features`: MiniLM
  embeddings + cheap lexical/schema features). Estimators: `knn` (as in the CARROT paper: the share of
  correct answers among the k nearest training questions, smoothed toward the pair's overall rate with
  `smoothing` pseudo-counts, default k) or `logreg` (one standardised, strongly regularised logistic
  regression per pair, C = 0.001).
- Cost: expected cost per question per pair = the mean logged cost (tokens x price) of the k nearest
  training questions for that pair (constant when a pair's cost does not vary).
- Pairs dominated on the training outcomes (another pair at least as accurate and as cheap, one of them
  strictly) are dropped from the choice (`prune_dominated`, default on): with many pairs, picking the
  argmax of many noisy per-question estimates otherwise favours lucky, dominated pairs.
- Decision: argmax over pairs of (1 - μ)·q̂ − μ·ĉ/c_scale, where c_scale is the mean cost per question
  of the most expensive pair in training, so normalised costs lie in about [0, 1]. μ = 0 picks the most
  accurate pair, μ = 1 the cheapest.
- Calibration: like RouteLLM's threshold, μ is chosen on held-out predictions (out-of-fold, folds grouped
  by database) as the smallest μ whose routed average cost (or share of calls to the strongest pair)
  meets a target budget.
- Artifacts: `<path>` (joblib pickle) + `<path>.json` metadata (format version, feature config,
  pairs, training data hash, μ and how it was set). Loading checks the version and the hash. Artifacts are
  pickles: load only ones you trust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.model import Plan, RouteDecision
from routing.features import FeatureConfig, Featurizer
from routing.outcomes import OutcomeMatrix
from routing.router import ROUTERS, Escalation, RouteContext

CARROT_FORMAT_VERSION = 1
ESTIMATORS = ("knn", "logreg")
MU_GRID = np.concatenate([[0.0], np.logspace(-4, 0, 81)])


class ArtifactError(RuntimeError):
    """A router artifact is missing, of another format version, or inconsistent."""


def normalize_costs(cost: np.ndarray, scale: float) -> np.ndarray:
    """Costs divided by `scale` (the most expensive pair's mean cost per question)."""
    return cost / scale if scale > 0 else np.zeros_like(cost)


def non_dominated(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Mask of the pairs no other pair beats: at least as accurate and as cheap, one of them strictly."""
    q, c = np.asarray(quality, float), np.asarray(cost, float)
    return np.array([not np.any((q >= q[j]) & (c <= c[j]) & ((q > q[j]) | (c < c[j]))) for j in range(len(q))])


def route_utility(quality: np.ndarray, cost_norm: np.ndarray, mu: float) -> np.ndarray:
    return (1.0 - mu) * quality - mu * cost_norm


class CarrotModel:
    """Per-pair quality and cost predictors over question features."""

    def __init__(self, pairs: list[str], feature_config: FeatureConfig | None = None, estimator: str = "knn",
                 k: int = 20, C: float = 0.001, smoothing: float | None = None, prune_dominated: bool = True):
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
        if k < 1:
            raise ValueError("k must be >= 1")
        self.pairs = list(pairs)
        self.feature_config = feature_config or FeatureConfig()
        self.estimator = estimator
        self.k = k
        self.C = C
        self.smoothing = float(k if smoothing is None else smoothing)  # pseudo-counts of the pair's overall rate
        self.prune_dominated = prune_dominated
        self.mu: float = 0.0
        self.calibration: dict[str, Any] = {"method": "default", "mu": 0.0}
        self.cost_scale: float = 1.0
        self.training: dict[str, Any] = {}
        self._featurizer: Featurizer | None = None

    # ---------------------------------------------------------------------------------- fitting
    @property
    def featurizer(self) -> Featurizer:
        if self._featurizer is None:
            self._featurizer = Featurizer(self.feature_config)
        return self._featurizer

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_featurizer"] = None  # the encoder is reloaded from the installed package, never pickled
        return d

    def fit(self, X: np.ndarray, M: OutcomeMatrix) -> CarrotModel:
        if X.shape[0] != len(M.keys):
            raise ValueError(f"{X.shape[0]} feature rows for {len(M.keys)} questions")
        if list(M.pairs) != self.pairs:
            raise ValueError("outcome matrix pairs differ from the model's pairs")
        self._X = X.astype(np.float32)
        self._y = M.correct.copy()
        self._cost = M.cost.copy()
        self.prior = np.array([np.nanmean(M.correct[:, j]) if np.isfinite(M.correct[:, j]).any() else 0.5
                               for j in range(len(self.pairs))])
        self.mean_cost = np.array([np.nanmean(M.cost[:, j]) if np.isfinite(M.cost[:, j]).any() else 0.0
                                   for j in range(len(self.pairs))])
        self.cost_scale = float(np.nanmax(self.mean_cost)) if len(self.mean_cost) else 1.0
        self.active = non_dominated(self.prior, self.mean_cost) if self.prune_dominated else np.ones(len(self.pairs), bool)
        # neighbour indexes, one per distinct observation mask (usually a single one)
        self._groups: list[tuple[np.ndarray, np.ndarray, NearestNeighbors]] = []
        masks: dict[bytes, list[int]] = {}
        obs = np.isfinite(M.correct)
        for j in range(len(self.pairs)):
            masks.setdefault(obs[:, j].tobytes(), []).append(j)
        for key, cols in masks.items():
            rows = np.flatnonzero(np.frombuffer(key, dtype=bool))
            if len(rows) == 0:
                continue
            nn = NearestNeighbors(n_neighbors=min(self.k, len(rows))).fit(self._X[rows])
            self._groups.append((np.array(cols), rows, nn))
        self._lr: dict[int, Any] = {}
        if self.estimator == "logreg":
            for j in range(len(self.pairs)):
                rows = np.flatnonzero(obs[:, j])
                yj = M.correct[rows, j].astype(int)
                if len(rows) == 0 or len(set(yj)) < 2:
                    self._lr[j] = float(yj.mean()) if len(rows) else 0.5
                    continue
                clf = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
                self._lr[j] = clf.fit(self._X[rows], yj)
        self.training = {"n_questions": len(M.keys), "n_pairs": len(self.pairs),
                         "n_outcomes": int(obs.sum()), "data_hash": M.data_hash(),
                         "n_databases": len(set(M.db_ids))}
        return self

    # ---------------------------------------------------------------------------------- predicting
    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(quality, cost), each n x pairs."""
        X = np.asarray(X, dtype=np.float32)
        n, m = X.shape[0], len(self.pairs)
        q = np.tile(self.prior, (n, 1)).astype(float)
        c = np.tile(self.mean_cost, (n, 1)).astype(float)
        for cols, rows, nn in self._groups:
            _, nb = nn.kneighbors(X)
            gidx = rows[nb]  # n x k training rows
            for j in cols:
                yk = self._y[gidx, j]
                q[:, j] = (yk.sum(axis=1) + self.smoothing * self.prior[j]) / (yk.shape[1] + self.smoothing)
                c[:, j] = self._cost[gidx, j].mean(axis=1)
        if self.estimator == "logreg":
            for j in range(m):
                clf = self._lr[j]
                q[:, j] = clf if isinstance(clf, float) else clf.predict_proba(X)[:, 1]
        return q, c

    def choose(self, q: np.ndarray, c: np.ndarray, mu: float | None = None) -> np.ndarray:
        """Index of the chosen pair per row (ties -> the cheaper pair by mean cost)."""
        mu = self.mu if mu is None else mu
        u = route_utility(q, normalize_costs(c, self.cost_scale), mu)
        u = u - 1e-12 * normalize_costs(self.mean_cost, self.cost_scale)[None, :]  # deterministic tie-break
        u[:, ~self.active] = -np.inf
        return np.argmax(u, axis=1)

    # ---------------------------------------------------------------------------------- calibration
    def calibrate(self, q: np.ndarray, c_pred: np.ndarray, c_true: np.ndarray, *, target_cost: float | None = None,
                  target_share: float | None = None, strong: str | None = None) -> float:
        """Set μ from held-out predictions: the smallest μ (best quality) whose routed mean cost is at most
        `target_cost`, or whose share of calls to `strong` (default: the most expensive pair) is at most
        `target_share`."""
        if (target_cost is None) == (target_share is None):
            raise ValueError("give exactly one of target_cost, target_share")
        strong_j = self.pairs.index(strong) if strong else int(np.argmax(self.mean_cost))
        chosen_mu, achieved = float(MU_GRID[-1]), None
        for mu in MU_GRID:
            pick = self.choose(q, c_pred, mu)
            val = (float(np.mean(c_true[np.arange(len(pick)), pick])) if target_cost is not None
                   else float(np.mean(pick == strong_j)))
            if val <= (target_cost if target_cost is not None else target_share) + 1e-12:
                chosen_mu, achieved = float(mu), val
                break
        self.mu = chosen_mu
        self.calibration = {"method": "target_cost" if target_cost is not None else "target_share",
                            "target": target_cost if target_cost is not None else target_share,
                            "strong": self.pairs[strong_j], "achieved_on_heldout": achieved, "mu": chosen_mu,
                            "n_heldout": int(q.shape[0])}
        return chosen_mu

    # ---------------------------------------------------------------------------------- artifacts
    def metadata(self) -> dict[str, Any]:
        return {"format_version": CARROT_FORMAT_VERSION, "kind": "carrot", "created_at": datetime.now(UTC).isoformat(),
                "pairs": self.pairs, "estimator": self.estimator, "k": self.k, "C": self.C,
                "feature_config": self.feature_config.model_dump(), "feature_digest": self.feature_config.digest(),
                "mu": self.mu, "calibration": self.calibration, "cost_scale": self.cost_scale,
                "smoothing": self.smoothing, "prune_dominated": self.prune_dominated,
                "active_pairs": [p for p, a in zip(self.pairs, self.active, strict=True) if a],
                "prior_quality": dict(zip(self.pairs, map(float, self.prior), strict=True)),
                "mean_cost": dict(zip(self.pairs, map(float, self.mean_cost), strict=True)),
                "training": self.training, "sklearn_version": sklearn.__version__}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"format_version": CARROT_FORMAT_VERSION, "model": self}, p)
        meta_path(p).write_text(json.dumps(self.metadata(), indent=2))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> CarrotModel:
        p = Path(path)
        mp = meta_path(p)
        if not p.is_file() or not mp.is_file():
            raise ArtifactError(f"carrot artifact {p} (and its metadata {mp.name}) not found; train one with "
                                "`sqlarbiter route fit --outcomes ... --out PATH`")
        meta = json.loads(mp.read_text())
        if meta.get("kind") != "carrot" or meta.get("format_version") != CARROT_FORMAT_VERSION:
            raise ArtifactError(f"{mp}: format {meta.get('kind')!r} v{meta.get('format_version')!r}, this version "
                                f"reads carrot v{CARROT_FORMAT_VERSION}; retrain with `sqlarbiter route fit`")
        blob = joblib.load(p)
        if not isinstance(blob, dict) or blob.get("format_version") != CARROT_FORMAT_VERSION:
            raise ArtifactError(f"{p}: not a carrot v{CARROT_FORMAT_VERSION} artifact")
        model = blob["model"]
        if model.training.get("data_hash") != meta.get("training", {}).get("data_hash"):
            raise ArtifactError(f"{p} and {mp.name} disagree on the training data hash: mismatched files")
        FeatureConfig.model_validate(meta["feature_config"])
        return model


def meta_path(p: Path) -> Path:
    return p.with_name(p.name + ".json")


# -------------------------------------------------------------------------------------- training API


def fit_carrot(M: OutcomeMatrix, X: np.ndarray, *, feature_config: FeatureConfig, estimator: str = "knn", k: int = 20,
               C: float = 0.001, prune_dominated: bool = True, mu: float | None = None, target_cost: float | None = None,
               target_share: float | None = None, strong: str | None = None, folds: int = 5) -> CarrotModel:
    """Fit on all outcomes. μ: given, or calibrated on out-of-fold predictions (folds grouped by database)
    to meet `target_cost` / `target_share`, or 0 (pure quality) when neither is given."""
    model = CarrotModel(list(M.pairs), feature_config, estimator, k, C, prune_dominated=prune_dominated)
    if mu is None and (target_cost is not None or target_share is not None):
        groups = np.array(M.db_ids)
        n_groups = len(set(M.db_ids))
        qh, ch = np.zeros_like(M.correct), np.zeros_like(M.cost)
        if n_groups >= 2:
            splits = GroupKFold(n_splits=min(folds, n_groups)).split(X, groups=groups)
        else:  # one database: plain K-fold
            idx = np.arange(len(M.keys))
            splits = [(np.setdiff1d(idx, te), te) for te in np.array_split(idx, min(folds, len(idx)))]
        for tr, te in splits:
            sub = CarrotModel(list(M.pairs), feature_config, estimator, k, C,
                              prune_dominated=prune_dominated).fit(X[tr], M.subset(tr))
            qh[te], ch[te] = sub.predict(X[te])
        model.fit(X, M)
        model.calibrate(qh, ch, np.nan_to_num(M.cost, nan=0.0), target_cost=target_cost, target_share=target_share,
                        strong=strong)
        return model
    model.fit(X, M)
    if mu is not None:
        if not 0.0 <= mu <= 1.0:
            raise ValueError("mu must be in [0, 1]")
        model.mu = float(mu)
        model.calibration = {"method": "given", "mu": float(mu)}
    return model


# -------------------------------------------------------------------------------------- the router


@ROUTERS.register("carrot", summary="a trained CARROT artifact: predicted quality and cost per pair")
class CarrotRouter:
    """Routes with a trained CARROT artifact. Params: `artifact` (path), `mu` (overrides the artifact's),
    or `model` (an in-memory CarrotModel)."""

    name = "carrot"

    def __init__(self, artifact: str | os.PathLike | None = None, mu: float | None = None,
                 model: CarrotModel | None = None):
        if model is None:
            if artifact is None:
                raise ArtifactError("the carrot router needs `artifact` (a path from `sqlarbiter route fit`)")
            model = CarrotModel.load(artifact)
        self.model = model
        if mu is not None and not 0.0 <= float(mu) <= 1.0:
            raise ValueError("mu must be in [0, 1]")
        self.mu = float(mu) if mu is not None else model.mu

    def _column(self, ctx: RouteContext, name: str) -> int | None:
        pairs = self.model.pairs
        if name in pairs:
            return pairs.index(name)
        gen = ctx.pairs[name].generator
        return pairs.index(gen) if gen in pairs else None

    def decide(self, ctx: RouteContext) -> RouteDecision:
        cols = {name: self._column(ctx, name) for name in ctx.pairs}
        known = {n: j for n, j in cols.items() if j is not None and self.model.active[j]}
        if not known:
            first = next(iter(ctx.pairs))
            p = ctx.pairs[first]
            return RouteDecision(router=self.name, pair=first, generator=p.generator, discriminator=p.discriminator,
                                 steps=[first], reason="carrot: none of the configured pairs is a (non-dominated) "
                                 "pair of the artifact; fell back to the first pair", details={"fallback": True, "artifact_pairs": self.model.pairs})
        x = self.model.featurizer.transform([ctx.question.text], [ctx.schema_features])
        q, c = self.model.predict(x)
        cn = normalize_costs(c[0], self.model.cost_scale)
        util = {n: float(route_utility(q[0, j], cn[j], self.mu)) for n, j in known.items()}
        best = max(known, key=lambda n: (util[n], -cn[known[n]]))
        j = known[best]
        p = ctx.pairs[best]
        return RouteDecision(
            router=self.name, pair=best, generator=p.generator, discriminator=p.discriminator,
            predicted_quality=float(q[0, j]), predicted_cost=float(c[0, j]), steps=[best],
            reason=f"max (1-mu)*quality - mu*cost/{self.model.cost_scale:.3g} at mu={self.mu:g}",
            details={"mu": self.mu, "estimator": self.model.estimator, "cost_scale": self.model.cost_scale,
                     "candidates": {n: {"quality": round(float(q[0, jj]), 4), "cost": float(c[0, jj]),
                                        "utility": round(util[n], 6)} for n, jj in known.items()}},
        )

    def should_escalate(self, plan: Plan, step: int, steps: Sequence[str]) -> Escalation:
        return Escalation(False)

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        return None  # offline-trained: retrain with `sqlarbiter route fit`
