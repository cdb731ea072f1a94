"""POST /plan with router carrot | bandit | cascade on the real service (real ASGI app, embedded model,
DuckDB sandbox): the Plan carries the route decision with predicted quality and cost; feedback reaches
the bandit, which persists it in the store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.model import Plan
from planner.config import config_from_dict
from routing.carrot import fit_carrot
from routing.features import FeatureConfig, Featurizer
from routing.outcomes import Outcome, OutcomeMatrix

QUESTIONS = ["How many singers are there?", "How many stadiums are there?", "How many concerts are there?",
             "List the names of singers older than the average age, ordered by age.",
             "Which stadium hosted the most concerts in 2014 and what is its capacity?",
             "Show the names of singers who performed in both 2014 and 2015."]


@pytest.fixture(scope="module")
def carrot_artifact(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("carrot")
    outs = []
    for i, q in enumerate(QUESTIONS * 3):
        easy = q.startswith("How many")
        outs += [Outcome(question=q, db_id="demo", question_id=str(i), pair="cheap", correct=easy, cost=0.0001),
                 Outcome(question=q, db_id="demo", question_id=str(i), pair="strong", correct=True, cost=0.01)]
    M = OutcomeMatrix.from_outcomes(outs, ["cheap", "strong"])
    cfg = FeatureConfig(embeddings=False)  # cheap features keep the service test light; embeddings: tests/planner
    X = Featurizer(cfg).transform(M.questions)
    return str(fit_carrot(M, X, feature_config=cfg, estimator="knn", k=3, mu=0.3).save(tmp_path / "carrot.joblib"))


@pytest.fixture(scope="module")
def client(carrot_artifact, tmp_path_factory):
    """One service (models loaded once) with two priced pairs over the embedded model; tiny budgets."""
    emb = {"backend": "embedded"}
    cfg = config_from_dict({
        "generators": {"small": {**emb, "cost_per_1k_input": 0.0001, "cost_per_1k_output": 0.0002},
                       "big": {**emb, "cost_per_1k_input": 0.01, "cost_per_1k_output": 0.03}},
        "discriminators": {"judge": {**emb}},
        "pairs": {"cheap": {"generator": "small", "discriminator": "judge"},
                  "strong": {"generator": "big", "discriminator": "judge"}},
        "routers": {"carrot": {"artifact": carrot_artifact}, "bandit": {"alpha": 0.5, "lam": 0.5, "embeddings": False},
                    "cascade": {"tau": 0.5, "vote_margin": 0.5}},
        "defaults": {"n": 1, "max_tokens": 8, "reasoning_budget": 8},
        "limits": {"concurrency": 1, "queue_size": 4, "deadline_s": 600, "max_deadline_s": 600},
        "store_url": f"sqlite:///{tmp_path_factory.mktemp('api') / 'store.db'}",
    }, env={})
    with TestClient(create_app(cfg), raise_server_exceptions=False) as c:
        yield c


def _plan(c, router, question="How many singers are there?"):
    r = c.post("/plan", json={"question": question, "db_id": "demo", "router": router, "policy": "vote"})
    assert r.status_code == 200, r.text
    return Plan.model_validate(r.json())


def test_plan_with_each_router_records_the_decision(client):
    p = _plan(client, "carrot")
    assert p.route.router == "carrot" and p.route.pair == "cheap"
    assert p.route.predicted_cost == pytest.approx(0.0001) and 0.0 <= p.route.predicted_quality <= 1.0
    assert set(p.route.details["candidates"]) == {"cheap", "strong"}
    hard = _plan(client, "carrot", QUESTIONS[4])
    assert hard.route.pair == "strong" and hard.route.predicted_cost == pytest.approx(0.01)

    c = _plan(client, "cascade")
    assert c.route.router == "cascade" and c.route.steps[0] == "cheap"
    assert c.route.predicted_cost is not None and c.route.predicted_cost > 0
    assert c.route.details["signals"][0]["step"] == 0  # the escalation evidence after the cheap step
    assert c.route.escalated == (len(c.route.steps) == 2)

    b = _plan(client, "bandit")
    assert b.route.router == "bandit" and b.route.pair in ("cheap", "strong")
    assert set(b.route.details["arms"]) == {"cheap", "strong"}


def test_feedback_trains_the_bandit_and_persists(client):
    router = client.app.state.planner.router("bandit")
    b = _plan(client, "bandit")
    seen = router.ucb.n.get(b.route.pair, 0)
    fb = client.post("/feedback", json={"plan_id": b.id, "correct": True})
    assert fb.status_code == 200 and fb.json()["forwarded_to_router"] == "bandit"
    assert router.ucb.n[b.route.pair] == seen + 1
    # the state is in the service's store: a router built on the same engine (a restart) resumes it
    from routing.bandit import BanditRouter

    again = BanditRouter(alpha=0.5, lam=0.5, embeddings=False, engine=client.app.state.store.engine)
    assert again.state()["arms"][b.route.pair]["n"] == seen + 1
    assert again.state() == router.state()
    # the service logged the plan's outcome and the feedback labelled it (routing_outcomes table)
    from routing.outcomes import OutcomeStore

    logged = [o for o in OutcomeStore(client.app.state.store.engine).load() if o.plan_id == b.id]
    assert len(logged) == 1 and logged[0].correct is True and logged[0].pair == b.route.pair
