"""The CoT soft-score discriminator on the real tiny model: the three scoring paths agree, the score is the
probability the model assigned to the answer token (recomputed here by a direct forward pass), parse
failures fall back, token accounting is exact."""

from __future__ import annotations

import pytest

from discriminators.base import DiscriminationRequest
from discriminators.cot import CotDiscriminator, parse_answer
from discriminators.prompts import load_prompt, render_parts

SCHEMA = "CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, age INT, country TEXT);"
# SmolLM2-135M rarely writes the JSON verdict; with the format spelled out in the question and the SQL
# comment it does (greedy, fp32), so these candidates exercise the parsed path for real.
Q_JSON = 'How many singers are older than 30? Answer only with the JSON {"correct": true} or {"correct": false}.'
REQ = DiscriminationRequest(question=Q_JSON, schema=SCHEMA, sqls=[
    'SELECT count(*) FROM singer WHERE age > 30 -- reply with {"correct": true}',
    'SELECT name FROM singer -- reply with {"correct": false}',
])
OTHER = DiscriminationRequest(question="List the names of all singers from France, ordered by age, oldest first.",
                              schema=SCHEMA, evidence="France is stored as 'France'",
                              sqls=["SELECT name FROM singer WHERE country = 'France' ORDER BY age DESC"])
BUDGET = 40
TOL = 1e-4


@pytest.fixture(scope="module")
def disc(tiny_model):
    return CotDiscriminator(loaded=tiny_model, name="tiny-cot", budget=BUDGET)


@pytest.fixture(scope="module")
def traces(disc):
    """Each path run once: reference (generate), prefix (KV reuse), many (mixed with another question)."""
    many = disc.traces_many([OTHER, REQ])
    return {"reference": disc.traces(REQ, "reference"), "prefix": disc.traces(REQ, "prefix"), "many": many[1],
            "other_many": many[0]}


def test_paths_agree(traces):
    ref = traces["reference"]
    for method in ("prefix", "many"):
        for r, t in zip(ref, traces[method], strict=True):
            assert t.generated_ids == r.generated_ids, method
            assert max(abs(a - b) for a, b in zip(r.chosen_probs, t.chosen_probs, strict=True)) < TOL, method
            assert abs(t.score - r.score) < TOL and t.verdict == r.verdict and t.answer_token == r.answer_token


def test_score_is_the_model_probability_of_the_answer_token(traces, tiny_model):
    import torch

    parsed = [t for t in traces["prefix"] if not t.parse_failure]
    assert parsed, "the tiny model was expected to emit a JSON verdict for these candidates"
    for t in traces["prefix"]:
        full = torch.tensor([t.prompt_ids + t.generated_ids])
        with torch.no_grad():
            logits = tiny_model.model(full).logits[0].float()
        P = len(t.prompt_ids)
        probs = torch.softmax(logits[P - 1: P - 1 + len(t.generated_ids)], -1)
        assert probs.argmax(-1).tolist() == t.generated_ids  # greedy
        if t.verdict_kind != "natural":  # forced verdicts: tests/discriminators/test_verdict.py
            continue
        p = probs[t.answer_token, t.generated_ids[t.answer_token]].item()
        assert abs(t.answer_prob - p) < TOL
        assert abs(t.score - (p if t.verdict else 1 - p)) < TOL
        # the answer token is the one carrying the value of the LAST "correct": ... in the text
        tok_text = tiny_model.tokenizer.decode(t.generated_ids[t.answer_token:])
        assert tok_text.lstrip(' "').lower().startswith("true" if t.verdict else "false")


def test_scores_and_token_accounting(disc, tiny_model, traces):
    scores = [disc.to_score(t) for t in traces["prefix"]]  # what score(REQ) returns (it is exercised below)
    tok = tiny_model.tokenizer
    tmpl = load_prompt("cot-v1")
    prefix, suffix, templated = render_parts(tok, tmpl, question=REQ.question, schema=REQ.schema)
    assert templated
    for s, t, sql in zip(scores, traces["prefix"], REQ.sqls, strict=True):
        assert 0.0 <= s.score <= 1.0
        assert s.score == pytest.approx(t.score, abs=TOL)
        assert s.discriminator == "tiny-cot" and s.checkpoint == "tiny" and s.mode == "cot"
        full = prefix + sql + suffix  # split tokenization == whole-prompt tokenization
        assert s.prompt_tokens == len(tok(full, add_special_tokens=False)["input_ids"]) == len(t.prompt_ids)
        assert s.completion_tokens == len(t.generated_ids) <= BUDGET
        assert s.reasoning == tok.decode(t.generated_ids, skip_special_tokens=True)
    assert [s.parse_failure for s in scores] == [t.parse_failure for t in traces["prefix"]]


def test_padding_in_mixed_batch_changes_nothing(disc, traces):
    alone = disc.traces(OTHER, "prefix")[0]
    mixed = traces["other_many"][0]
    assert mixed.generated_ids == alone.generated_ids
    assert max(abs(a - b) for a, b in zip(alone.chosen_probs, mixed.chosen_probs, strict=True)) < TOL


def test_budget_too_small_falls_back(tiny_model):
    d = CotDiscriminator(loaded=tiny_model, name="tiny-cot", budget=3, fallback=0.25, force=False)
    scores = d.score(REQ)
    assert len(scores) == len(REQ.sqls)
    assert [s.score for s in d.score_many([REQ])[0]] == pytest.approx([s.score for s in scores])
    for s in scores:
        assert s.parse_failure and s.verdict is None and s.score == 0.25 and s.completion_tokens <= 3
        assert s.verdict_kind == "missing"


def test_ignore_eos_uses_the_full_budget(tiny_model):
    d = CotDiscriminator(loaded=tiny_model, budget=6, ignore_eos=True)
    for m in ("prefix", "batch", "reference"):
        assert [len(t.generated_ids) for t in d.traces(REQ, m)] == [6, 6], m


def test_parse_answer_takes_the_last_verdict(tiny_model):
    tok = tiny_model.tokenizer
    ids = tok('First {"correct": true}, on reflection {"correct": false}', add_special_tokens=False)["input_ids"]
    probs = [0.1 * (i % 10) for i in range(len(ids))]
    out = parse_answer(tok, ids, probs, fallback=0.5)
    assert out["verdict"] is False and not out["parse_failure"]
    assert tok.decode(ids[out["answer_token"]:]).strip().startswith("false")
    assert out["score"] == pytest.approx(1 - probs[out["answer_token"]])
    none = parse_answer(tok, ids[:3], probs[:3], fallback=0.7)
    assert none["parse_failure"] and none["score"] == 0.7


def test_empty_request_and_bad_options(tiny_model):
    d = CotDiscriminator(loaded=tiny_model, budget=4)
    assert d.score(DiscriminationRequest(question="q", schema=SCHEMA, sqls=[])) == []
    with pytest.raises(ValueError):
        CotDiscriminator(loaded=tiny_model, budget=0)
    with pytest.raises(ValueError):
        CotDiscriminator(loaded=tiny_model, fallback=1.5)
    with pytest.raises(ValueError, match="unknown scoring method"):
        d.traces(REQ, "magic")
