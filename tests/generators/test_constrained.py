"""Constrained sampling with xgrammar on the real tiny model; the SQL-end stop rule."""

import re

import pytest

from core.runtime.hf import sample
from generators.base import GenerationRequest, SamplingParams
from generators.constrained import grammar_processor, sql_end_stopping, sql_finished
from generators.grammar import _string_matcher_grammar, sql_grammar
from generators.hf import TransformersGenerator
from sqlbox.databases import DatabaseInfo, introspect
from sqlbox.demo import build_demo
from sqlbox.schema import schema_to_prompt


@pytest.fixture(scope="module")
def demo_schema():
    return introspect(DatabaseInfo("demo", build_demo(), "sqlite"), samples=0)


def _prefix_ok(grammar: str, text: str) -> bool:
    import xgrammar as xgr

    m = xgr.GrammarMatcher(_string_matcher_grammar(grammar), terminate_without_stop_token=True)
    return bool(m.accept_string(text))


def test_sql_finished():
    assert sql_finished("```sql\nSELECT 1\n```")
    assert sql_finished("SELECT a FROM t;")
    assert not sql_finished("```sql\nSELECT ';' FROM t")
    assert not sql_finished("Here is the query")


def test_constrained_samples_follow_the_schema_grammar(tiny_model, demo_schema):
    gen = TransformersGenerator(loaded=tiny_model, name="tiny", constrained=True)
    g = sql_grammar(demo_schema)
    req = GenerationRequest(question="How many singers are older than 30?", schema=schema_to_prompt(demo_schema),
                            grammar=g, params=SamplingParams(n=2, temperature=0.8, max_tokens=24, seed=1))
    res = gen.generate(req)
    assert res.constrained and len(res.raw) == 2
    for raw in res.raw:
        assert raw.startswith("```sql\n") and _prefix_ok(g, raw)
    cols = {c.name.lower() for t in demo_schema.tables for c in t.columns} | {t.name.lower() for t in demo_schema.tables}
    for sql in res.sqls:  # every whole name after FROM/JOIN is a table of the schema (the last may be cut)
        for name in re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_]\w*)\s", sql, re.I):  # complete names only
            assert name.lower() in cols


def test_grammar_end_stops_sampling_before_max_tokens(tiny_model):
    g = 'root ::= "```sql\\nSELECT 1\\n```"'
    ids = tiny_model.tokenizer("Write SQL:")["input_ids"]
    out = sample(tiny_model, ids, n=2, temperature=0.7, max_tokens=40, seed=0,
                 logits_processor=grammar_processor(tiny_model, g))
    for s in out:
        assert s.text == "```sql\nSELECT 1\n```" and s.finish_reason == "stop"
        assert len(s.token_logprobs) == 0  # logprobs only when asked


def test_unconstrained_stops_at_sql_end(tiny_model):
    tok = tiny_model.tokenizer
    ids = tok("```sql\nSELECT name FROM singer;\n```\n\n```sql\nSELECT", add_special_tokens=False)["input_ids"]
    out = sample(tiny_model, ids, n=1, temperature=0, max_tokens=64, stopping_criteria=sql_end_stopping(tok, len(ids)))
    assert len(out[0].ids) < 64


def test_looping_patterns():
    from generators.constrained import looping

    assert looping([5, 1, 2, 1, 2, 1, 2, 1, 2])  # a 2-token pattern 4 times at the end
    assert not looping([1, 2, 1, 2, 1, 2, 3])  # 3 times, then something else
    assert looping([9] * 8) and not looping([9] * 7)  # one token: 8 times
    assert looping([7, 8, 9] * 4) and not looping(list(range(40)))


def test_a_loop_stops_the_batch_once_nothing_else_is_being_written(tiny_model):
    from generators.constrained import loop_stopping

    ids = tiny_model.tokenizer("Write SQL:")["input_ids"]
    g = 'root ::= "SELECT ' + "a, " * 30 + 'a"'  # the grammar forces a repeated pattern: a loop
    stop = loop_stopping(len(ids), tiny_model.eos_token_ids(), tiny_model.pad_token_id)
    out = sample(tiny_model, ids, n=2, temperature=0.7, max_tokens=64, seed=0,
                 logits_processor=grammar_processor(tiny_model, g), stopping_criteria=[stop])
    assert stop.looped == {0, 1} and all(len(s.ids) < 40 and s.finish_reason == "length" for s in out)


def test_generation_time_budget_drops_unfinished_samples_and_says_so(tiny_model):
    import time

    from generators.constrained import deadline_stopping

    ids = tiny_model.tokenizer("Write SQL:")["input_ids"]
    d = deadline_stopping(budget_s=0.0)  # the budget counts from the first decoded token: one token, then stop
    out = sample(tiny_model, ids, n=2, temperature=0.7, max_tokens=32, seed=0, stopping_criteria=[d])
    assert d.fired and [len(s.ids) for s in out] == [1, 1]
    gen = TransformersGenerator(loaded=tiny_model, name="tiny")
    req = GenerationRequest(question="How many singers are older than 30?", schema="CREATE TABLE singer (age INT);",
                            params=SamplingParams(n=3, temperature=0.8, max_tokens=48, seed=1), time_budget_s=0.0)
    res = gen.generate(req)
    assert res.dropped == {"time": 3} and res.sqls == ["", "", ""] and "time budget" in res.notes[0]
    assert res.drops == ["time"] * 3  # per sample, aligned with sqls
    req.time_budget_s, req.deadline = None, time.monotonic() - 1  # an instant already past: the same
    assert gen.generate(req).dropped == {"time": 3}
    req.deadline = None  # no budget: nothing is dropped for time
    assert "time" not in gen.generate(req).dropped
