"""planner.prm (the per-step process reward, issue 28) and discriminators.step (its step discriminator): the real
embedded model (logit mode, the step prompt) and the real sandboxed executor on the demo database."""

from __future__ import annotations

import pytest

from core.specs import ModelSpec
from discriminators.prompts import STEP_PROMPTS, load_prompt, render_parts
from discriminators.step import step_discriminator, step_spec
from planner.prm import EXEC_EMPTY, ProcessReward, combine_parts

Q = "How many singers from France are older than 30?"
STEP1 = "-- singers from France\nWITH s1 AS (SELECT * FROM singer WHERE country = 'France'),"
STEP2 = "-- those older than 30\ns2 AS (SELECT * FROM s1 WHERE age > 30)"
BAD1 = "-- singers from France\nWITH s1 AS (SELECT * FROM singer WHERE nation = 'France'),"
EMPTY1 = "-- singers from Atlantis\nWITH s1 AS (SELECT * FROM singer WHERE country = 'Atlantis'),"


@pytest.fixture(scope="module")
def schema(executor):
    from sqlbox.demo import DEMO_DB_ID
    from sqlbox.schema import schema_to_prompt

    return schema_to_prompt(executor.registry.schema(DEMO_DB_ID))


@pytest.fixture(scope="module")
def disc(tiny_model):
    spec = ModelSpec(name="embedded", role="discriminator", backend="embedded", options={"mode": "cot"})
    return step_discriminator(spec, mode="logit", loaded=tiny_model)


class Spy:
    """Records the requests a discriminator receives."""

    def __init__(self, inner):
        self.inner, self.name, self.requests = inner, inner.name, []

    def score(self, request):
        self.requests.append(request)
        return self.inner.score(request)


def _score(prm, schema, steps, prev_rows=None):
    from sqlbox.demo import DEMO_DB_ID

    return prm.score(question=Q, schema=schema, evidence=None, db_id=DEMO_DB_ID, dialect="sqlite",
                     step_texts=steps, prev_rows=prev_rows)


def test_failing_step_scores_zero_execution_and_below_a_good_step(disc, executor, schema):
    prm = ProcessReward(discriminator=disc, executor=executor)
    good = _score(prm, schema, [STEP1])
    bad = _score(prm, schema, [BAD1])
    assert good.ok and good.exec_score == 1.0 and good.rows == 2 and good.row_delta is None and not good.empty
    assert bad.ok is False and bad.exec_score == 0.0 and bad.error and bad.rows is None
    assert 0.0 <= bad.verdict_p <= 1.0 and 0.0 < good.verdict_p <= 1.0
    assert bad.score < good.score and good.score == pytest.approx(good.verdict_p * good.exec_score)
    assert good.parts == ["execution", "verdict"] and good.prompt_tokens > 0 and good.elapsed_ms > 0
    second = _score(prm, schema, [STEP1, STEP2], prev_rows=good.rows)
    assert second.ok and second.rows == 1 and second.row_delta == -1
    empty = _score(ProcessReward(executor=executor), schema, [EMPTY1])
    assert empty.ok and empty.empty and empty.exec_score == EXEC_EMPTY and empty.score == EXEC_EMPTY


def test_a_part_switched_off_is_none_and_not_used(disc, executor, schema):
    spy = Spy(disc)
    no_exec = _score(ProcessReward(discriminator=spy, executor=executor, use_execution=False), schema, [BAD1])
    assert no_exec.parts == ["verdict"] and no_exec.exec_score is None and no_exec.ok is None
    assert no_exec.error is None and no_exec.sql is None and no_exec.score == no_exec.verdict_p
    assert spy.requests[-1].executions is None
    no_verdict = _score(ProcessReward(discriminator=spy, executor=executor, use_verdict=False), schema, [BAD1])
    assert no_verdict.parts == ["execution"] and no_verdict.verdict_p is None and no_verdict.prompt_tokens == 0
    assert no_verdict.score == 0.0 and len(spy.requests) == 1  # the discriminator was not called
    assert combine_parts(None, None) == 0.5
    with pytest.raises(ValueError):
        ProcessReward(executor=executor, combine="nope")


def test_the_step_prompt_renders_the_partial_chain(disc, executor, schema):
    spy = Spy(disc)
    r = _score(ProcessReward(discriminator=spy, executor=executor), schema, [STEP1, STEP2], prev_rows=2)
    (req,) = spy.requests
    chain = STEP1 + "\n" + STEP2
    assert req.sqls == [chain] and req.executions[0].ok and r.sql and "LIMIT 100" in r.sql
    assert disc.template.id == STEP_PROMPTS["logit"] == "step-logit-v1"
    prefix, suffix, _ = render_parts(disc.loaded.tokenizer, disc.template, question=Q, schema=schema)
    text = prefix + chain + suffix
    assert "Query so far" in prefix and Q in prefix and "CREATE TABLE singer" in prefix
    assert "-- those older than 30" in text and "correct start" in suffix
    cot = load_prompt("step-cot-v1").fill(question=Q, schema=schema, sql=chain)
    assert chain in cot and cot.rstrip().endswith('{"correct": false} if it is not.')


def test_step_spec_keeps_the_pair_spec_and_swaps_mode_prompt_budget():
    emb = ModelSpec(name="d", role="discriminator", backend="embedded", options={"mode": "cot", "budget": 512})
    s = step_spec(emb, mode="cot", budget=32)
    assert (s.backend, s.name, s.options) == ("embedded", "d", {"mode": "cot", "budget": 32, "prompt": "step-cot-v1"})
    assert step_spec(emb, mode="logit").options["budget"] == 512
    http = ModelSpec(name="h", role="discriminator", backend="openai-cot", url="http://x", options={"check": True})
    s = step_spec(http, mode="logit")
    assert s.backend == "openai-logit" and s.url == "http://x" and s.options["check"] is True
    assert step_spec(ModelSpec(name="l", role="discriminator", backend="logit", path="/p"), mode="cot").backend == "cot"
    with pytest.raises(ValueError):
        step_spec(emb, mode="prose")
