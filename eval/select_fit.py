"""Training, cross-fitting and applying the `ranker` selection policy (`planner.ranker`) on labelled pools.

Data: replayed pools (`eval.replay.replay(..., keep=...)`: each question's text, executed candidates and
EX labels from the project's evaluator) and logged plans with feedback in the plan store
(`plans_with_feedback`: a correct plan labels its cluster right and every other cluster wrong; a wrong one
labels its own cluster wrong only).

- `fit`: GroupKFold by database gives out-of-fold cluster scores, from which the calibrators (ranker,
  vote share, model score; Platt or isotonic per fit, by grouped cross-validated Brier: `fit_calibrator`)
  and the cross-validated metrics come; the final model is then fitted on everything and written as a
  versioned artifact (`planner.ranker.RankerArtifact`).
- `crossfit`: each test question is scored by a ranker (and calibrators) fitted on questions of *other*
  databases only (GroupKFold by db_id); the training pool may be another pool over the same questions
  (e.g. other systems: the system-agnostic check). Adds `ranker` to the replay records and a confidence
  per policy (`ranker`, `vote`, `first`), for `eval.selective`'s risk-coverage report.
- `apply`: a fitted artifact selects on another pool (`--ranker FILE`).

Priors (see `planner.ranker`): `labelled` mode uses per-source accuracies from the training labels
(sources unseen in training fall back to the label-free agreement estimate); `agreement` mode
(system-agnostic) uses only the agreement estimate, computed on the pool being scored without gold.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.model import ScoredCandidate
from planner.ranker import (
    FEATURES,
    POSITION_PREFIX,
    Calibrator,
    RankerArtifact,
    agreement_priors,
    cluster_features,
    fit_vote_guard,
    labelled_priors,
    logit,
    position_keys,
    position_priors,
    question_keys,
    rank_select,
    source_key,
    vote_share_of,
)

PRIOR_MODES = ("labelled", "agreement")


@dataclass
class LQ:
    """One labelled question: candidates and, per candidate, EX (None = unknown)."""

    index: int
    db_id: str
    question: str
    cands: list[ScoredCandidate]
    labels: list[bool | None]
    difficulty: str | None = None
    record: dict = field(default_factory=dict)  # the replay record to extend
    pool: str = ""  # the pool it came from: positions are estimated per pool (`per_question_priors`)


def from_replay(result: dict, kept: list) -> list[LQ]:
    return [LQ(q["index"], q["db_id"], text, cands, list(lab), q.get("difficulty"), q)
            for q, (text, cands, lab) in zip(result["questions"], kept, strict=True)]


def collect(entries, examples, *, dataset: str = "spider", discriminator=None, scores_cache=None,
            workers: int = 2, limit: int | None = None, progress: bool = True) -> tuple[dict, list[LQ]]:
    """Replay a pool (labels, executions, optional scores) and keep what the ranker needs."""
    from eval.replay import replay

    kept: list = []
    r = replay(entries, examples, dataset=dataset, discriminator=discriminator, scores_cache=scores_cache,
               workers=workers, limit=limit, progress=progress, keep=kept, preview_rows=3)
    return r, from_replay(r, kept)


def plans_with_feedback(store_url: str | None = None) -> list[LQ]:
    """Logged plans with a correct/incorrect feedback, as partially labelled questions."""
    from planner.plans import PlanStore

    store = PlanStore(store_url)
    out = []
    try:
        for plan in store.recent(limit=100_000):
            fb = [f for f in store.feedback_for(plan.id) if f.correct is not None]
            if not fb or plan.chosen is None or not plan.candidates:
                continue
            ok = bool(fb[-1].correct)
            ch = plan.candidates[plan.chosen]
            fp = ch.execution.fingerprint if ch.execution else None
            labels: list[bool | None] = []
            for c in plan.candidates:
                same = c is ch or (fp is not None and c.execution is not None and c.execution.fingerprint == fp)
                labels.append(ok if same else (False if ok else None))
            out.append(LQ(-1, plan.question.db_id, plan.question.text, list(plan.candidates), labels))
    finally:
        store.close()
    return out


def data_hash(qs: Sequence[LQ]) -> str:
    h = hashlib.sha256()
    for q in qs:
        h.update(json.dumps([q.db_id, q.question, [c.candidate.sql for c in q.cands],
                             [c.candidate.source for c in q.cands], q.labels]).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Priors and rows
# --------------------------------------------------------------------------------------------------


def pool_agreement(qs: Sequence[LQ]) -> dict[str, float]:
    """Label-free accuracies of the pool's sources and, apart, of its positions (the order evidence)."""
    return {**agreement_priors([{source_key(s): k for s, k in question_keys(q.cands).items()} for q in qs]),
            **position_priors([position_keys(q.cands) for q in qs])}


