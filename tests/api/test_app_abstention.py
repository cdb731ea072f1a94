"""Plan confidence and abstention end to end through the real ASGI app (TestClient) on the demo database.

A fixed generator (three candidates whose results disagree) and the `vote` policy need no model: the plan's
confidence is the chosen result's vote share (no ranker artifact), so abstention is exercised exactly."""

from __future__ import annotations

import pytest

SQLS = ["SELECT count(*) FROM singer WHERE age > 30", "SELECT count(*) FROM singer",
        "SELECT count(*) FROM singer WHERE age > 40"]


class _FixedGenerator:
    def __init__(self, spec=None, **_):
        self.name = spec.name

    def generate(self, request):
        from generators.base import GenerationResult

        return GenerationResult(sqls=list(SQLS), raw=list(SQLS), model=self.name)


def _client(make_client, **defaults):
    from generators.base import GENERATORS

    if "test-fixed" not in GENERATORS:
        GENERATORS.register("test-fixed")(_FixedGenerator)
    return make_client(generators={"fixed": {"backend": "test-fixed"}},
                       pairs={"fixed": {"generator": "fixed", "discriminator": "embedded"}},
                       defaults={"n": 3, "policy": "vote", **defaults})


def test_plan_returns_confidence_and_abstains_below_the_threshold(make_client):
    c = _client(make_client)
    q = {"question": "How many singers are older than 30?", "db_id": "demo", "pair": "fixed"}
    ok = c.post("/plan", json=q)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["status"] == "ok" and abs(body["confidence"] - 1 / 3) < 1e-6
    low = c.post("/plan", json={**q, "abstain_below": 0.5}).json()
    assert low["status"] == "low_confidence" and low["chosen_sql"] == SQLS[0]  # the best candidate is still shown
    assert "abstain_below" in low["reason"]
    stored = c.get(f"/plans/{low['id']}").json()
    assert stored["status"] == "low_confidence" and stored["confidence"] == low["confidence"]
    assert c.post("/plan", json={**q, "abstain_below": 1.5}).status_code == 422


@pytest.mark.slow
def test_ranker_policy_through_the_api_scores_with_the_embedded_discriminator(make_client):
    c = _client(make_client)
    q = {"question": "How many singers are older than 30?", "db_id": "demo", "pair": "fixed", "policy": "ranker"}
    ranked = c.post("/plan", json=q).json()
    assert ranked["status"] == "ok" and ranked["policy"] == "ranker" and ranked["confidence"] is not None
    assert all(sc["scores"] for sc in ranked["candidates"])  # it uses the discriminator's scores when present


def test_configured_abstain_below_and_ranker_endpoints(make_client):
    c = _client(make_client, abstain_below=0.9)
    r = c.post("/plan", json={"question": "How many singers are older than 30?", "db_id": "demo", "pair": "fixed"})
    assert r.json()["status"] == "low_confidence"
    assert c.get("/ranker").json()["loaded"] is False
    reload = c.post("/ranker/reload")
    assert reload.status_code == 422 and "no ranker artifact" in reload.text
    assert "low_confidence" in c.get("/openapi.json").text


def test_get_ranker_shows_its_own_services_artifact(make_client, tmp_path):
    """The ranker belongs to the app's Planner: two services in one process, one with an artifact, one without,
    each report (and reload) their own."""
    import random

    from sklearn.linear_model import LogisticRegression

    from planner.ranker import FEATURES, RankerArtifact

    rng = random.Random(1)
    X = [[rng.random() for _ in FEATURES] for _ in range(40)]
    art = RankerArtifact(model=LogisticRegression().fit(X, [int(r[0] > 0.5) for r in X]), features=list(FEATURES),
                         prior_mode="agreement", data_hash="abc")
    path = art.save(tmp_path / "r.joblib")
    with_art = _client(make_client, ranker=str(path))
    plain = _client(make_client)
    got = with_art.get("/ranker").json()
    assert got["auto"]["default"] == "ranker"  # policy "auto" starts on the loaded ranker (issue 26)
    assert {k: v for k, v in got.items() if k not in ("meta", "auto")} | {"cv_metrics": {}} == {
        "loaded": True, "path": str(path), "prior_mode": "agreement", "data_hash": "abc", "cv_metrics": {}}
    assert plain.get("/ranker").json()["loaded"] is False
    assert with_art.post("/ranker/reload").json()["loaded"] is True
    assert plain.get("/ranker").json()["loaded"] is False
