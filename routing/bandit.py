"""MetaLLM-style contextual bandit router: disjoint LinUCB over pairs, learning online from feedback.

Owns `LinUCB` (numpy), the `router_state` table (on `core.store.Base`) that persists it, and the
`bandit` router.

- Context x: cheap question/schema features + the MiniLM question embedding random-projected to
  `embed_dim` dims (seeded, so a restarted service rebuilds the same projection) + a bias term.
- Reward of an observed outcome: correct − λ·cost/cost_scale, where cost_scale is the mean cost per
  question of the most expensive pair seen at warm start (or the `cost_scale` parameter), frozen once set.
- Decision: argmax over pairs of θᵀx + α·sqrt(xᵀA⁻¹x) (ties -> earlier pair in the configured order,
  i.e. the cheaper one). predicted_quality = θᵀx + λ·(the pair's mean normalised cost), clipped to [0, 1]
  (the reward model's implied P(correct)); predicted_cost = the pair's mean observed cost.
- Learning: `update` (POST /feedback, eval runs) does a rank-one update of the chosen arm; `warm_start`
  replays logged outcomes. Every update is written through to `router_state` (one row per arm plus a
  `__meta__` row, keyed by the router's `key`), so a new instance on the same store resumes exactly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import DateTime, String, Text, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.model import Plan, RouteDecision
from core.store import Base, create_tables, make_engine
from routing.features import FeatureConfig, Featurizer
from routing.outcomes import Outcome
from routing.router import ROUTERS, Escalation, RouteContext

BANDIT_STATE_VERSION = 1
META = "__meta__"


class RouterStateRow(Base):
    __tablename__ = "router_state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)  # router instance (e.g. "bandit")
    arm: Mapped[str] = mapped_column(String(128), primary_key=True)  # pair name, or __meta__
    state: Mapped[str] = mapped_column(Text)  # JSON
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))


class LinUCB:
    """Disjoint LinUCB (Li et al., 2010): one ridge regression per arm, upper-confidence selection."""

    def __init__(self, d: int, alpha: float = 0.5, ridge: float = 1.0):
        if d < 1:
            raise ValueError("d must be >= 1")
        self.d, self.alpha, self.ridge = d, float(alpha), float(ridge)
        self.A: dict[str, np.ndarray] = {}
        self.b: dict[str, np.ndarray] = {}
        self.Ainv: dict[str, np.ndarray] = {}
        self.n: dict[str, int] = {}
        self.cost_sum: dict[str, float] = {}
        self.correct_sum: dict[str, float] = {}

    def add_arm(self, arm: str) -> None:
        if arm not in self.A:
            self.A[arm] = self.ridge * np.eye(self.d)
            self.b[arm] = np.zeros(self.d)
            self.Ainv[arm] = np.eye(self.d) / self.ridge
            self.n[arm] = 0
            self.cost_sum[arm] = 0.0
            self.correct_sum[arm] = 0.0

    def theta(self, arm: str) -> np.ndarray:
        return self.Ainv[arm] @ self.b[arm]

    def scores(self, x: np.ndarray, arms: Sequence[str], alpha: float | None = None) -> dict[str, tuple[float, float]]:
        """arm -> (mean reward estimate, exploration bonus)."""
        a = self.alpha if alpha is None else alpha
        out = {}
        for arm in arms:
            self.add_arm(arm)
            Ai = self.Ainv[arm]
            out[arm] = (float(self.theta(arm) @ x), float(a * np.sqrt(max(0.0, x @ Ai @ x))))
        return out

    def select(self, x: np.ndarray, arms: Sequence[str], alpha: float | None = None) -> str:
        s = self.scores(x, arms, alpha)
        return max(arms, key=lambda arm: (s[arm][0] + s[arm][1], -arms.index(arm)))

    def update(self, arm: str, x: np.ndarray, reward: float, cost: float = 0.0, correct: float | None = None) -> None:
        self.add_arm(arm)
        x = np.asarray(x, dtype=float)
        self.A[arm] += np.outer(x, x)
        self.b[arm] += reward * x
        Ai = self.Ainv[arm]  # Sherman-Morrison
        Ax = Ai @ x
        self.Ainv[arm] = Ai - np.outer(Ax, Ax) / (1.0 + x @ Ax)
        self.n[arm] += 1
        self.cost_sum[arm] += float(cost)
        if correct is not None:
            self.correct_sum[arm] += float(correct)

    def warm_start_arm(self, arm: str, X: np.ndarray, rewards: np.ndarray, costs: np.ndarray | None = None,
                       correct: np.ndarray | None = None) -> None:
        """Add a batch of logged outcomes of one arm at once (rows of `X` with their `rewards`, optionally
        costs and correctness): the batch form of `update`, A += XᵀX, b += Xᵀr, A⁻¹ recomputed once."""
        self.add_arm(arm)
        X = np.asarray(X, dtype=float).reshape(-1, self.d)
        r = np.asarray(rewards, dtype=float)
        if len(r) != len(X):
            raise ValueError(f"{len(X)} contexts but {len(r)} rewards")
        self.A[arm] = self.A[arm] + X.T @ X
        self.b[arm] = self.b[arm] + X.T @ r
        self.Ainv[arm] = np.linalg.inv(self.A[arm])
        self.n[arm] += len(X)
        if costs is not None:
            self.cost_sum[arm] += float(np.sum(costs))
        if correct is not None:
            self.correct_sum[arm] += float(np.sum(correct))

    def arm_state(self, arm: str) -> dict[str, Any]:
        return {"A": self.A[arm].tolist(), "Ainv": self.Ainv[arm].tolist(), "b": self.b[arm].tolist(), "n": self.n[arm],
                "cost_sum": self.cost_sum[arm], "correct_sum": self.correct_sum[arm]}

    def load_arm(self, arm: str, st: Mapping[str, Any]) -> None:
        A = np.asarray(st["A"], dtype=float)
        if A.shape != (self.d, self.d):
            raise ValueError(f"arm {arm!r}: stored A is {A.shape}, expected {(self.d, self.d)}")
        self.A[arm] = A
        self.b[arm] = np.asarray(st["b"], dtype=float)
        # the stored inverse keeps a restarted router's decisions bit-identical (recomputing it would not)
        self.Ainv[arm] = np.asarray(st["Ainv"], dtype=float) if "Ainv" in st else np.linalg.inv(A)
        self.n[arm] = int(st["n"])
        self.cost_sum[arm] = float(st["cost_sum"])
        self.correct_sum[arm] = float(st.get("correct_sum", 0.0))


@ROUTERS.register("bandit", summary="LinUCB over question features, trading quality against cost", learns=True)
class BanditRouter:
    """LinUCB router. Params: alpha (exploration), lam (cost weight λ), engine / store_url (persist state in
    `router_state`; none = in memory only), key (state namespace), embed_dim, embeddings, cost_scale, seed."""

    name = "bandit"

    def __init__(self, alpha: float = 0.5, lam: float = 0.5, engine: Engine | None = None, store_url: str | None = None,
                 key: str = "bandit", embed_dim: int = 16, embeddings: bool = True, cost_scale: float | None = None,
                 seed: int = 0, ridge: float = 1.0):
        if alpha < 0 or lam < 0:
            raise ValueError("alpha and lam must be >= 0")
        self.alpha, self.lam, self.key = float(alpha), float(lam), key
        self.feature_config = FeatureConfig(embeddings=embeddings, project_dim=embed_dim if embeddings else None,
                                            bias=True, seed=seed)
        self.featurizer = Featurizer(self.feature_config)
        self.cost_scale = cost_scale
        self._lock = threading.RLock()
        self.engine = engine if engine is not None else (make_engine(store_url) if store_url else None)
        if self.engine is not None:
            create_tables(self.engine, tables=[RouterStateRow.__table__])
        self.ucb = LinUCB(self.featurizer.dim, alpha, ridge)
        self._load()

    # ---------------------------------------------------------------------------------- persistence
    def _meta(self) -> dict[str, Any]:
        return {"version": BANDIT_STATE_VERSION, "d": self.ucb.d, "ridge": self.ucb.ridge, "lam": self.lam,
                "cost_scale": self.cost_scale, "feature_config": self.feature_config.model_dump(),
                "arms": [a for a in self.ucb.A if self.ucb.n[a]]}

    def _load(self) -> None:
        if self.engine is None:
            return
        with Session(self.engine) as s:
            rows = {r.arm: json.loads(r.state) for r in s.scalars(select(RouterStateRow).where(RouterStateRow.key == self.key))}
        if not rows:
            return
        meta = rows.pop(META, None)
        if meta is None or meta.get("version") != BANDIT_STATE_VERSION:
            raise ValueError(f"router_state[{self.key!r}]: state version {meta and meta.get('version')!r}, expected "
                             f"{BANDIT_STATE_VERSION}; clear it with BanditRouter.reset()")
        if meta["feature_config"] != self.feature_config.model_dump():
            raise ValueError(f"router_state[{self.key!r}] was learned with other features ({meta['feature_config']}); "
                             "use another key or reset it")
        if self.cost_scale is None:
            self.cost_scale = meta.get("cost_scale")
        for arm, st in rows.items():
            self.ucb.load_arm(arm, st)

    def save(self, arms: Iterable[str] | None = None) -> None:
        if self.engine is None:
            return
        arms = list(self.ucb.A) if arms is None else list(arms)
        now = datetime.now(UTC)
        with Session(self.engine) as s, s.begin():
            for arm in [*arms, META]:
                st = self._meta() if arm == META else self.ucb.arm_state(arm)
                s.merge(RouterStateRow(key=self.key, arm=arm, state=json.dumps(st), updated_at=now))

    def reset(self) -> None:
        with self._lock:
            self.ucb = LinUCB(self.featurizer.dim, self.alpha, self.ucb.ridge)
            if self.engine is not None:
                with Session(self.engine) as s, s.begin():
                    s.execute(delete(RouterStateRow).where(RouterStateRow.key == self.key))

    def state(self) -> dict[str, Any]:
        """A JSON-friendly snapshot of what was learned (arms with at least one outcome)."""
        with self._lock:
            return {"meta": self._meta(), "arms": {a: self.ucb.arm_state(a) for a in self.ucb.A if self.ucb.n[a]}}

    # ---------------------------------------------------------------------------------- learning
    def context(self, question: str, schema_features: Mapping[str, Any] | None = None) -> np.ndarray:
        return self.featurizer.one(question, schema_features).astype(float)

    def reward(self, correct: bool | float, cost: float) -> float:
        return float(correct) - self.lam * self._norm(cost)

    def _norm(self, cost: float) -> float:
        return float(cost) / self.cost_scale if self.cost_scale else 0.0

    def observe(self, x: np.ndarray, pair: str, correct: bool | float, cost: float, *, persist: bool = True) -> None:
        with self._lock:
            if self.cost_scale is None and cost > 0:
                self.cost_scale = float(cost)  # first priced outcome fixes the scale (warm_start sets it better)
            if persist and self.engine is not None:
                self._observe_stored(x, pair, correct, cost)
            else:
                self.ucb.update(pair, x, self.reward(correct, cost), cost, float(correct))

    def _observe_stored(self, x: np.ndarray, pair: str, correct: bool | float, cost: float) -> None:
        """One update as a read-modify-write of the arm's stored row under a row lock (SELECT ... FOR UPDATE on
        PostgreSQL), so replicas sharing the store never lose each other's updates: the arm is re-read from
        the store (it may hold other replicas' updates), updated, written back, in one transaction. A first
        insert that races another replica's is retried."""
        from sqlalchemy.exc import IntegrityError

        for attempt in range(5):
            try:
                with Session(self.engine) as s, s.begin():
                    # take the write lock first: the row's lock on PostgreSQL, the database's on SQLite (which
                    # ignores FOR UPDATE and would otherwise let two transactions read the same old state)
                    s.execute(update(RouterStateRow).where(RouterStateRow.key == self.key, RouterStateRow.arm == pair)
                              .values(updated_at=datetime.now(UTC)))
                    row = s.scalars(select(RouterStateRow).where(RouterStateRow.key == self.key,
                                                                 RouterStateRow.arm == pair).with_for_update()).first()
                    if row is not None:
                        self.ucb.load_arm(pair, json.loads(row.state))
                    self.ucb.update(pair, x, self.reward(correct, cost), cost, float(correct))
                    now = datetime.now(UTC)
                    s.merge(RouterStateRow(key=self.key, arm=pair, state=json.dumps(self.ucb.arm_state(pair)),
                                           updated_at=now))
                    s.merge(RouterStateRow(key=self.key, arm=META, state=json.dumps(self._meta()), updated_at=now))
                return
            except IntegrityError:  # another replica inserted the first row of this arm (or meta) meanwhile
                if attempt == 4:
                    raise

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        self.observe(self.context(ctx.question.text, ctx.schema_features), pair, correct, cost)

    def warm_start(self, outcomes: Sequence[Outcome], schema_features: Mapping[str, Mapping[str, Any]] | None = None,
                   X: np.ndarray | None = None) -> int:
        """Replay logged outcomes (labelled ones) into the arms; persists once at the end. `X` (one row per
        outcome) skips featurisation."""
        labelled = [o for o in outcomes if o.correct is not None]
        if not labelled:
            return 0
        if self.cost_scale is None:
            means: dict[str, list[float]] = {}
            for o in labelled:
                means.setdefault(o.pair, []).append(o.cost)
            top = max(float(np.mean(v)) for v in means.values())
            self.cost_scale = top if top > 0 else None
        if X is None:
            sf = schema_features or {}
            X = self.featurizer.transform([o.question for o in labelled], [sf.get(o.db_id) for o in labelled])
        with self._lock:
            for o, x in zip(labelled, X, strict=True):
                self.ucb.update(o.pair, x.astype(float), self.reward(o.correct, o.cost), o.cost, float(o.correct))
            self.save()
        return len(labelled)

    # ---------------------------------------------------------------------------------- routing
    def predicted(self, arm: str, mean: float) -> tuple[float | None, float | None]:
        n = self.ucb.n.get(arm, 0)
        if n == 0:
            return None, None
        mean_cost = self.ucb.cost_sum[arm] / n
        return float(np.clip(mean + self.lam * self._norm(mean_cost), 0.0, 1.0)), mean_cost

    def decide(self, ctx: RouteContext) -> RouteDecision:
        arms = list(ctx.pairs)
        x = self.context(ctx.question.text, ctx.schema_features)
        with self._lock:
            s = self.ucb.scores(x, arms)
            best = max(arms, key=lambda a: (s[a][0] + s[a][1], -arms.index(a)))
            counts = {a: self.ucb.n.get(a, 0) for a in arms}
        q, c = self.predicted(best, s[best][0])
        p = ctx.pairs[best]
        return RouteDecision(
            router=self.name, pair=best, generator=p.generator, discriminator=p.discriminator,
            predicted_quality=q, predicted_cost=c, steps=[best],
            reason=f"LinUCB: max reward estimate + {self.alpha:g}*uncertainty (reward = correct - {self.lam:g}*cost/scale)",
            details={"alpha": self.alpha, "lam": self.lam, "cost_scale": self.cost_scale, "counts": counts,
                     "arms": {a: {"mean": round(s[a][0], 4), "bonus": round(s[a][1], 4)} for a in arms}},
        )

    def should_escalate(self, plan: Plan, step: int, steps: Sequence[str]) -> Escalation:
        return Escalation(False)
