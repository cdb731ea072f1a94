"""Offline routing evaluation: metrics, the cascade replay, the bandit replay, the cross-validated study
(on real Spider questions and features with outcomes from a known rule) and reports; the full study on the
published systems is a slow test. The command line: tests/cli/commands/test_eval.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.settings import spider_dir
from eval.routing import (
    RoutingData,
    cascade_decisions,
    curve_metrics,
    default_ladder,
    envelope,
    evaluate_routing,
    logged_candidates,
    plot_curves,
    plot_regret,
    report_markdown,
    simulate_bandit_regret,
)
from routing.features import FeatureConfig, Featurizer
from routing.outcomes import Outcome, OutcomeMatrix

SYSTEMS = {"legacy": 1e-6, "mid": 1e-4, "strong": 1e-2}


def test_curve_metrics_on_known_points():
    pts = [(0.1, 0.70), (0.3, 0.78), (0.6, 0.80), (1.0, 0.80)]
    assert envelope(pts, 0.05) == 0.0 and envelope(pts, 0.35) == 0.78
    m = curve_metrics(pts, strong_ex=0.80)
    assert m["auc"] == pytest.approx(0.2 * 0.70 + 0.3 * 0.78 + 0.4 * 0.80)
    assert m["cost_to_100"] == 0.6 and m["cost_to_95"] == 0.3  # 95% of 0.80 = 0.76 > 0.70
    assert m["ex_at_30"] == 0.78
    assert m["saving_at_1pt_loss"] == pytest.approx(0.4)  # 0.78 < 0.80 - 0.01: first at x=0.6
    assert curve_metrics([(0.5, 0.5)], 0.9)["cost_to_100"] is None


def test_cascade_replay_escalates_on_disagreement_and_pools():
    correct = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 0]], dtype=float)
    cost = np.tile([1.0, 2.0, 10.0], (3, 1))
    fps = [["g", "g", "g"], ["w", "g", "g"], [None, None, "x"]]
    rungs = [[0, 1], [2]]
    c, k, steps = cascade_decisions(rungs, fps, np.arange(3), 0.5, correct, cost)
    assert steps.tolist() == [1, 2, 2]  # agree -> stop; 1-1 split -> escalate; nothing executes -> escalate
    assert k.tolist() == [3.0, 13.0, 13.0]  # pooled: the cheap rung's cost is kept
    assert c.tolist() == [1.0, 1.0, 0.0]  # q1: the pooled vote (2 'g' of 3) wins
    never = cascade_decisions(rungs, fps, np.arange(3), -1.0, correct, cost)
    assert never[2].tolist() == [1, 1, 2]  # threshold -1: escalate only when nothing executes
    lad = default_ladder(np.array([0.5, 0.7, 0.6, 0.9]), np.array([1e-6, 5e-5, 5e-4, 1e-2]), list("abcd"),
                         per_rung=1)
    assert lad == [[1], [2], [3]]


def _service_cascade(rungs, fps_row, threshold):
    """The service's cascade on one question's logged candidates: the `cascade` router's should_escalate after
    each rung (as the pipeline calls it), then the pipeline's select stage with policy `vote`."""
    from core.model import Plan, Question
    from planner import stages
    from routing.cascade import CascadeRouter

    router = CascadeRouter(tau=0.0, vote_margin=threshold)
    ladder = [f"rung{k}" for k in range(len(rungs))]
    pooled: list[int] = []
    for k, rung in enumerate(rungs):
        pooled.extend(rung)
        cands = logged_candidates(fps_row, pooled)
        if not router.should_escalate(Plan(question=Question(text="q", db_id="d"), candidates=cands), k, ladder).escalate:
            break
    i, _ = stages.select(cands, "vote")
    return k + 1, (None if i is None else pooled[i])


def test_the_study_runs_the_services_cascade_rule():
    """Pins the offline study to the service: on the same logged candidates, `cascade_decisions` makes the
    decisions the `cascade` router (escalation) and the pipeline's `vote` selection make, question by
    question and threshold by threshold (fingerprints with ties, splits, and systems that do not execute)."""
    rng = np.random.default_rng(7)
    n, m = 300, 7
    fps = [[None if rng.random() < 0.2 else f"r{rng.integers(0, 3)}" for _ in range(m)] for _ in range(n)]
    correct = rng.integers(0, 2, size=(n, m)).astype(float)
    cost = np.tile(np.linspace(1.0, 10.0, m), (n, 1))
    rungs = [[0, 1, 2], [3, 4, 5], [6]]
    for thr in (0.0, 0.2, 0.34, 0.5, 0.67, 0.8, 1.0):
        c, _, steps = cascade_decisions(rungs, fps, np.arange(n), thr, correct, cost)
        for i in range(n):
            n_steps, picked = _service_cascade(rungs, fps[i], thr)
            assert steps[i] == n_steps, (thr, i, fps[i])
            assert c[i] == (correct[i, picked] if picked is not None else 0.0), (thr, i, fps[i])