def source_outcomes(qs: Sequence[LQ]) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for q in qs:
        for c, y in zip(q.cands, q.labels, strict=True):
            if y is not None:
                o = out.setdefault(source_key(c.candidate.source), [0, 0])
                o[0] += int(y)
                o[1] += 1
    return {s: (c, n) for s, (c, n) in out.items()}


def train_priors(train: Sequence[LQ], mode: str) -> dict[str, float]:
    agree = pool_agreement(train)
    return {**agree, **labelled_priors(source_outcomes(train), fallback=agree)} if mode == "labelled" else agree


def test_priors(test: Sequence[LQ], learned: dict[str, float], mode: str) -> dict[str, float]:
    """Priors to score `test` with: the label-free estimate on the test pool, overridden by the training
    labels for sources seen in training (labelled mode)."""
    agree = pool_agreement(test)
    return {**agree, **learned} if mode == "labelled" else agree


@dataclass
class Rows:
    X: np.ndarray
    y: np.ndarray
    q: np.ndarray  # question position of each row


def per_question_priors(qs: Sequence[LQ], priors: dict[str, float]) -> list[dict[str, float]]:
    """`priors` for each question; when the questions come from several pools (`LQ.pool`), the positional
    priors (order evidence) are estimated per pool, since a position means different things in different pools."""
    pools = {q.pool for q in qs}
    if len(pools) < 2:
        return [priors] * len(qs)
    base = {k: v for k, v in priors.items() if not k.startswith(POSITION_PREFIX)}
    pos = {p: position_priors([position_keys(q.cands) for q in qs if q.pool == p]) for p in pools}
    merged = {p: {**base, **pos[p]} for p in pools}
    return [merged[q.pool] for q in qs]


def rows_of(qs: Sequence[LQ], priors: dict[str, float]) -> Rows:
    X, y, qi = [], [], []
    for k, (q, pri_q) in enumerate(zip(qs, per_question_priors(qs, priors), strict=True)):
        cl = cluster_features(q.cands, q.question, pri_q)
        pri = [pri_q.get(source_key(c.candidate.source), 0.6) for c in q.cands]
        for m, r in zip(cl.members, cl.rows, strict=True):
            best = max(m, key=lambda i: (pri[i], q.cands[i].scores[-1].score if q.cands[i].scores else 0.5, -i))
            lab = q.labels[best]
            if lab is None:
                continue
            X.append(r)
            y.append(int(lab))
            qi.append(k)
    return Rows(np.asarray(X, dtype=float).reshape(-1, len(FEATURES)), np.asarray(y, dtype=int), np.asarray(qi))


def new_model():
    """The cluster scorer, unfitted: a free and a vote-anchored booster averaged (`planner.ranker_model`)."""
    from planner.ranker_model import VoteAnchoredEnsemble

    return VoteAnchoredEnsemble(FEATURES)


class _Const:
    """A model for a training set with one class only."""

    def __init__(self, p: float):
        self.p = p

    def predict_proba(self, X):
        X = np.asarray(X)
        return np.column_stack([np.full(len(X), 1 - self.p), np.full(len(X), self.p)])


def train_model(rows: Rows):
    if len(rows.y) == 0:
        return _Const(0.5)
    if len(set(rows.y.tolist())) < 2:
        return _Const(float(rows.y[0]))
    return new_model().fit(rows.X, rows.y)


def _folds(qs: Sequence[LQ], k: int, seed: int | None = None):
    """K folds by database: scikit-learn's GroupKFold, balanced and deterministic; with `seed`, the databases are
    shuffled first (`GroupKFold(shuffle=True)`), one of many equally valid splits (`benchmarks.selection_mix
    splits` repeats the cross-fit over them to measure how much a figure owes to the split)."""
    from sklearn.model_selection import GroupKFold

    groups = [q.db_id for q in qs]
    k = min(k, len(set(groups)))
    if k < 2:
        raise ValueError(f"cross-validation needs questions from at least 2 databases (have {len(set(groups))})")
    gkf = GroupKFold(n_splits=k) if seed is None else GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(gkf.split(np.zeros(len(qs)), groups=groups))


# --------------------------------------------------------------------------------------------------
# Selection and confidence signals on a set of questions
# --------------------------------------------------------------------------------------------------


def _vote_pick(cands: list[ScoredCandidate]) -> int | None:
    from planner.select import select

    return select("vote", cands).index  # policies read the candidates, never change them: no copy


