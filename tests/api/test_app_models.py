"""Checkpoint switching at run time through the API: PUT /discriminators/active and /generators/active with
two real checkpoints (the embedded model, and the same converted checkpoint loaded by path), a broken
checkpoint that must fail and leave the previous one active, and an unknown name."""

from __future__ import annotations

import pytest

from core.model import Plan

Q = "How many singers are older than 30?"


@pytest.fixture
def ckpt():
    from core.runtime.embedded import embedded_checkpoint

    return str(embedded_checkpoint())


def test_switch_discriminator_and_generator(make_client, ckpt, tmp_path):
    broken = tmp_path / "not-a-checkpoint"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    c = make_client(
        generators={"embedded": {"backend": "embedded"}, "alt-gen": {"backend": "transformers", "path": ckpt}},
        discriminators={"embedded": {"backend": "embedded"},
                        "alt": {"backend": "cot", "path": ckpt, "cost_per_1k_input": 1.0},
                        "broken": {"backend": "cot", "path": str(broken)}},
        pairs={"embedded": {"generator": "embedded", "discriminator": "embedded"}},
    )
    d = c.get("/discriminators").json()
    assert d["active"] == "embedded" and {m["name"] for m in d["models"]} == {"embedded", "alt", "broken"}

    r = c.put("/discriminators/active", json={"name": "alt"})
    assert r.status_code == 200, r.text
    assert r.json()["active"] == "alt"
    alt = next(m for m in r.json()["models"] if m["name"] == "alt")
    assert alt["active"] is True

    plan = Plan.model_validate(c.post("/plan", json={"question": Q, "db_id": "demo", "n": 2,
                                                     "policy": "rerank"}).json())
    judged = [sc for sc in plan.candidates if sc.scores]
    assert judged, "rerank judges every non-rejected candidate"
    assert all(sc.scores[-1].checkpoint == "alt" for sc in judged)
    disc = next(u for u in plan.usage if u.role == "discriminator")
    assert disc.model == "alt" and disc.cost == pytest.approx(disc.prompt_tokens / 1000.0)

    bad = c.put("/discriminators/active", json={"name": "broken"})
    assert bad.status_code == 503 and "previous one stays active" in bad.text
    assert c.get("/discriminators").json()["active"] == "alt"

    unknown = c.put("/discriminators/active", json={"name": "nope"})
    assert unknown.status_code == 422 and "nope" in unknown.text
    assert c.get("/health").json()["active"]["discriminator"] == "alt"

    g = c.put("/generators/active", json={"name": "alt-gen"})
    assert g.status_code == 200, g.text
    assert g.json()["active"] == "alt-gen"
    plan = Plan.model_validate(c.post("/plan", json={"question": Q, "db_id": "demo", "n": 1}).json())
    assert next(u for u in plan.usage if u.role == "generator").model == "alt-gen"
    assert all(sc.candidate.source.endswith("alt-gen") for sc in plan.candidates)
