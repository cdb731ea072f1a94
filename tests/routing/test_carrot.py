"""CARROT router: learns per-pair quality from logged outcomes on real Spider questions (real MiniLM
embeddings), trades it against cost with mu, calibrates mu to a budget, round-trips versioned artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.model import Question
from core.settings import spider_dir
from core.specs import PairSpec
from routing.carrot import ArtifactError, CarrotModel, CarrotRouter, fit_carrot, meta_path
from routing.features import FeatureConfig, Featurizer
from routing.outcomes import Outcome, OutcomeMatrix, write_jsonl
from routing.router import ROUTERS, Escalation, RouteContext

CHEAP, STRONG = 0.001, 0.1


def _dev():
    f = spider_dir() / "dev.json"
    if not f.is_file():
        pytest.skip(f"Spider dev data not found at {f}")
    return json.loads(f.read_text())


def _is_count(q: str) -> bool:
    return q.lower().startswith(("how many", "count", "what is the number", "what is the total number",
                                 "find the number", "show the number", "return the number"))


@pytest.fixture(scope="module")
def outcomes():
    """A known rule: the cheap pair is right exactly on counting questions, the strong pair always."""
    dev = _dev()
    rows = dev[:400]
    out = []
    for i, d in enumerate(rows):
        q = d["question"]
        out.append(Outcome(question=q, db_id=d["db_id"], question_id=str(i), pair="cheap", correct=_is_count(q),
                           cost=CHEAP, source="test"))
        out.append(Outcome(question=q, db_id=d["db_id"], question_id=str(i), pair="strong", correct=True,
                           cost=STRONG, source="test"))
    return out


@pytest.fixture(scope="module")
def matrix(outcomes):
    M = OutcomeMatrix.from_outcomes(outcomes, ["cheap", "strong"])
    X = Featurizer(FeatureConfig()).transform(M.questions, None)
    return M, X


def _split(M):
    dbs = sorted(set(M.db_ids))
    test_dbs = set(dbs[::4])
    te = np.array([d in test_dbs for d in M.db_ids])
    return np.flatnonzero(~te), np.flatnonzero(te)


@pytest.mark.parametrize("estimator", ["knn", "logreg"])
def test_learns_which_questions_the_cheap_pair_gets_right(matrix, estimator):
    M, X = matrix
    tr, te = _split(M)
    model = CarrotModel(["cheap", "strong"], FeatureConfig(), estimator, k=15, C=0.5, smoothing=1).fit(X[tr], M.subset(tr))
    q, c = model.predict(X[te])
    truth = M.correct[te, 0] > 0
    # predicted P(cheap correct) separates counting from non-counting questions on unseen databases
    assert q[truth, 0].mean() > q[~truth, 0].mean() + 0.4
    assert np.allclose(c[:, 0], CHEAP) and np.allclose(c[:, 1], STRONG)
    pick = model.choose(q, c, mu=0.3)  # quality dominates but cost breaks near-ties
    routed_ok = np.where(pick == 0, M.correct[te, 0], M.correct[te, 1])
    assert routed_ok.mean() >= 0.9
    assert (pick == 0).mean() >= 0.5 * truth.mean()  # it does send counting questions to the cheap pair


def test_mu_extremes(matrix):
    M, X = matrix
    model = CarrotModel(["cheap", "strong"], FeatureConfig(), "knn", k=10).fit(X, M)
    q, c = model.predict(X[:50])
    assert (model.choose(q, c, 0.0) == 1).all()  # pure quality: strong is never worse
    assert (model.choose(q, c, 1.0) == 0).all()  # pure cost: the cheapest
    assert model.cost_scale == pytest.approx(STRONG)


def test_mu_is_calibrated_to_a_target_share_on_heldout_folds(matrix):
    M, X = matrix
    model = fit_carrot(M, X, feature_config=FeatureConfig(), estimator="knn", k=15, target_share=0.4)
    assert model.calibration["method"] == "target_share"
    assert model.calibration["achieved_on_heldout"] <= 0.4
    assert model.calibration["strong"] == "strong"
    # looser budget -> smaller (quality-leaning) mu
    loose = fit_carrot(M, X, feature_config=FeatureConfig(), estimator="knn", k=15, target_share=0.9)
    assert loose.mu <= model.mu
    by_cost = fit_carrot(M, X, feature_config=FeatureConfig(), estimator="knn", k=15, target_cost=0.05)
    assert by_cost.calibration["achieved_on_heldout"] <= 0.05
    with pytest.raises(ValueError):
        model.calibrate(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)))


def test_artifact_roundtrip_version_and_hash_checks(matrix, tmp_path):
    M, X = matrix
    model = fit_carrot(M, X, feature_config=FeatureConfig(), estimator="logreg", mu=0.2)
    path = model.save(tmp_path / "carrot.joblib")
    meta = json.loads(meta_path(path).read_text())
    assert meta["format_version"] == 1 and meta["kind"] == "carrot"
    assert meta["training"]["data_hash"] == M.data_hash()
    assert meta["feature_config"]["embeddings"] is True and meta["mu"] == 0.2
    loaded = CarrotModel.load(path)
    q1, _ = model.predict(X[:20])
    q2, _ = loaded.predict(X[:20])
    assert np.allclose(q1, q2)
    meta["format_version"] = 99
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="v99"):
        CarrotModel.load(path)
    meta["format_version"] = 1
    meta["training"]["data_hash"] = "0" * 64
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="hash"):
        CarrotModel.load(path)
    with pytest.raises(ArtifactError, match="not found"):
        CarrotModel.load(tmp_path / "missing.joblib")


def _ctx(text: str, names=("cheap", "strong")) -> RouteContext:
    pairs = {n: PairSpec(name=n, generator=f"gen-{n}", discriminator="disc") for n in names}
    return RouteContext(question=Question(text=text, db_id="concert_singer"), pairs=pairs, models={},
                        schema_features={"n_tables": 4, "n_columns": 21})


def test_router_decision_records_predicted_quality_and_cost(matrix, tmp_path):
    M, X = matrix
    path = fit_carrot(M, X, feature_config=FeatureConfig(), estimator="knn", k=15, mu=0.4).save(tmp_path / "c.joblib")
    router = ROUTERS.create("carrot", artifact=str(path))
    d = router.decide(_ctx("How many singers do we have?"))
    assert d.router == "carrot" and d.pair == "cheap" and d.generator == "gen-cheap"
    assert d.predicted_cost == pytest.approx(CHEAP) and 0.3 < d.predicted_quality <= 1.0
    assert set(d.details["candidates"]) == {"cheap", "strong"}
    d2 = router.decide(_ctx("Show the name and the release year of the song by the youngest singer."))
    assert d2.pair == "strong" and d2.predicted_cost == pytest.approx(STRONG)
    assert router.should_escalate(None, 0, ["cheap", "strong"]) == Escalation(False)
    # mu override: pure cost
    assert CarrotRouter(artifact=str(path), mu=1.0).decide(_ctx("List all stadium names.")).pair == "cheap"
    # unknown pairs: explicit fallback, not a crash
    fb = router.decide(_ctx("How many singers?", names=("x", "y")))
    assert fb.pair == "x" and fb.details["fallback"] is True
    with pytest.raises(ArtifactError):
        CarrotRouter()


def test_route_fit_cli(outcomes, tmp_path):
    from cli.main import main

    src = tmp_path / "outcomes.jsonl"
    write_jsonl(outcomes[:200], src)
    out = tmp_path / "art" / "carrot.joblib"
    assert main(["route", "fit", "--outcomes", str(src), "--out", str(out), "--estimator", "knn", "--k", "5",
                 "--target-share", "0.5"]) == 0
    model = CarrotModel.load(out)
    assert model.pairs == ["cheap", "strong"] and model.calibration["method"] == "target_share"
    assert main(["route", "show", str(out)]) == 0
    assert main(["route", "fit", "--outcomes", str(tmp_path / "nope.jsonl"), "--out", str(out)]) == 1
    assert main(["route", "fit", "--outcomes", str(src), "--out", str(out), "--mu", "3"]) == 2
    # --data: the schema features' databases (the option every command shares); a bad entry is bad usage
    assert main(["route", "fit", "--outcomes", str(src), "--out", str(out), "--mu", "0.5", "--no-embeddings",
                 "--data", str(spider_dir() / "database")]) == 0
    assert main(["route", "fit", "--outcomes", str(src), "--out", str(out), "--mu", "0.5",
                 "--data", str(tmp_path / "missing")]) == 2


def test_dominated_pairs_are_never_chosen(matrix):
    M, X = matrix
    # a third pair that is as accurate as "cheap" but costs more: dominated on training data
    y = np.concatenate([M.correct, M.correct[:, :1]], axis=1)
    c = np.concatenate([M.cost, np.full((len(M.keys), 1), 0.05)], axis=1)
    M3 = OutcomeMatrix(M.keys, M.questions, M.db_ids, ["cheap", "strong", "pricey"], y, c, c * 0, c * 0)
    model = CarrotModel(M3.pairs, FeatureConfig(), "knn", k=10).fit(X, M3)
    assert model.active.tolist() == [True, True, False]
    q, cc = model.predict(X)
    assert not np.any(model.choose(q, cc, 0.0) == 2)
    keep = CarrotModel(M3.pairs, FeatureConfig(), "knn", k=10, prune_dominated=False).fit(X, M3)
    assert keep.active.all()
