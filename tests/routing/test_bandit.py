"""Bandit router: LinUCB learns from rewards, learns through update(), and its state persists in the
SQLAlchemy store (router_state) across a restart."""

from __future__ import annotations

import numpy as np
import pytest

from core.model import Question
from core.specs import PairSpec
from core.store import make_engine
from routing.bandit import META, BanditRouter, LinUCB, RouterStateRow
from routing.outcomes import Outcome
from routing.router import ROUTERS, RouteContext

QUESTIONS = [
    "How many singers do we have?",
    "What is the total number of stadiums?",
    "Count the number of concerts in 2014.",
    "How many countries are there?",
    "Show the name of the stadium with the highest capacity and the concerts held there after 2013.",
    "List the names of singers who performed in both 2014 and 2015, ordered by age descending.",
    "Which stadiums never hosted a concert, and what is their average capacity per location?",
    "Find the song names of singers above the average age who are not from France.",
]


def _ctx(text: str) -> RouteContext:
    pairs = {n: PairSpec(name=n, generator=f"g-{n}", discriminator="d") for n in ("cheap", "strong")}
    return RouteContext(question=Question(text=text, db_id="concert_singer"), pairs=pairs, models={},
                        schema_features={"n_tables": 4})


def test_linucb_learns_context_dependent_best_arm():
    rng = np.random.default_rng(0)
    ucb = LinUCB(d=3, alpha=0.3)
    arms = ["a", "b"]
    for _ in range(600):
        side = rng.integers(0, 2)
        x = np.array([1.0, float(side), 1.0 - side])
        arm = ucb.select(x, arms)
        p = (0.9 if side else 0.1) if arm == "a" else (0.1 if side else 0.9)
        ucb.update(arm, x, float(rng.random() < p))
    assert ucb.select(np.array([1.0, 1.0, 0.0]), arms, alpha=0.0) == "a"
    assert ucb.select(np.array([1.0, 0.0, 1.0]), arms, alpha=0.0) == "b"
    # Sherman-Morrison inverse stays exact
    for a in arms:
        assert np.allclose(ucb.Ainv[a], np.linalg.inv(ucb.A[a]), atol=1e-8)


def _train(router: BanditRouter, rounds: int = 6) -> None:
    """Feedback: cheap is right on counting questions only; strong always right but 20x the cost."""
    for _ in range(rounds):
        for q in QUESTIONS:
            ctx = _ctx(q)
            count = q.startswith(("How many", "What is the total", "Count"))
            router.update(ctx, "cheap", count, 0.005)
            router.update(ctx, "strong", True, 0.1)


def test_bandit_learns_from_feedback_and_records_predictions():
    router = ROUTERS.create("bandit", alpha=0.0, lam=0.5, cost_scale=0.1)
    d0 = router.decide(_ctx(QUESTIONS[0]))
    assert d0.predicted_quality is None  # nothing observed yet
    _train(router)
    d = router.decide(_ctx("How many concerts are there?"))
    assert d.pair == "cheap" and d.router == "bandit"
    assert d.predicted_cost == pytest.approx(0.005) and d.predicted_quality > 0.5
    hard = router.decide(_ctx("List the names of singers who performed in both 2014 and 2015, ordered by age."))
    assert hard.pair == "strong" and hard.predicted_cost == pytest.approx(0.1)
    assert d.details["counts"] == {"cheap": 48, "strong": 48}


def test_state_survives_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    r1 = BanditRouter(alpha=0.4, lam=0.5, engine=make_engine(url), cost_scale=0.1)
    _train(r1, rounds=2)
    before = r1.state()
    decisions = [r1.decide(_ctx(q)).model_dump(exclude={"details"}) for q in QUESTIONS]
    del r1
    r2 = BanditRouter(alpha=0.4, lam=0.5, engine=make_engine(url))  # a new service process on the same store
    after = r2.state()
    assert after["meta"]["cost_scale"] == 0.1
    assert set(after["arms"]) == {"cheap", "strong"}
    for arm in ("cheap", "strong"):
        assert after["arms"][arm]["n"] == before["arms"][arm]["n"] == 16
        assert np.allclose(after["arms"][arm]["A"], before["arms"][arm]["A"])
        assert np.allclose(after["arms"][arm]["b"], before["arms"][arm]["b"])
    assert [r2.decide(_ctx(q)).model_dump(exclude={"details"}) for q in QUESTIONS] == decisions
    # learning continues from the restored state and is written through
    r2.update(_ctx(QUESTIONS[0]), "cheap", True, 0.005)
    r3 = BanditRouter(alpha=0.4, lam=0.5, engine=make_engine(url))
    assert r3.state()["arms"]["cheap"]["n"] == 17
    # another key is another router's state; mismatched features are refused
    assert BanditRouter(engine=make_engine(url), key="other").state()["arms"] == {}
    with pytest.raises(ValueError, match="other features"):
        BanditRouter(engine=make_engine(url), embed_dim=8)
    r3.reset()
    assert BanditRouter(engine=make_engine(url)).state()["arms"] == {}