def signals(art: RankerArtifact, qs: Sequence[LQ], priors: dict[str, float]) -> list[dict]:
    """Per question: the ranker's choice and raw score, vote's choice and share, first's raw cluster score."""
    out = []
    for q, pri_q in zip(qs, per_question_priors(qs, priors), strict=True):
        r = rank_select(q.cands, q.question, pri_q, art)
        i, raw, cl, scores = r.index, r.raw, r.features, r.scores
        v = _vote_pick(q.cands)
        first_raw = None
        if cl.members:
            k0 = next((k for k, m in enumerate(cl.members) if 0 in m), None)
            first_raw = scores[k0] if k0 is not None else 0.0
        out.append({"ranker": i, "ranker_raw": raw, "vote": v, "vote_share": vote_share_of(q.cands, v),
                    "first": 0 if q.cands else None, "first_raw": first_raw,
                    "cluster_scores": scores, "members": cl.members})
    return out


KINDS = ("platt", "isotonic")  # calibrator kinds compared per fit; a tie goes to the first (the simpler)
MIN_CAL = 2  # fewer held-out pairs than this: no calibrator (the raw signal is used)


def fit_calibrator(x: Sequence[float], y: Sequence[int], groups: Sequence[str], k: int = 5) -> Calibrator | None:
    """P(correct) from a raw signal: Platt (logistic on logit(x)) or isotonic, whichever has the lower Brier
    score out of fold (GroupKFold by database over these pairs, up to `k` folds); a tie goes to Platt, the
    simpler map. Isotonic needs many pairs per step, Platt only two parameters: on small training sets
    Platt tends to win, on large ones isotonic can fit a non-sigmoid shape.
    One class only: a constant (Laplace-smoothed). Fewer than two groups: Platt without a comparison."""
    from sklearn.model_selection import GroupKFold

    xs, ys, gs = np.asarray(x, float), np.asarray(y, int), np.asarray(groups)
    n = len(xs)
    if n < MIN_CAL:
        return None
    if len(set(ys.tolist())) < 2:
        return Calibrator("const", const=(ys.sum() + 1.0) / (n + 2.0), n=n)
    kinds = KINDS
    n_groups = len(set(gs.tolist()))
    cv: dict[str, float] = {}
    if n_groups >= 2:
        err = dict.fromkeys(kinds, 0.0)
        for tr, te in GroupKFold(n_splits=min(k, n_groups)).split(xs, ys, groups=gs):
            for kind in kinds:
                cal = _fit_kind(kind, xs[tr], ys[tr])
                err[kind] += float(((cal.predict(xs[te]) - ys[te]) ** 2).sum())
        cv = {kind: err[kind] / n for kind in kinds}
        kind = min(kinds, key=lambda kk: (round(cv[kk], 12), kinds.index(kk)))
    else:
        kind = "platt"
    cal = _fit_kind(kind, xs, ys)
    cal.n, cal.cv = n, cv
    return cal


def _fit_kind(kind: str, x: np.ndarray, y: np.ndarray) -> Calibrator:
    if len(set(y.tolist())) < 2:
        return Calibrator("const", const=(y.sum() + 1.0) / (len(y) + 2.0))
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if kind == "isotonic":
        return Calibrator("isotonic", iso=IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y))
    lr = LogisticRegression(C=1.0).fit(logit(x).reshape(-1, 1), y)
    return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def fit_calibrators(qs: Sequence[LQ], sig: Sequence[dict]) -> dict:
    """Calibrators (`fit_calibrator`) from held-out signals to P(correct) for the ranker, vote, and any
    chosen cluster; the same rule for every policy."""
    rx, ry, rg, vx, vy, vg, mx, my, mg = [], [], [], [], [], [], [], [], []
    for q, s in zip(qs, sig, strict=True):
        if s["ranker"] is not None and q.labels[s["ranker"]] is not None:
            rx.append(s["ranker_raw"])
            ry.append(int(q.labels[s["ranker"]]))
            rg.append(q.db_id)
        if s["vote"] is not None and q.labels[s["vote"]] is not None:
            vx.append(s["vote_share"])
            vy.append(int(q.labels[s["vote"]]))
            vg.append(q.db_id)
        for m, sc in zip(s["members"], s["cluster_scores"], strict=True):
            lab = q.labels[m[0]]
            if lab is not None:
                mx.append(sc)
                my.append(int(lab))
                mg.append(q.db_id)
    cals = (("ranker", fit_calibrator(rx, ry, rg)), ("vote", fit_calibrator(vx, vy, vg)),
            ("model", fit_calibrator(mx, my, mg)))
    return {k: v for k, v in cals if v is not None}


