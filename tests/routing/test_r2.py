"""routing.r2: Route-and-Reason's allocator (features, supervised stage, GRPO), its artifacts and the `r2` router."""

from __future__ import annotations

import pytest

from core.model import Question
from core.specs import PairSpec
from routing.carrot import ArtifactError
from routing.r2 import (
    Allocator,
    Labelled,
    R2Router,
    SubtaskFeatures,
    fit_grpo,
    fit_supervised,
    group_advantages,
)
from routing.registry_all import ROUTERS
from routing.router import RouteContext

TIERS = ["cheap", "strong"]


def f(text: str, index: int = 0, n: int = 1, tables: int = 1, conf: float = 0.9) -> SubtaskFeatures:
    return SubtaskFeatures(text=text, index=index, n_steps=n, n_needs=index, n_tables=tables, n_columns=4 * tables,
                           tables_linked=1.0, confidence=conf)


EASY = [f("How many singers are there?"), f("List the names of all stadiums.")]
HARD = [f("Average capacity of stadiums that had a concert in 2014 joined with singers older than the average age",
          index=1, n=3, tables=3, conf=0.3),
        f("Names of singers in concerts of both 2014 and 2015, intersected", index=2, n=3, tables=3, conf=0.2)]


def _data() -> list[Labelled]:
    return [Labelled("e", tuple(EASY), (0, 0)), Labelled("h", tuple(HARD), (1, 1))]


def test_group_advantages_sum_to_zero_and_vanish_when_rewards_are_equal():
    a = group_advantages([1.0, 0.0, 0.5, -0.2])
    assert float(a.sum()) == pytest.approx(0.0, abs=1e-6)
    assert float(a[0]) > 0 > float(a[3])
    assert group_advantages([0.3, 0.3, 0.3]).abs().sum() == 0


def test_supervised_stage_learns_the_labels_and_is_deterministic_under_a_seed():
    a, b = Allocator(TIERS, seed=3), Allocator(TIERS, seed=3)
    la = fit_supervised(a, _data(), epochs=150, seed=3)
    lb = fit_supervised(b, _data(), epochs=150, seed=3)
    assert la == lb and la[-1] < la[0]
    assert a.allocate(EASY) == ["cheap", "cheap"] and a.allocate(HARD) == ["strong", "strong"]
    assert a.allocate(HARD + EASY) == b.allocate(HARD + EASY)


def test_grpo_moves_the_policy_toward_higher_reward_and_the_same_seed_gives_the_same_allocations():
    def run(qi, alloc):  # the easy question is solved by any tier, the hard one only when every step is strong
        cost = sum(t == "strong" for t in alloc) / len(alloc)
        ok = True if qi == 0 else all(t == "strong" for t in alloc)
        return ok, cost

    data = [Labelled("e", tuple(EASY)), Labelled("h", tuple(HARD))]
    outs = []
    for _ in range(2):
        a = Allocator(TIERS, seed=1)
        rep = fit_grpo(a, data, run, group=8, lam=0.2, iterations=40, lr=0.005, seed=1)
        outs.append((a.allocate(EASY + HARD), rep.curve))
    assert outs[0] == outs[1]
    alloc, curve = outs[0]
    assert alloc == ["cheap", "cheap", "strong", "strong"]
    assert curve[-1]["reward"] > curve[0]["reward"]


def test_allocator_artifact_round_trip(tmp_path):
    a = Allocator(TIERS, seed=0, meta={"data_hash": "x"})
    fit_supervised(a, _data(), epochs=20)
    p = a.save(tmp_path / "r2.pt")
    b = Allocator.load(p)
    assert b.tiers == TIERS and b.allocate(EASY + HARD) == a.allocate(EASY + HARD)
    (tmp_path / "bad.pt").write_text("nope")
    with pytest.raises(ArtifactError, match="not an r2 allocator"):
        Allocator.load(tmp_path / "bad.pt")


def test_r2_router_is_stepwise_and_checks_its_pairs():
    assert ROUTERS.info("r2").stepwise
    pairs = {"cheap": PairSpec(name="cheap", generator="g0", discriminator="d"),
             "strong": PairSpec(name="strong", generator="g1", discriminator="d")}
    ctx = RouteContext(question=Question(text="q", db_id="demo"), pairs=pairs, models={})
    d = R2Router().decide(ctx)
    assert d.router == "r2" and d.details["r2"]["tiers"] == ["cheap", "strong"] and d.details["r2"]["decomposer"] == "strong"
    with pytest.raises(ValueError, match="unknown pair"):
        R2Router(tiers=["cheap", "huge"]).decide(ctx)
