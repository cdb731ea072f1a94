"""`policy = "auto"` end to end through the real ASGI app (TestClient): after N = AUTO_MIN_LABELS feedback labels
in which `first` is right and `vote` wrong, auto moves from its default (vote: no ranker artifact) to `first` for
that pair, and GET /ranker says so and why."""

from __future__ import annotations

# candidate 0 stands alone; candidates 1 and 2 agree (another result): vote picks 1, first picks 0
SQLS = ["SELECT count(*) FROM singer WHERE age > 30", "SELECT count(*) FROM singer",
        "SELECT count(*) FROM singer WHERE 1 = 1"]


class _FixedGenerator:
    def __init__(self, spec=None, **_):
        self.name = spec.name

    def generate(self, request):
        from generators.base import GenerationResult

        return GenerationResult(sqls=list(SQLS), raw=list(SQLS), model=self.name)


def _client(make_client):
    from generators.base import GENERATORS

    if "test-fixed-auto" not in GENERATORS:
        GENERATORS.register("test-fixed-auto")(_FixedGenerator)
    return make_client(generators={"fixed": {"backend": "test-fixed-auto"}},
                       pairs={"fixed": {"generator": "fixed", "discriminator": "embedded"}},
                       defaults={"n": 3, "policy": "auto"})


def test_auto_moves_to_first_after_min_labels_where_first_beats_vote(make_client):
    from planner.ranker import AUTO_MIN_LABELS

    c = _client(make_client)
    q = {"question": "How many singers are older than 30?", "db_id": "demo", "pair": "fixed"}
    auto = c.get("/ranker").json()["auto"]
    assert auto["default"] == "vote" and auto["min_labels"] == AUTO_MIN_LABELS and auto["pairs"] == {}
    for n in range(1, AUTO_MIN_LABELS + 1):
        plan = c.post("/plan", json=q).json()
        assert plan["status"] == "ok", plan
        assert plan["chosen_sql"] == SQLS[1] and plan["reason"].startswith("auto -> vote"), plan["reason"]
        fb = c.post("/feedback", json={"plan_id": plan["id"], "corrected_sql": SQLS[0]})
        assert fb.status_code == 200 and fb.json()["correct"] is False, fb.text
        pair = c.get("/ranker").json()["auto"]["pairs"]["fixed"]
        assert pair["labelled"] == n
        assert pair["policy"] == ("first" if n >= AUTO_MIN_LABELS else "vote"), pair
    assert pair["ex"]["first"] == 100.0 and pair["ex"]["vote"] == 0.0 and "sign test" in pair["reason"]
    moved = c.post("/plan", json=q).json()
    assert moved["chosen_sql"] == SQLS[0] and moved["reason"].startswith("auto -> first"), moved["reason"]
    assert moved["policy"] == "auto"


def test_auto_needs_labels_and_ignores_unlabelled_feedback(make_client):
    c = _client(make_client)
    q = {"question": "How many singers are older than 30?", "db_id": "demo", "pair": "fixed"}
    plan = c.post("/plan", json=q).json()
    assert c.post("/feedback", json={"plan_id": plan["id"], "correct": None}).status_code in (200, 422)
    assert c.get("/ranker").json()["auto"]["pairs"].get("fixed", {"labelled": 0})["labelled"] == 0