@pytest.fixture(scope="module")
def data() -> RoutingData:
    f = spider_dir() / "dev.json"
    if not f.is_file():
        pytest.skip(f"Spider dev data not found at {f}")
    dev = json.loads(f.read_text())[:320]
    rng = np.random.default_rng(1)
    outs = []
    fps = []
    for i, d in enumerate(dev):
        q = d["question"]
        easy = q.lower().startswith(("how many", "count", "what is the number", "find the number"))
        labels = {"legacy": easy, "mid": easy or rng.random() < 0.5, "strong": rng.random() < 0.9}
        row = []
        for s, c in SYSTEMS.items():
            outs.append(Outcome(question=q, db_id=d["db_id"], question_id=str(i), pair=s, correct=labels[s], cost=c))
            row.append("gold" if labels[s] else f"wrong-{s}")
        fps.append(row)
    M = OutcomeMatrix.from_outcomes(outs, list(SYSTEMS))
    X = Featurizer(FeatureConfig()).transform(M.questions)
    Xb = Featurizer(FeatureConfig(project_dim=16, bias=True)).transform(M.questions)
    ex = np.ones((len(M.keys), 3), dtype=bool)
    return RoutingData(M, X, Xb, {}, ex, fps)


def test_cross_validated_study(data, tmp_path):
    rep = evaluate_routing(data, folds=4, lambdas=(0.0, 0.5, 5.0), progress=False)
    pol = rep["policies"]
    r = rep["reference"]
    assert r["always_strongest_ex"] == pytest.approx(data.correct()[:, 2].mean())
    assert r["always_strongest_cost"] == pytest.approx(1e-2)
    assert r["always_cheapest_cost"] == pytest.approx(1e-6)
    for f in rep["folds"]:  # the split is by database
        assert f["strongest"] == "strong" and f["cheapest"] == "legacy"
    test_dbs = [db for f in rep["folds"] for db in f["test_dbs"]]
    assert len(test_dbs) == len(set(test_dbs)) == len(set(data.M.db_ids))
    oracle = pol["oracle"]["points"][0]
    assert all(oracle["ex"] >= p["ex"] - 1e-12 for name in pol for p in pol[name]["points"])
    for name in ("carrot-knn", "carrot-logreg", "bandit", "cascade", "random-matched", "best-fixed-under-budget"):
        assert pol[name]["points"], name
        assert 0.0 <= pol[name]["metrics"]["auc"] <= 1.0
    # CARROT learns that legacy/mid answer the counting questions: strongest-level EX for less cost
    knn = pol["carrot-knn"]["metrics"]
    assert knn["best_ex"] >= r["always_strongest_ex"]
    assert knn["saving_at_1pt_loss"] is not None and knn["saving_at_1pt_loss"] > 0.05
    assert knn["auc"] > pol["random-matched"]["metrics"]["auc"]
    # random at matched cost interpolates between the two fixed baselines
    rp = pol["random-matched"]["points"]
    assert rp[0]["ex"] == pytest.approx(r["always_cheapest_ex"]) and rp[-1]["ex"] == pytest.approx(r["always_strongest_ex"])
    md = report_markdown(rep)
    assert "| carrot-knn |" in md and "saving at <=1pt loss" in md
    plot_curves(rep, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_bandit_regret_flattens(data, tmp_path):
    reg = simulate_bandit_regret(data, lam=0.5, alpha=0.3, passes=3, seed=0)
    assert reg["steps"] == 3 * data.n
    assert reg["regret_per_step_last_quarter"] < reg["regret_per_step_first_quarter"]
    assert reg["cumulative_regret"][-1] < reg["cumulative_regret_random"][-1]
    plot_regret(reg, tmp_path / "regret.png")
    assert (tmp_path / "regret.png").stat().st_size > 5_000


@pytest.mark.slow
def test_full_study_on_published_systems(tmp_path):
    if not (spider_dir() / "dev.json").is_file():
        pytest.skip("Spider dev data not found")
    from eval.routing import run_study

    rep = run_study(tmp_path, folds=5, progress=False, log=lambda s: None)
    assert rep["n_systems"] == 43 and rep["n_questions"] == 1034
    for f in ("report.json", "report.md", "curves.png", "regret.png"):
        assert (tmp_path / f).is_file()
    assert rep["policies"]["carrot-knn"]["metrics"]["auc"] >= rep["policies"]["random-matched"]["metrics"]["auc"]
