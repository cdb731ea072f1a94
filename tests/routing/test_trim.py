"""routing.trim: TRIM's policies (threshold, learned), their training and artifacts, and the `trim` router."""

from __future__ import annotations

import json

import pytest

from core.model import Question
from core.specs import PairSpec
from routing.carrot import ArtifactError
from routing.registry_all import ROUTERS
from routing.router import RouteContext
from routing.trim import (
    Episode,
    LearnedPolicy,
    StepObservation,
    ThresholdPolicy,
    TrimRouter,
    fit_policy,
    reward,
)


def obs(score: float, index: int = 0, tokens: int = 20) -> StepObservation:
    return StepObservation(index=index, score=score, tokens=tokens, product=score, minimum=score)


def test_threshold_policy_hands_off_below_k_and_its_ends_mean_cheap_or_strong_only():
    p = ThresholdPolicy(0.5)
    assert p.hand_off(obs(0.2)) and not p.hand_off(obs(0.8))
    assert not p.cheap_only and not p.strong_only
    cheap, strong = ThresholdPolicy(0.0), ThresholdPolicy(1.0)
    assert cheap.cheap_only and not cheap.hand_off(obs(0.0))
    assert strong.strong_only and strong.hand_off(obs(1.0))


def _env(n_steps: int = 3):
    """A deterministic toy environment: a step with score < 0.5 is wrong unless handed off; each hand-off costs 30
    strong tokens. The best policy hands off exactly the low-score steps."""
    scores = [[0.9, 0.2, 0.8], [0.1, 0.9, 0.9], [0.7, 0.6, 0.3], [0.95, 0.9, 0.85]]

    def env(i, act):
        decisions, ok, strong = [], True, 0
        for k, s in enumerate(scores[i % len(scores)][:n_steps]):
            o = obs(s, k)
            a = act(o)
            decisions.append((o, a))
            if a:
                strong += 30
            elif s < 0.5:
                ok = False
        return Episode(decisions=decisions, correct=ok, strong_tokens=strong)

    return env


def test_reward_is_correctness_minus_price_per_strong_token():
    ep = Episode(decisions=[], correct=True, strong_tokens=100)
    assert reward(ep, 0.002) == pytest.approx(0.8)
    assert reward(Episode(decisions=[], correct=False, strong_tokens=0), 0.002) == 0.0


def test_fit_policy_is_deterministic_under_a_seed_and_learns_to_hand_off_doubtful_steps():
    env = _env()
    a, ra = fit_policy(env, 4, keys=["q0", "q1", "q2", "q3"], epochs=100, lr=0.02, seed=7, price=0.001)
    b, rb = fit_policy(env, 4, keys=["q0", "q1", "q2", "q3"], epochs=100, lr=0.02, seed=7, price=0.001)
    assert ra.curve == rb.curve
    assert [a.p_hand_off(obs(s)) for s in (0.1, 0.5, 0.9)] == [b.p_hand_off(obs(s)) for s in (0.1, 0.5, 0.9)]
    c, _ = fit_policy(env, 4, keys=["q0"], epochs=100, lr=0.02, seed=8, price=0.001)
    assert c.p_hand_off(obs(0.3)) != a.p_hand_off(obs(0.3))  # another seed, another run
    # it learned the task: low scores are handed off more often than high ones, and the reward went up
    assert a.hand_off(obs(0.1)) and not a.hand_off(obs(0.95))
    assert sum(r["reward"] for r in ra.curve[-10:]) / 10 > ra.curve[0]["reward"] + 0.1


def test_learned_policy_artifact_round_trip_with_metadata_and_version_check(tmp_path):
    pol, _ = fit_policy(_env(), 4, keys=["a", "b"], epochs=3, seed=0)
    path = pol.save(tmp_path / "trim.pt")
    meta = json.loads((tmp_path / "trim.pt.json").read_text())
    assert meta["kind"] == "trim-policy" and meta["data_hash"] and meta["features"][0] == "product"
    back = LearnedPolicy.load(path)
    for s in (0.1, 0.6):
        assert back.p_hand_off(obs(s)) == pytest.approx(pol.p_hand_off(obs(s)))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="not a trim policy artifact"):
        LearnedPolicy.load(tmp_path / "junk.pt")
    with pytest.raises(ArtifactError, match="not found"):
        LearnedPolicy.load(tmp_path / "missing.pt")


def _ctx() -> RouteContext:
    pairs = {"cheap": PairSpec(name="cheap", generator="g0", discriminator="d"),
             "strong": PairSpec(name="strong", generator="g1", discriminator="d")}
    return RouteContext(question=Question(text="How many singers?", db_id="demo"), pairs=pairs, models={})


def test_trim_router_names_cheap_and_strong_pairs_and_is_stepwise_in_the_registry():
    assert ROUTERS.info("trim").stepwise and not ROUTERS.info("cascade").stepwise
    d = TrimRouter(k=0.3).decide(_ctx())
    assert d.router == "trim" and d.pair == "cheap" and d.steps == ["cheap", "strong"]
    assert d.details["trim"]["k"] == 0.3 and d.details["trim"]["strong"] == "strong"
    with pytest.raises(ValueError, match="unknown pair 'nope'"):
        TrimRouter(strong="nope").decide(_ctx())
    with pytest.raises(ValueError, match="artifact"):
        TrimRouter(policy="learned")
    with pytest.raises(ValueError, match="prm_mode"):
        TrimRouter(prm_mode="vibes")