def test_warm_start_from_logged_outcomes(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    outs = []
    for q in QUESTIONS * 4:
        count = q.startswith(("How many", "What is the total", "Count"))
        outs += [Outcome(question=q, db_id="concert_singer", pair="cheap", correct=count, cost=0.005),
                 Outcome(question=q, db_id="concert_singer", pair="strong", correct=True, cost=0.1),
                 Outcome(question=q, db_id="concert_singer", pair="strong", correct=None, cost=0.1)]  # unlabelled: skipped
    router = BanditRouter(alpha=0.0, lam=0.5, engine=engine)
    assert router.warm_start(outs) == 64
    assert router.cost_scale == pytest.approx(0.1)  # most expensive pair's mean cost
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        assert {r.arm for r in s.query(RouterStateRow).all()} == {"cheap", "strong", META}
    assert router.decide(_ctx("How many stadiums are there?")).pair == "cheap"
    assert router.decide(_ctx(QUESTIONS[5])).pair == "strong"


def test_bad_params():
    with pytest.raises(ValueError):
        BanditRouter(alpha=-1)
    with pytest.raises(ValueError):
        LinUCB(d=0)


def test_replicas_on_one_store_lose_no_update(tmp_path):
    """Two routers (two replicas) on one store, updates interleaved: every update is counted in the store
    (each is a read-modify-write of the arm's row under a row lock), none overwritten by the other's copy."""
    import threading

    url = f"sqlite:///{tmp_path / 'store.db'}"
    a = BanditRouter(alpha=0.4, lam=0.5, engine=make_engine(url), cost_scale=0.1)
    b = BanditRouter(alpha=0.4, lam=0.5, engine=make_engine(url), cost_scale=0.1)
    for i, q in enumerate(QUESTIONS):
        (a if i % 2 else b).update(_ctx(q), "cheap", i % 3 == 0, 0.01)
    threads = [threading.Thread(target=lambda r=r: [r.update(_ctx(q), "strong", True, 0.02) for q in QUESTIONS])
               for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = BanditRouter(alpha=0.4, lam=0.5, engine=make_engine(url)).state()["arms"]
    assert stored["cheap"]["n"] == len(QUESTIONS) and stored["strong"]["n"] == 2 * len(QUESTIONS)
    assert stored["cheap"]["correct_sum"] == sum(1 for i in range(len(QUESTIONS)) if i % 3 == 0)


def test_warm_start_arm_is_the_batch_form_of_update():
    """`LinUCB.warm_start_arm` (public; the offline study's warm start uses it) equals one `update` per row."""
    rng = np.random.default_rng(0)
    X, r = rng.normal(size=(50, 4)), rng.normal(size=50)
    cost, corr = rng.random(50), rng.integers(0, 2, 50).astype(float)
    batch, seq = LinUCB(4, 0.5), LinUCB(4, 0.5)
    batch.warm_start_arm("a", X, r, cost, corr)
    for x, rr, c, k in zip(X, r, cost, corr, strict=True):
        seq.update("a", x, rr, c, k)
    for name in ("A", "b", "Ainv"):
        np.testing.assert_allclose(getattr(batch, name)["a"], getattr(seq, name)["a"], atol=1e-9)
    assert batch.n["a"] == seq.n["a"] == 50
    assert batch.cost_sum["a"] == pytest.approx(seq.cost_sum["a"]) and batch.correct_sum["a"] == seq.correct_sum["a"]
    batch.warm_start_arm("a", X[:5], r[:5])  # adds to what is there
    assert batch.n["a"] == 55
    with pytest.raises(ValueError, match="rewards"):
        batch.warm_start_arm("b", X, r[:3])
