"""planner.r2: Route-and-Reason through the pipeline: the allocator's features, a composed chain guarded as one
query, and (slow) the real embedded model as decomposer and tiers."""

from __future__ import annotations

import pytest

from core.model import Question
from generators.base import GenerationRequest, SamplingParams, StepResult
from planner.config import config_from_dict
from planner.decompose import Decomposition, Subtask, compose
from planner.normalize import CandidatePool
from planner.pipeline import Planner
from planner.r2 import subtask_features
from planner.stepwise import Tier
from sqlbox.demo import build_demo
from sqlbox.schema import introspect_sqlite


class _Bodies:
    """continue_step writes the listed bodies in order (the comment, the sub-question, is in the prefix)."""

    def __init__(self, bodies):
        self.name, self.bodies, self.k, self.constrained = "scripted", bodies, 0, False

    def continue_step(self, request):
        body = self.bodies[self.k]
        last = self.k == len(self.bodies) - 1
        self.k += 1
        return StepResult(text=body, raw=body + ("\n```" if last else "\n-- next"), boundary="end" if last else "step",
                          prompt_tokens=40, completion_tokens=len(body.split()))


def _tier(b, pair):
    req = GenerationRequest(question="q", schema="s", params=SamplingParams(n=1, temperature=0.0))
    return Tier(pair, b.name, b, req)


def test_subtask_features_read_the_named_tables_and_the_linking():
    schema = introspect_sqlite("demo", build_demo(), 0)
    d = Decomposition([Subtask(1, "singers over 30", (), ("singer",)), Subtask(2, "their concerts", (1,), ("concert",))],
                      confidence=0.8)
    f = subtask_features(d, schema, ["singer"])
    assert [x.n_tables for x in f] == [1, 1] and f[0].tables_linked == 1.0 and f[1].tables_linked == 0.0
    assert f[0].n_columns == len(next(t for t in schema.tables if t.name == "singer").columns)
    assert f[1].n_needs == 1 and f[1].index == 1 and f[0].confidence == 0.8
    assert subtask_features(d, schema, None)[1].tables_linked == 1.0  # no linking: nothing to hold against a step


def test_a_composed_chain_is_guarded_as_one_query_so_a_hostile_step_cannot_slip_past():
    d = Decomposition([Subtask(1, "all singers", (), ("singer",)), Subtask(2, "the answer", (1,))])
    hostile = _Bodies(["WITH s1 AS (SELECT * FROM singer)",
                       "SELECT name FROM s1 UNION SELECT readfile('/etc/passwd')"])
    c = compose(d, [_tier(hostile, "cheap"), _tier(hostile, "strong")])
    assert c.text is not None and "readfile" in c.text
    pool = CandidatePool(dialect="sqlite")
    (i,) = pool.add_many([c.text], source="r2:cheap+strong")
    assert pool.candidates[i].rejected  # refused by the guard before anything runs
    fine = _Bodies(["WITH s1 AS (SELECT * FROM singer)", "SELECT count(*) FROM s1"])
    c2 = compose(d, [_tier(fine, "cheap"), _tier(fine, "strong")])
    (j,) = pool.add_many([c2.text], source="r2:cheap+strong")
    assert not pool.candidates[j].rejected


@pytest.mark.slow
def test_r2_on_the_real_embedded_model_records_its_decomposition_or_why_not():
    cfg = config_from_dict({
        "generators": {"zero": {"backend": "embedded", "options": {"constrained": False}},
                       "constrained": {"backend": "embedded", "options": {"constrained": True}}},
        "discriminators": {"embedded": {"backend": "embedded", "options": {"mode": "cot"}}},
        "pairs": {"cheap": {"generator": "zero", "discriminator": "embedded", "few_shot": 0},
                  "strong": {"generator": "constrained", "discriminator": "embedded"}},
        "router": {"name": "r2", "params": {"step_tokens": 64, "max_steps": 3}},
        "defaults": {"n": 1, "policy": "vote", "reasoning_budget": 16},
    })
    p = Planner(cfg)
    try:
        plan = p.plan(Question(text="How many singers are there?", db_id="demo"))
    finally:
        p.close()
    r = plan.route.details["r2"]
    assert r["decomposer"] == "strong" and "decomposition" in r
    usage = {(u.model, u.role) for u in plan.usage}
    assert ("constrained", "generator") in usage  # the decomposer's call is accounted
    if r.get("fallback"):
        assert any(w.startswith("r2:") for w in plan.warnings)
    else:
        assert r["allocation"] == ["cheap"] * len(r["decomposition"]["subtasks"])  # no allocator: the default tier
        assert all("reward" in s for s in r["steps"])