def guard_items(qs: Sequence[LQ], sig: Sequence[dict]) -> list[tuple[list[float], int, list[bool | None]]]:
    """`planner.ranker.fit_vote_guard`'s input from held-out signals: per question with an executable candidate,
    its cluster scores, vote's cluster and each cluster's label (its first member's)."""
    out = []
    for q, s in zip(qs, sig, strict=True):
        if s["vote"] is None or not s["cluster_scores"]:
            continue
        kv = next(k for k, m in enumerate(s["members"]) if s["vote"] in m)
        out.append((list(s["cluster_scores"]), kv, [q.labels[m[0]] for m in s["members"]]))
    return out


def _finish(art: RankerArtifact, oq: Sequence[LQ], osig: list[dict], train: Sequence[LQ] = ()) -> None:
    """Calibrate `art` from held-out signals of models fitted without those questions; the chosen kinds and
    their cross-validated Brier scores go to `art.meta["calibrators"]`. The vote guard (`planner.ranker.vote_guard`:
    the margin by which the ranker must beat vote's cluster, and its training support) comes from the same held-out
    signals and `train`'s largest pool."""
    art.calibrators = fit_calibrators(oq, osig)
    most = max((len(q.cands) for q in (train or oq)), default=0)
    art.meta = {**art.meta, "calibrators": {k: {"kind": c.kind, "n": c.n, "cv_brier": c.cv}
                                             for k, c in art.calibrators.items()},
                "vote_guard": fit_vote_guard(guard_items(oq, osig), most)}


def _fit_plain(train: Sequence[LQ], mode: str) -> RankerArtifact:
    pri = train_priors(train, mode)
    return RankerArtifact(model=train_model(rows_of(train, pri)), features=list(FEATURES), prior_mode=mode,
                          priors={s: p for s, p in labelled_priors(source_outcomes(train),
                                                                    fallback=pool_agreement(train)).items()}
                          if mode == "labelled" else {})


def _fit_calibrated(train: Sequence[LQ], mode: str, inner: int = 3) -> RankerArtifact:
    """A model on all of `train` plus calibrators from an inner GroupKFold over `train`."""
    art = _fit_plain(train, mode)
    try:
        folds = _folds(train, inner)
    except ValueError:
        return art
    oq, osig = _held_out_signals(train, folds, mode)
    _finish(art, oq, osig, train)
    return art


def _held_out_signals(qs: Sequence[LQ], folds, mode: str) -> tuple[list[LQ], list[dict]]:
    """Each fold's questions (in fold order) with their `signals` from a ranker fitted on the other folds'."""
    oq: list[LQ] = []
    osig: list[dict] = []
    for tr, te in folds:
        sub = _fit_plain([qs[i] for i in tr], mode)
        te_q = [qs[i] for i in te]
        osig += signals(sub, te_q, test_priors(te_q, sub.priors, mode))
        oq += te_q
    return oq, osig


def _outcome(art: RankerArtifact, q: LQ, s: dict) -> dict:
    """One question's picks by ranker / vote / first, whether each is right, and their confidences."""
    ch = {"ranker": s["ranker"], "vote": s["vote"], "first": s["first"]}
    return {"chosen": ch, "ex": {p: bool(j is not None and q.labels[j]) for p, j in ch.items()},
            "confidence": _confidences(art, q, s)}


def _confidences(art: RankerArtifact, q: LQ, s: dict) -> dict[str, float | None]:
    def conf(name: str, chosen: int | None, raw: float | None) -> float | None:
        if chosen is None:
            return None
        e = q.cands[chosen].execution
        if e is None or not e.ok:
            return 0.0
        return art.calibrate(name, raw if raw is not None else 0.0)

    return {"ranker": conf("ranker", s["ranker"], s["ranker_raw"]), "vote": conf("vote", s["vote"], s["vote_share"]),
            "first": conf("model", s["first"], s["first_raw"])}


def crossfit(test: Sequence[LQ], k: int = 5, *, train: Sequence[LQ] | None = None, mode: str = "labelled",
             progress: bool = False, seed: int | None = None) -> list[dict]:
    """Cross-fitted selections: fold f's questions (by database) are scored by a ranker fitted on the
    `train` questions (default: `test` itself) of the other folds' databases. Returns per test question
    {chosen: {ranker, vote, first}, ex: {...}, confidence: {...}}. `seed`: the database split (`_folds`)."""
    train = list(test) if train is None else list(train)
    folds = _folds(test, k, seed)
    out: list[dict | None] = [None] * len(test)
    for _, te in folds:
        te_q = [test[i] for i in te]
        dbs = {q.db_id for q in te_q}
        tr_q = [q for q in train if q.db_id not in dbs]
        art = _fit_calibrated(tr_q, mode)
        sig = signals(art, te_q, test_priors(te_q, art.priors, mode))
        for i, q, s in zip(te, te_q, sig, strict=True):
            out[i] = _outcome(art, q, s)
    return out  # type: ignore[return-value]


