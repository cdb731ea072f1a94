"""A ranker that transfers across pool kinds (issue 26): training on a mix of pools, and held-out checks by
database *and* by generator.

Pool kinds:
- `multi-system`: one candidate per published system (the 43 systems of `candidates/spider_dev`); the order
  of the systems is alphabetical, so it carries nothing;
- `single-generator`: N samples of one generator (gpt-4o-mini n8, Qwen x5); i.i.d. samples, so their order
  carries nothing either;
- derived pools (`derived_pools`), built from the labelled pools above so that order evidence is learned
  only where order means something:
  - `subset-ranked`: a random subset of 3-8 systems per question, listed best-first by the systems' accuracy on
    the *training* questions: the order a generator that ranks its own candidates would give;
  - `subset-shuffled`: the same subsets in a random order;
  - `shuffled`: a single-generator pool with its samples shuffled per question.

Every pool gets its own label-free agreement priors (sources and positions: `eval.select_fit.pool_agreement`),
computed on that pool alone (positions mean different things in different pools), and its own feature rows;
priors are in `agreement` mode (system-agnostic: the shipped default must work on generators it never saw).

Held-out checks (`held_out`): the test pool's questions are split by database (GroupKFold); each fold is
selected by a ranker fitted on the training pools' questions of the *other* databases, where the training
pools exclude every pool of the test pool's generator (its derived pools included). `exclude_kind` drops a
whole pool kind from training (leave-one-pool-kind-out).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.clusters import argmax_first
from eval.select_fit import LQ, Rows, _folds, pool_agreement, rows_of, signals, train_model
from planner.ranker import FEATURES, RankerArtifact, fit_vote_guard, source_key

MODE = "agreement"


@dataclass
class Pool:
    name: str
    kind: str  # multi-system | single-generator | subset-ranked | subset-shuffled | shuffled
    generator: str  # whose candidates ("systems" for the published systems and pools built from them)
    qs: list[LQ]
    base: str = ""  # the labelled pool it was built from ("" for a base pool)
    _rows: Rows | None = field(default=None, repr=False)
    _priors: dict[str, float] | None = field(default=None, repr=False)

    @property
    def family(self) -> str:
        """multi-system or single-generator: the kind of the pool it is, or was built from."""
        return "multi-system" if self.generator == "systems" else "single-generator"

    def priors(self) -> dict[str, float]:
        if self._priors is None:
            self._priors = pool_agreement(self.qs)
        return self._priors

    def rows(self) -> Rows:
        if self._rows is None:
            self._rows = rows_of(self.qs, self.priors())
        return self._rows


def _subset(q: LQ, keep: Sequence[int]) -> LQ:
    return LQ(q.index, q.db_id, q.question, [q.cands[i] for i in keep], [q.labels[i] for i in keep], q.difficulty, {})


def system_accuracy(qs: Sequence[LQ]) -> dict[str, float]:
    acc: dict[str, list[int]] = {}
    for q in qs:
        for c, y in zip(q.cands, q.labels, strict=True):
            a = acc.setdefault(source_key(c.candidate.source), [0, 0])
            a[0] += int(bool(y))
            a[1] += 1
    return {s: c / n for s, (c, n) in acc.items() if n}


def derived_pools(systems: Pool, samples: Sequence[Pool], *, seed: int = 0, copies: int = 2,
                  order_from: Sequence[LQ] | None = None) -> list[Pool]:
    """Pools built from the labelled ones (see the module docstring). `order_from`: the questions whose labels
    rank the systems for `subset-ranked` (default: the systems pool itself; held-out checks pass the training
    questions only)."""
    rng = random.Random(seed)
    acc = system_accuracy(order_from if order_from is not None else systems.qs)
    out: list[Pool] = []
    for c in range(copies):
        ranked, shuffled = [], []
        for q in systems.qs:
            k = rng.randint(3, min(8, len(q.cands)))
            pick = rng.sample(range(len(q.cands)), k)
            best_first = sorted(pick, key=lambda i: (-acc.get(source_key(q.cands[i].candidate.source), 0.0), i))
            ranked.append(_subset(q, best_first))
            rng.shuffle(pick)
            shuffled.append(_subset(q, pick))
        out.append(Pool(f"{systems.name}/subset-ranked#{c}", "subset-ranked", "systems", ranked, systems.name))
        out.append(Pool(f"{systems.name}/subset-shuffled#{c}", "subset-shuffled", "systems", shuffled, systems.name))
    for p in samples:
        sh = []
        for q in p.qs:
            order = list(range(len(q.cands)))
            rng.shuffle(order)
            sh.append(_subset(q, order))
        out.append(Pool(f"{p.name}/shuffled", "shuffled", p.generator, sh, p.name))
    return out


def _rows_where(pool: Pool, keep_db) -> Rows:
    r = pool.rows()
    if not len(r.y):
        return r
    mask = np.asarray([keep_db(pool.qs[int(k)].db_id) for k in r.q], dtype=bool)
    return Rows(r.X[mask], r.y[mask], r.q[mask])


def _fit_rows(pools: Sequence[Pool], keep_db) -> RankerArtifact:
    parts = [_rows_where(p, keep_db) for p in pools]
    parts = [r for r in parts if len(r.y)]
    X = np.concatenate([r.X for r in parts]) if parts else np.zeros((0, len(FEATURES)))
    y = np.concatenate([r.y for r in parts]) if parts else np.zeros(0, dtype=int)
    art = RankerArtifact(model=train_model(Rows(X, y, np.zeros(len(y)))), features=list(FEATURES), prior_mode=MODE)
    art.meta = {"rows": int(len(y))}
    return art


GUARD_FOLDS = 2  # database folds over the training pools for the vote guard's held-out signals


def fit_on(pools: Sequence[Pool], keep_db=lambda db: True, meta: dict | None = None,
           guard: bool = True) -> RankerArtifact:
    """A ranker (agreement priors) on the rows of `pools` whose database passes `keep_db`. With `guard`, its vote
    guard (`planner.ranker.vote_guard`) from `GUARD_FOLDS` database folds over the same questions: each fold's
    questions are selected by a ranker fitted on the other folds, and the margin with the most right picks is kept;
    the support is the largest pool it was trained on."""
    art = _fit_rows(pools, keep_db)
    art.meta = {"trained_on": [p.name for p in pools], **art.meta, **(meta or {})}
    if guard:
        dbs = sorted({q.db_id for p in pools for q in p.qs if keep_db(q.db_id)})
        folds = [set(dbs[f::GUARD_FOLDS]) for f in range(GUARD_FOLDS)] if len(dbs) >= GUARD_FOLDS else []
        items: list = []
        col = FEATURES.index("vote_share")
        for held in folds:  # held-out cluster rows scored in one batch per fold (no re-clustering)
            sub = _fit_rows(pools, lambda db, held=held: keep_db(db) and db not in held)
            for p in pools:
                r = _rows_where(p, lambda db, held=held: db in held)
                if not len(r.y):
                    continue
                sc = sub.model.predict_proba(r.X)[:, 1]
                for qk in np.unique(r.q):
                    idx = np.flatnonzero(r.q == qk)  # this question's clusters, in cluster order
                    shares = r.X[idx, col]
                    kv = argmax_first(range(len(shares)), shares.__getitem__)  # vote's rule: the largest cluster
                    items.append(([float(x) for x in sc[idx]], kv, [bool(y) for y in r.y[idx]]))
        most = max((len(q.cands) for p in pools for q in p.qs if keep_db(q.db_id)), default=0)
        art.meta["vote_guard"] = fit_vote_guard(items, most)
    return art


def picks(art: RankerArtifact, pool: Pool, idx: Sequence[int] | None = None) -> list[dict]:
    """Per question of `pool` (or of `idx`): the ranker's, vote's and first's EX, with the pool's own priors."""
    qs = pool.qs if idx is None else [pool.qs[i] for i in idx]
    sig = signals(art, qs, pool.priors())
    out = []
    for q, s in zip(qs, sig, strict=True):
        out.append({p: bool(s[p] is not None and q.labels[s[p]]) for p in ("ranker", "vote", "first")})
    return out


def held_out(test: Pool, pools: Sequence[Pool], *, k: int = 5, exclude_kind: str | None = None,
             own: bool = False, seed: int | None = None) -> dict:
    """EX of first / vote / ranker on `test`, the ranker fitted per database fold on `pools` minus every pool of
    the test generator (and minus the `exclude_kind` family), on the other folds' databases only. With `own`, the
    test generator's pools stay in training (still only their other databases): the shipped recipe refitted with
    a deployment's own labelled pool. `seed`: the database split (`eval.select_fit._folds`)."""
    train = [p for p in pools if (own or p.generator != test.generator) and p.family != exclude_kind]
    res: list[dict | None] = [None] * len(test.qs)
    for _, te in _folds(test.qs, k, seed):
        dbs = {test.qs[i].db_id for i in te}
        art = fit_on(train, lambda db, dbs=dbs: db not in dbs)
        for i, r in zip(te, picks(art, test, te), strict=True):
            res[i] = r
    n = len(test.qs)
    ex = {p: 100.0 * sum(r[p] for r in res) / n for p in ("ranker", "vote", "first")}  # type: ignore[index]
    return {"ex": ex, "n": n, "trained_on": sorted({p.name for p in train}), "folds": k, "per_question": res}


def pool_summary(pool: Pool) -> dict:
    """first, vote, best single source, oracle of a pool (no ranker)."""
    n = len(pool.qs)
    per: dict[str, list[int]] = {}
    for q in pool.qs:
        for c, y in zip(q.cands, q.labels, strict=True):
            a = per.setdefault(c.candidate.source, [0, 0])
            a[0] += int(bool(y))
            a[1] += 1
    best = max(per, key=lambda s: (per[s][1], per[s][0]))
    return {"n": n, "oracle": 100.0 * sum(any(bool(y) for y in q.labels) for q in pool.qs) / n,
            "best_single": {"name": best, "ex": 100.0 * per[best][0] / per[best][1]}}


def gap_closed(ex: float, vote: float, oracle: float) -> float | None:
    """Share of the vote -> oracle gap a policy closes: (ex - vote) / (oracle - vote); None when there is no gap."""
    g = oracle - vote
    return None if abs(g) < 1e-9 else (ex - vote) / g
