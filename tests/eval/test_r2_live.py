"""eval.r2_live: R2's supervised labelling rule, GRPO's determinism under a seed (scripted environments, no model),
the alternation's relabelling, and the cost definition on the live environment with scripted tiers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from eval.r2_live import (
    R2Env,
    curve_path,
    improved_labels,
    save_training,
    strong_cost,
    supervised_labels,
    train_allocator,
)
from generators.base import GenerationRequest, StepResult
from planner.decompose import Decomposition, DecompositionError, Subtask
from planner.stepwise import ChainRun, Tier, TierUsage
from routing.r2 import Allocator, SubtaskFeatures
from routing.trim import TrimSettings


def _feats(n: int, text: str) -> list[SubtaskFeatures]:
    return [SubtaskFeatures(text=f"{text} step {k}", index=k, n_steps=n, n_needs=min(k, 1), n_tables=1, n_columns=4,
                            tables_linked=1.0, confidence=0.8) for k in range(n)]


class ScriptedEnv:
    """Questions with a scripted correctness rule per allocation; cost = share of steps given to the last tier."""

    def __init__(self, tiers, questions):
        self.tiers = list(tiers)
        self.qs = questions  # list of (n_steps or 0 for a refused list, rule(allocation) -> bool)
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def key(self, i):
        return f"q{i}"

    def features(self, i):
        n, _ = self.qs[i]
        return _feats(n, f"question {i}") if n else []

    def run(self, i, allocation):
        self.calls.append((i, tuple(allocation)))
        _, rule = self.qs[i]
        return bool(rule(list(allocation))), sum(t == self.tiers[-1] for t in allocation) / max(len(allocation), 1)


TIERS3 = ["small", "mid", "large"]


def test_supervised_label_is_the_cheapest_tier_after_a_cheap_prefix_else_the_strongest():
    env = ScriptedEnv(TIERS3, [
        (2, lambda a: True),  # the cheap tier is enough everywhere
        (3, lambda a: a[1] in ("mid", "large")),  # step 2 needs mid or better
        (2, lambda a: False),  # no tier gives a correct query
        (0, lambda a: True),  # a refused decomposition: nothing to label
    ])
    assert supervised_labels(env, 0) == (0, 0)
    # k=0: small x3 fails, mid x3 works -> mid; k=1: small, mid, mid works -> mid; k=2: steps 1-2 small, step 3 by any
    # tier fails (step 2 is small) -> the strongest tier
    assert supervised_labels(env, 1) == (1, 1, 2)
    assert ("small", "small", "mid") in [a for i, a in env.calls if i == 1]
    assert supervised_labels(env, 2) == (2, 2)
    assert supervised_labels(env, 3) == ()


def test_improved_labels_take_the_policys_allocation_only_when_its_reward_is_higher():
    env = ScriptedEnv(["cheap", "strong"], [(1, lambda a: False), (1, lambda a: a == ["strong"])])
    pol = Allocator(env.tiers, seed=0)
    greedy = pol.allocate(env.features(0))
    # question 0: nothing is correct; label "strong" (reward -lam) loses to a greedy "cheap" (0), ties keep the labels
    got = improved_labels(env, 0, (1,), pol, lam=0.25)
    assert got == ((0,) if greedy == ["cheap"] else (1,))
    # question 1: the label "strong" is the only correct allocation: never replaced by a worse one
    assert improved_labels(env, 1, (1,), pol, lam=0.25) == (1,)


def _grpo_env():
    return ScriptedEnv(["cheap", "strong"], [
        (1, lambda a: True),
        (2, lambda a: a[-1] == "strong"),
        (2, lambda a: all(t == "strong" for t in a)),
        (0, lambda a: True),  # refused: skipped
    ])


def test_training_is_deterministic_under_a_seed_and_alternates_rounds():
    runs = []
    for _ in range(2):
        env = _grpo_env()
        tr = train_allocator(env, n_questions=4, group=4, lam=0.2, iterations=3, rounds=2, epochs=30, seed=7)
        runs.append((tr.curve, tr.labels, {k: a.allocate(env.features(1) + env.features(2)) for k, a in tr.stages.items()},
                     env.calls))
    assert runs[0] == runs[1]
    curve, labels, allocs, _ = runs[0]
    assert list(allocs) == ["supervised", "grpo", "supervised (round 2)", "grpo (round 2)"]
    assert len(curve) == 6 and [r["round"] for r in curve] == [1, 1, 1, 2, 2, 2]
    assert labels[0] == {"q0": ["cheap"], "q1": ["strong", "strong"], "q2": ["strong", "strong"]}
    assert all(0.0 <= r["cost"] <= 1.0 for r in curve)


def test_training_skips_refused_questions_and_saves_stamped_artifacts(tmp_path):
    env = _grpo_env()
    tr = train_allocator(env, n_questions=4, group=2, lam=0.2, iterations=2, epochs=5, seed=0)
    assert tr.skipped == ["q3"] and [d.key for d in tr.data] == ["q0", "q1", "q2"]
    paths = save_training(tr, tmp_path / "r2.pt", lam=0.2, group=2, iterations=2, rounds=1, seed=0)
    assert paths["curve"] == curve_path(tmp_path / "r2.pt") == tmp_path / "r2.grpo.png" and paths["curve"].exists()
    a, s = Allocator.load(paths["artifact"]), Allocator.load(paths["supervised"])
    assert a.meta["data_hash"] == s.meta["data_hash"] and (a.meta["stage"], s.meta["stage"]) == ("grpo", "supervised")
    assert len(a.meta["grpo_curve"]) == 2 and a.meta["labels"][0]["q0"] == ["cheap"]


# ---------------------------------------------------------------------------------------------- the cost definition
def test_strong_cost_is_relative_to_the_strong_only_composed_chain():
    assert strong_cost(30, 30) == 1.0 and strong_cost(0, 30) == 0.0 and strong_cost(10, 40) == 0.25
    assert strong_cost(0, 0) == 0.0 and strong_cost(5, 0) == 1.0


class _Backend:
    """Writes the body of a 2-step chain; the strong tier's final step names its column (the correct answer)."""

    def __init__(self, strong: bool):
        self.strong = strong

    def continue_step(self, req):
        first = "s1 AS" not in req.prefix
        if first:
            body, tok, boundary = "WITH s1 AS (SELECT name FROM singer)", (10 if self.strong else 4), "step"
        else:
            body = "SELECT count(*) AS n FROM s1" if self.strong else "SELECT count(*) FROM s1"
            tok, boundary = (20 if self.strong else 6), "end"
        return StepResult(text=body, raw=body, boundary=boundary, prompt_tokens=100, completion_tokens=tok)