def apply(art: RankerArtifact, qs: Sequence[LQ]) -> list[dict]:
    """Select with a fitted artifact (priors: its labelled ones + the pool's agreement estimate)."""
    sig = signals(art, qs, test_priors(qs, art.priors, art.prior_mode))
    return [_outcome(art, q, s) for q, s in zip(qs, sig, strict=True)]


def ex_summary(qs: Sequence[LQ], res: Sequence[dict]) -> dict:
    n = len(qs)
    out = {p: 100.0 * sum(r["ex"][p] for r in res) / n for p in ("ranker", "vote", "first")} if n else {}
    out["oracle"] = 100.0 * sum(any(bool(y) for y in q.labels) for q in qs) / n if n else None
    out["n"] = n
    return out


def fit(qs: Sequence[LQ], *, mode: str = "labelled", cv: int = 5, meta: dict | None = None) -> RankerArtifact:
    """The artifact: model on all `qs`, calibrators and metrics from a GroupKFold(cv) by database."""
    if mode not in PRIOR_MODES:
        raise ValueError(f"unknown prior mode {mode!r}; choose one of: {', '.join(PRIOR_MODES)}")
    labelled = [q for q in qs if any(y is not None for y in q.labels)]
    if not labelled:
        raise ValueError("no labelled questions to train on")
    art = _fit_plain(labelled, mode)
    metrics: dict = {"folds": cv, "group": "db_id"}
    try:
        folds = _folds(labelled, cv)
    except ValueError:
        folds = []
    if folds:
        oq, osig = _held_out_signals(labelled, folds, mode)
        _finish(art, oq, osig, labelled)
        res = [_outcome(art, q, s) for q, s in zip(oq, osig, strict=True)]
        metrics["ex"] = ex_summary(oq, res)
        from eval.selective import selective_metrics

        metrics["selective"] = {p: selective_metrics([r["confidence"][p] for r in res], [r["ex"][p] for r in res])
                                for p in ("ranker", "vote")}
        for p in metrics["selective"].values():
            p.pop("curve", None)
            p.pop("reliability", None)
    art.cv_metrics = metrics
    art.data_hash = data_hash(labelled)
    art.meta = {**art.meta, "n_questions": len(labelled), "n_databases": len({q.db_id for q in labelled}),
                "sources": sorted({source_key(c.candidate.source) for q in labelled for c in q.cands}), **(meta or {})}
    return art


def add_to_replay(result: dict, qs: Sequence[LQ], res: Sequence[dict]) -> None:
    """Write the ranker's choice and every policy's confidence into the replay records and re-summarize."""
    from eval.replay import summarize

    for q, r in zip(qs, res, strict=True):
        rec = q.record
        rec["chosen"]["ranker"] = r["chosen"]["ranker"]
        rec["ex"]["ranker"] = r["ex"]["ranker"]
        rec["confidence"] = {p: (None if v is None or math.isnan(v) else v) for p, v in r["confidence"].items()}
    result["summary"] = summarize(result["questions"], discriminator=result["summary"].get("discriminator"))



@dataclass
class RankerRun:
    """How replay adds the `ranker` policy: with a fitted artifact, or by cross-fitting (`cv` folds by
    database; `train`: another labelled pool to fit on, default the replayed pool itself)."""

    artifact: RankerArtifact | None = None
    cv: int | None = None
    mode: str = "labelled"
    train: list[LQ] | None = None
    info: dict = field(default_factory=dict)

    def run(self, result: dict, kept: list) -> None:
        qs = from_replay(result, kept)
        if not qs:
            return
        if self.artifact is not None:
            res = apply(self.artifact, qs)
            how = {"artifact": self.info.get("artifact"), "prior_mode": self.artifact.prior_mode,
                   "data_hash": self.artifact.data_hash}
        else:
            res = crossfit(qs, self.cv or 5, train=self.train, mode=self.mode)
            how = {"cv": self.cv or 5, "group": "db_id", "prior_mode": self.mode,
                   "train": self.info.get("train", "the replayed pool")}
        add_to_replay(result, qs, res)
        result["summary"]["ranker"] = how
