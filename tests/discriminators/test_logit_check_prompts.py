"""Logit (Yes/No) mode, the check wrapper, the registry mapping and the versioned prompt files."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.model import ErrorKind, ExecutionResult
from core.specs import ModelSpec
from discriminators.base import DISCRIMINATORS, DiscriminationRequest
from discriminators.check import WORST, CheckDiscriminator
from discriminators.logit import LogitDiscriminator
from discriminators.prompts import PromptError, list_prompts, load_prompt, render_parts
from planner.prompt_docs import render_docs

SCHEMA = "CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, age INT, country TEXT);"
REQ = DiscriminationRequest(question="How many singers are older than 30?", schema=SCHEMA,
                            sqls=["SELECT count(*) FROM singer WHERE age > 30", "SELECT name FROM singer",
                                  "SELECT count(*) FROM singer WHERE age > 30 AND country = 'France' ORDER BY name"])
OTHER = DiscriminationRequest(question="List every singer name.", schema=SCHEMA, sqls=["SELECT name FROM singer"],
                              evidence="names are in singer.name")


@pytest.fixture(scope="module")
def logit(tiny_model):
    return LogitDiscriminator(loaded=tiny_model, name="tiny-logit")


def test_logit_score_is_normalized_yes_probability(logit, tiny_model):
    import torch

    tok = tiny_model.tokenizer
    prefix, suffix, _ = render_parts(tok, load_prompt("logit-v1"), question=REQ.question, schema=REQ.schema)
    assert prefix.rstrip().endswith("Candidate SQL query:") and "Answer Yes or No." in suffix
    scores = logit.score(REQ)
    for s, sql in zip(scores, REQ.sqls, strict=True):
        ids = tok(prefix + sql + suffix, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            p = torch.softmax(tiny_model.model(torch.tensor([ids])).logits[0, -1].float(), -1)
        yes = sum(p[i].item() for i in logit.yes_ids)
        no = sum(p[i].item() for i in logit.no_ids)
        assert s.score == pytest.approx(yes / (yes + no), abs=1e-4)
        assert s.mode == "logit" and s.completion_tokens == 0 and s.prompt_tokens == len(ids)
        assert s.verdict == (s.score >= 0.5)
    assert tok.decode([logit.yes_ids[0]]).strip() == "Yes"


def test_logit_paths_agree(logit):
    a = [s.score for s in logit.score(REQ)]
    b = [s.score for s in logit.score_reference(REQ)]
    many = logit.score_many([OTHER, REQ])
    c = [s.score for s in many[1]]
    assert a == pytest.approx(b, abs=1e-4) and a == pytest.approx(c, abs=1e-4)
    assert many[0][0].score == pytest.approx(logit.score(OTHER)[0].score, abs=1e-4)


def test_check_mode_skips_non_executable(logit):
    ok = ExecutionResult(ok=True, fingerprint="x")
    bad = ExecutionResult(ok=False, error_kind=ErrorKind.BINDER, error="no such column: agee")
    req = DiscriminationRequest(question=REQ.question, schema=SCHEMA, sqls=REQ.sqls, executions=[ok, bad, None])
    calls = []

    class Spy:
        name = "spy"

        def score(self, r):
            calls.append(list(r.sqls))
            return logit.score(r)

    scores = CheckDiscriminator(Spy()).score(req)
    assert calls == [[REQ.sqls[0], REQ.sqls[2]]]  # the failing candidate never reached the model
    # strictly worst (issue 12, defect 3): below every model score, a confident false (0.0) included
    assert scores[1].score == WORST < min(0.0, scores[0].score, scores[2].score)
    assert scores[1].verdict is False and scores[1].mode == "check" and scores[1].verdict_kind == "not_executable"
    assert "binder" in scores[1].reasoning
    direct = logit.score(REQ)
    assert scores[0].score == pytest.approx(direct[0].score, abs=1e-4)
    assert scores[2].score == pytest.approx(direct[2].score, abs=1e-4)
    all_bad = DiscriminationRequest(question="q", schema=SCHEMA, sqls=["x"], executions=[bad])
    assert [s.score for s in CheckDiscriminator(Spy()).score(all_bad)] == [WORST] and len(calls) == 1
    with pytest.raises(ValueError, match="executions"):
        CheckDiscriminator(Spy()).score(DiscriminationRequest(question="q", schema="", sqls=["a", "b"], executions=[ok]))


def test_registry_maps_specs_to_backends(tiny_checkpoint):
    import discriminators.registry_all  # noqa: F401
    from discriminators.cot import CotDiscriminator
    from discriminators.openai import OpenAICotDiscriminator, OpenAILogitDiscriminator

    assert {"cot", "logit", "openai-cot", "openai-logit", "embedded", "transformers", "openai"} <= set(DISCRIMINATORS.names())
    emb = DISCRIMINATORS.create("embedded", ModelSpec(name="d", role="discriminator", options={"budget": 64}))
    assert isinstance(emb, CotDiscriminator) and emb.budget == 64 and emb.name == "d"
    lg = DISCRIMINATORS.create("transformers", ModelSpec(name="l", role="discriminator", backend="transformers",
                                                         path=str(tiny_checkpoint), options={"mode": "logit", "check": True}))
    assert isinstance(lg, CheckDiscriminator) and isinstance(lg.inner, LogitDiscriminator)
    http = ModelSpec(name="h", role="discriminator", backend="openai", url="http://127.0.0.1:9/v1", model="m")
    assert isinstance(DISCRIMINATORS.create("openai", http), OpenAICotDiscriminator)
    http.options["mode"] = "logit"
    assert isinstance(DISCRIMINATORS.create("openai", http), OpenAILogitDiscriminator)
    http.options["mode"] = "vibes"
    with pytest.raises(ValueError, match="mode"):
        DISCRIMINATORS.create("openai", http)


def test_prompt_files_and_docs():
    assert {"cot-v1", "logit-v1"} <= set(list_prompts())
    t = load_prompt("cot-v1")
    assert t.mode == "cot" and '{"correct": true}' in t.text and '{"correct": false}' in t.text
    filled = t.fill(question="Q?", schema="S", sql="SELECT {question}", evidence="E")
    assert "SELECT {question}" in filled and "Hint: E" in filled  # values are not re-substituted
    with pytest.raises(PromptError, match="unknown"):
        load_prompt("cot-v999")
    with pytest.raises(PromptError):
        load_prompt("../secrets")
    docs = Path(__file__).resolve().parents[2] / "docs" / "prompts.md"
    assert docs.read_text(encoding="utf-8") == render_docs(), "regenerate docs/prompts.md (command in its header)"
