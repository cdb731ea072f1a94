"""eval.select_fit and eval.selective: fitting, cross-fitting by database, applying, and the selective metrics."""

from __future__ import annotations

import random

import pytest

from core.model import Candidate, ExecutionResult, ScoredCandidate
from eval import select_fit as sf
from eval.selective import selective_metrics


@pytest.fixture(autouse=True)
def _small_model(monkeypatch):
    """The same learner with fewer boosting rounds keeps these tests at a few seconds."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    monkeypatch.setattr(sf, "new_model", lambda: HistGradientBoostingClassifier(max_iter=25, max_leaf_nodes=7,
                                                                                   min_samples_leaf=10, random_state=0))


def _pool(seed: int, n_q: int = 72, n_db: int = 6, systems=None) -> list[sf.LQ]:
    """Questions where a strong system is usually right, weak ones often agree on a wrong result, and wrong
    results are often empty: a learnable pattern that a plain vote misses."""
    rng = random.Random(seed)
    systems = systems or {"strong": 0.85, "mid": 0.6, "weak1": 0.35, "weak2": 0.35, "weak3": 0.35}
    out = []
    for q in range(n_q):
        cands, labels = [], []
        for s, acc in systems.items():
            right = rng.random() < acc
            if right:
                fp, rows = f"true{q}", [[1]]
            elif s.startswith("weak") and rng.random() < 0.8:
                fp, rows = f"common{q}", []  # the weak systems' shared mistake: an empty result
            else:
                fp, rows = f"{s}{q}", [[2], [3]]
            ex = ExecutionResult(ok=True, fingerprint=fp, columns=["c"], rows=rows, row_count=len(rows))
            cands.append(ScoredCandidate(candidate=Candidate(sql=f"SELECT {fp}", source=s), execution=ex))
            labels.append(right)
        out.append(sf.LQ(q, f"db{q % n_db}", "How many things are there?", cands, labels,
                         record={"chosen": {}, "ex": {}, "difficulty": "easy"}))
    return out


def test_crossfit_beats_vote_and_never_trains_on_test_databases(monkeypatch):
    qs = _pool(0)
    seen: list[tuple[set, set]] = []
    real = sf._fit_calibrated

    def spy(train, mode, inner=3):
        seen.append({q.db_id for q in train})
        return real(train, mode, inner)

    monkeypatch.setattr(sf, "_fit_calibrated", spy)
    res = sf.crossfit(qs, k=3)
    assert len(seen) == 3 and all(len(dbs) == 4 for dbs in seen)  # 6 databases, 2 held out per fold
    ex = sf.ex_summary(qs, res)
    assert ex["ranker"] > ex["vote"] + 5  # the weak systems' agreement fools the vote, not the ranker
    assert all(r["confidence"]["ranker"] is None or 0.0 <= r["confidence"]["ranker"] <= 1.0 for r in res)


@pytest.mark.slow  # 85 s: fits on 22 published systems and selects among the other 21
def test_system_agnostic_ranker_transfers_to_unseen_systems():
    train = _pool(1, systems={"a_strong": 0.85, "a_weak1": 0.35, "a_weak2": 0.35, "a_weak3": 0.35})
    test = _pool(2, systems={"b_strong": 0.85, "b_weak1": 0.35, "b_weak2": 0.35, "b_weak3": 0.35})
    res = sf.crossfit(test, k=3, train=train, mode="agreement")
    ex = sf.ex_summary(test, res)
    assert ex["ranker"] >= ex["vote"]


def test_fit_writes_a_versioned_artifact_that_selects_elsewhere(tmp_path):
    from planner.ranker import FEATURES, RankerArtifact

    art = sf.fit(_pool(3), cv=3)
    assert art.features == list(FEATURES) and len(art.data_hash) == 64
    assert art.cv_metrics["ex"]["n"] == 72 and art.cv_metrics["group"] == "db_id"
    assert {"ranker", "vote", "model"} <= set(art.calibrators)
    assert {c["kind"] for c in art.meta["calibrators"].values()} <= {"platt", "isotonic", "const"}
    p = art.save(tmp_path / "r.joblib")
    back = RankerArtifact.load(p)
    test = _pool(4)
    res = sf.apply(back, test)
    assert sf.ex_summary(test, res)["ranker"] > sf.ex_summary(test, res)["vote"]
    with pytest.raises(ValueError, match="prior mode"):
        sf.fit(_pool(3), mode="nonsense")


def test_selective_metrics_on_a_known_ranking():
    conf = [0.9, 0.8, 0.7, 0.6, None]
    ok = [True, True, False, True, False]
    m = selective_metrics(conf, ok)
    assert m["ex_at_coverage"]["100"] == pytest.approx(60.0)
    assert m["ex_at_coverage"]["50"] == pytest.approx(200 / 3)  # the top ceil(2.5) = 3 answered, 2 right
    # risks at coverage 1/5..5/5: 0, 0, 1/3, 1/4, 2/5
    assert m["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 4 + 2 / 5) / 5)
    assert 0.0 <= m["ece"] <= 1.0 and len(m["curve"]) == 5


def _cal_data(n: int, prob, seed: int = 0):
    rng = random.Random(seed)
    x = [rng.random() for _ in range(n)]
    y = [int(rng.random() < prob(v)) for v in x]
    return x, y, [f"db{i % 10}" for i in range(n)]


def test_calibrator_choice_follows_grouped_cv_brier():
    import math

    # few pairs from a sigmoid-shaped truth: the two-parameter Platt map is chosen
    x, y, g = _cal_data(60, lambda v: 1 / (1 + math.exp(-3 * math.log(max(v, 1e-3) / max(1 - v, 1e-3)))))
    small = sf.fit_calibrator(x, y, g)
    assert small.kind == "platt" and set(small.cv) == {"platt", "isotonic"} and small.n == 60
    # many pairs from a two-step truth a sigmoid cannot follow: isotonic is chosen
    x, y, g = _cal_data(4000, lambda v: 0.1 if v < 0.3 else (0.6 if v < 0.7 else 0.95))
    big = sf.fit_calibrator(x, y, g)
    assert big.kind == "isotonic" and big.cv["isotonic"] < big.cv["platt"]
    assert abs(float(big.predict([0.5])[0]) - 0.6) < 0.08
    p = small.predict([0.0, 0.5, 1.0])
    assert all(0.0 <= v <= 1.0 for v in p) and p[0] < p[1] < p[2]


def test_calibrator_edge_cases():
    assert sf.fit_calibrator([0.5], [1], ["a"]) is None  # too few pairs: the raw signal is used
    const = sf.fit_calibrator([0.2, 0.9, 0.4], [1, 1, 1], ["a", "b", "c"])
    assert const.kind == "const" and const.predict([0.1])[0] == pytest.approx(4 / 5)  # Laplace-smoothed
    one_db = sf.fit_calibrator([0.1, 0.2, 0.8, 0.9], [0, 1, 0, 1], ["a"] * 4)
    assert one_db.kind == "platt" and one_db.cv == {}  # no grouped comparison possible


def test_ece_noise_floor_shrinks_with_n():
    from eval.selective import ece_noise_floor

    rng = random.Random(0)
    small = [0.6 + 0.4 * rng.random() for _ in range(200)]
    big = [0.6 + 0.4 * rng.random() for _ in range(5000)]
    f_small, f_big = ece_noise_floor(small), ece_noise_floor(big)
    assert 0.0 < f_big < f_small < 0.1
    assert ece_noise_floor([]) is None
    m = selective_metrics([0.9, 0.8, 0.7], [True, True, False])
    assert 0.0 <= m["ece_floor"] <= 1.0