def _env():
    settings = TrimSettings(cheap="cheap", strong="strong", use_verdict=False, use_execution=False)
    req = GenerationRequest(question="how many singers", schema="singer(name)")
    tiers = (Tier("cheap", "g0", _Backend(False), req), Tier("strong", "g1", _Backend(True), req))
    whole = ChainRun(settings=settings, texts=["-- the answer\nSELECT 1"], complete=True,
                     usage={"cheap": TierUsage(completion_tokens=9, prompt_tokens=80, calls=1)})
    study = SimpleNamespace(
        settings=settings, planner=SimpleNamespace(registry=SimpleNamespace(schema=lambda db: None),
                                                   dialect=lambda db: "sqlite"),
        tiers=lambda q: tiers, chain=lambda q, policy: whole,
        judge=lambda q, text: (bool(text), bool(text) and "AS n" in text))
    qs = [SimpleNamespace(key="dev#1", db_id="concert_singer", question="how many singers", hardness="easy"),
          SimpleNamespace(key="dev#2", db_id="concert_singer", question="something odd", hardness="hard")]
    d = Decomposition([Subtask(1, "names of singers", (), ("singer",)), Subtask(2, "how many", (1,), ())],
                      prompt_tokens=50, completion_tokens=12)

    def decompose_fn(q):
        if q.key == "dev#2":
            raise DecompositionError("unused", "step 1 is read by no later step", prompt_tokens=40, completion_tokens=9)
        return d

    return R2Env(study, qs, decompose_fn=decompose_fn)


def test_cost_of_an_allocation_on_the_live_environment():
    env = _env()
    assert env.run(0, ["strong", "strong"]) == (True, 1.0)
    assert env.run(0, ["cheap", "cheap"]) == (False, 0.0)
    assert env.run(0, ["cheap", "strong"]) == (True, pytest.approx(20 / 30))
    assert env.run(0, ["strong", "cheap"]) == (False, pytest.approx(10 / 30))
    assert env.reference(0) == 30
    # greedy: the 4 allocations wrote 4 distinct (tier, prefix) steps once each
    assert env.memo_stats()["misses"] == 4
    # a refused list: the whole-question cheap chain answers, at no strong cost
    r = env.result(1, [])
    assert (r.path, r.cost, r.cheap_tokens, r.strong_tokens) == ("whole", 0.0, 9, 0) and "refused (unused" in r.fallback
    # the study row counts the decomposer's call (the strong tier by default) on its pair
    o = env.outcome(0, "r2 x", ["strong", "strong"])
    assert (o.strong_tokens, o.cheap_tokens, o.handoffs, o.steps) == (30 + 12, 0, 2, 2)
    assert o.prompt_tokens == {"strong": 200 + 50}
    with pytest.raises(ValueError, match="tiers for the 2 subtasks"):
        env.run(0, ["cheap"])
