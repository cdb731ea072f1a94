"""Route-and-Reason's decomposer (planner/decompose.py, issue 29): the list format and its checks, examples from gold
chains, the grammar, composing a chain step by step, and one real call of the embedded model."""

from __future__ import annotations

import time

import pytest

from generators.base import GenerationRequest, SamplingParams, StepResult
from generators.grammar import accepts
from planner.decompose import (
    Decomposition,
    DecompositionError,
    Subtask,
    body_grammar,
    compose,
    decompose,
    decomposition_examples,
    decomposition_grammar,
    parse_decomposition,
    subtasks_of_chain,
)
from planner.stepwise import StepMemo, Tier
from sqlbox.steps import parse_chain, step_state, to_chain

SCHEMA = {"singer": ["singer_id", "name", "country", "age"], "concert": ["concert_id", "name", "year"],
          "singer_in_concert": ["singer_id", "concert_id"]}


def _refused(text: str, **kw) -> DecompositionError:
    with pytest.raises(DecompositionError) as e:
        parse_decomposition(text, kw.pop("schema", SCHEMA), **kw)
    return e.value


# ---------------------------------------------------------------------------------------------- the checks
def test_an_easy_question_is_one_step_and_parses():
    d = parse_decomposition("1. count of Singer where age > 30 [tables: SINGER] [needs: -]", SCHEMA)
    assert d.subtasks == [Subtask(1, "count of Singer where age > 30", (), ("singer",))]  # the schema's spelling
    assert d.text == "1. count of Singer where age > 30 [tables: singer] [needs: -]"


def test_a_multi_step_list_parses_with_its_dependencies():
    d = parse_decomposition("1. name of singer where country = 'France' [tables: singer] [needs: -]\n"
                            "2. name of singer where age > 30 [tables: singer] [needs: -]\n"
                            "3. s1 INTERSECT s2 [tables: -] [needs: 1, 2]", SCHEMA)
    assert [s.needs for s in d.subtasks] == [(), (), (1, 2)]
    assert [s.tables for s in d.subtasks] == [("singer",), ("singer",), ()]


def test_a_step_naming_an_unknown_table_is_refused_with_the_table_and_the_known_ones():
    e = _refused("1. count of singers [tables: singers] [needs: -]")
    assert e.kind == "unknown_table"
    assert "step 1 names table 'singers'" in e.reason and "concert, singer, singer_in_concert" in e.reason


def test_a_step_that_needs_a_missing_step_is_refused():
    e = _refused("1. rows of singer [tables: singer] [needs: -]\n2. count of s1 [tables: -] [needs: 1, 3]")
    assert e.kind == "needs_missing"
    assert e.reason == "step 2 needs step 3, which does not exist (the list has 2 steps)"


def test_a_step_that_needs_a_later_step_or_itself_is_refused():
    e = _refused("1. rows of s2 [tables: singer] [needs: 2]\n2. count of s1 [tables: -] [needs: 1]")
    assert e.kind == "needs_later" and "step 1 needs step 2, a later step" in e.reason
    e = _refused("1. rows of singer [tables: singer] [needs: -]\n2. count [tables: -] [needs: 2]")
    assert e.kind == "needs_later" and "step 2 needs step 2, itself" in e.reason


@pytest.mark.parametrize(("text", "kind", "words"), [
    ("", "empty", "empty"),
    ("  \n \n", "empty", "empty"),
    ("1. count of singer", "format", "is not '<n>. <sub-question> [tables: ...] [needs: ...]'"),
    ("1. count of singer [tables: singer] [needs: one]", "format", "needs must be step numbers"),
    ("2. count of singer [tables: singer] [needs: -]", "numbering", "line 1 is numbered 2"),
    ("1. a [tables: singer] [needs: -]\n3. b [tables: -] [needs: 1]", "numbering", "line 2 is numbered 3"),
    ("1. the answer [tables: -] [needs: -]", "reads_nothing", "step 1 reads nothing"),
    ("1. a [tables: singer] [needs: -]\n2. b [tables: concert] [needs: -]", "unused",
     "step 1 is read by no later step"),
    ("1. " + "name, " * 30 + "[tables: singer] [needs: -]", "too_long", "longer than 120 characters"),
])
def test_other_broken_lists_are_refused_with_a_reason(text, kind, words):
    e = _refused(text)
    assert e.kind == kind and words in e.reason


def test_more_than_max_steps_is_refused():
    lines = ["1. rows of singer [tables: singer] [needs: -]"]
    lines += [f"{k}. rows of s{k - 1} [tables: -] [needs: {k - 1}]" for k in range(2, 5)]
    assert len(parse_decomposition("\n".join(lines), SCHEMA, max_steps=4)) == 4
    e = _refused("\n".join(lines), max_steps=3)
    assert e.kind == "too_many" and "4 steps, more than max_steps (3)" in e.reason


def test_without_a_schema_table_names_are_not_checked():
    assert parse_decomposition("1. a [tables: anything] [needs: -]", None).subtasks[0].tables == ("anything",)


# ---------------------------------------------------------------------------------------------- examples
def test_decomposition_examples_come_from_the_gold_chain():
    shots = [("Who is older than average?", "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)"),
             ("Countries of singers in concerts of both 2014 and 2015?",
              "SELECT T1.country FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
              "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2014 INTERSECT "
              "SELECT T1.country FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
              "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2015"),
             ("How many singers?", "SELECT count(*) FROM singer"),
             ("not SQL", "DROP TABLE singer")]  # does not rewrite: left out
    ex = decomposition_examples(shots, "sqlite")
    assert [q for q, _ in ex] == [q for q, _ in shots[:3]]
    older, both, count = (parse_decomposition(t, SCHEMA) for _, t in ex)
    chain = to_chain(shots[0][1])
    assert [s.text for s in older.subtasks] == [s.comment for s in chain.steps]  # the step comments
    assert [(s.needs, s.tables) for s in older.subtasks] == [((), ("singer",)), ((1,), ("singer",))]
    assert [s.needs for s in both.subtasks] == [(), (), (1, 2)]
    assert both.subtasks[0].tables == ("singer", "singer_in_concert", "concert")
    assert both.subtasks[2].tables == ()
    assert count.text == "1. count of singer [tables: singer] [needs: -]"


def test_subtasks_of_a_chain_read_earlier_steps_by_name():
    chain = parse_chain("-- singers from France\nWITH s1 AS (SELECT * FROM singer WHERE country = 'France'),\n"
                        "-- how many there are\ns2 AS (SELECT count(*) AS n FROM s1)\n-- the answer\nSELECT n FROM s2")
    subs = subtasks_of_chain(chain)
    assert [(s.index, s.text, s.needs, s.tables) for s in subs] == [
        (1, "singers from France", (), ("singer",)), (2, "how many there are", (1,), ()),
        (3, "the answer", (2,), ())]


# ---------------------------------------------------------------------------------------------- grammars
def test_the_decomposition_grammar_holds_the_format_tables_and_earlier_needs():
    g = decomposition_grammar(SCHEMA, max_steps=3)
    ok = " rows of singer [tables: singer] [needs: -]\n2. count of s1 [tables: -] [needs: 1]"
    assert accepts(g, ok)
    assert accepts(g, " count of singer [tables: singer, concert] [needs: -]")
    assert not accepts(g, " count [tables: singers] [needs: -]")  # unknown table
    assert not accepts(g, " a [tables: singer] [needs: 1]")  # step 1 needs itself
    assert not accepts(g, " a [tables: singer] [needs: -]\n2. b [tables: -] [needs: 2]")  # not earlier
    four = ok + "\n3. c [tables: -] [needs: 2]\n4. d [tables: -] [needs: 3]"
    assert not accepts(g, four)  # more than max_steps
    assert not accepts(g, " " + "x" * 200 + " [tables: singer] [needs: -]")  # a sub-question that runs on


def test_the_body_grammar_fixes_each_steps_shape():
    from sqlbox.schema import Column, Schema, Table

    schema = Schema(db_id="t", tables=[Table(name=t, columns=[Column(name=c, type="TEXT") for c in cols])
                                       for t, cols in SCHEMA.items()])
    first = "WITH s1 AS (SELECT * FROM singer)"
    assert accepts(body_grammar(schema, step_state([]), 0, 1), "SELECT count(*) FROM singer\n```")
    assert not accepts(body_grammar(schema, step_state([]), 0, 1), first)
    assert accepts(body_grammar(schema, step_state([]), 0, 3), first + ",")
    assert not accepts(body_grammar(schema, step_state([]), 0, 3), first)  # another CTE follows: a comma
    assert accepts(body_grammar(schema, step_state([]), 0, 2), first)
    state = step_state(["-- all\n" + first])
    assert accepts(body_grammar(schema, state, 1, 2), "SELECT count(*) FROM s1\n```")


# ---------------------------------------------------------------------------------------------- composing
class _Scripted:
    """continue_step writes body k for the k-th step; records the prefixes (a body, the comment being given)."""

    def __init__(self, bodies):
        self.name, self.bodies, self.prefixes, self.constrained = "scripted", bodies, [], False

    def continue_step(self, request):
        k = len(self.prefixes)
        self.prefixes.append(request.prefix)
        body = self.bodies[k]
        return StepResult(text=body, raw=body + ("\n```" if k == len(self.bodies) - 1 else "\n-- next"),
                          boundary="end" if k == len(self.bodies) - 1 else "step", prompt_tokens=50 + k,
                          completion_tokens=len(body.split()))


def _tier(backend, pair="strong"):
    req = GenerationRequest(question="How many singers from France?", schema="CREATE TABLE singer (...)",
                            params=SamplingParams(n=1, temperature=0.0))
    return Tier(pair, backend.name, backend, req)


def test_compose_writes_each_body_after_its_sub_question_and_counts_the_tokens():
    d = Decomposition([Subtask(1, "singers from France", (), ("singer",)), Subtask(2, "how many there are", (1,))])
    b = _Scripted(["WITH s1 AS (SELECT * FROM singer WHERE country = 'France')", "SELECT count(*) FROM s1"])
    memo = StepMemo()
    c = compose(d, [_tier(b, "cheap"), _tier(b, "strong")], memo=memo)
    assert c.fallback is None and c.complete
    assert b.prefixes == ["```sql\n-- singers from France\n",
                          "```sql\n-- singers from France\nWITH s1 AS (SELECT * FROM singer WHERE country = 'France')\n"
                          "-- how many there are\n"]
    assert c.text == ("-- singers from France\nWITH s1 AS (SELECT * FROM singer WHERE country = 'France')\n"
                      "-- how many there are\nSELECT count(*) FROM s1")
    assert [s["pair"] for s in c.steps] == ["cheap", "strong"]
    assert c.usage["cheap"].completion_tokens == 11 and c.usage["strong"].completion_tokens == 4
    assert c.tokens() == 15 and c.usage["strong"].prompt_tokens == 51
    again = compose(d, [_tier(b, "cheap"), _tier(b, "strong")], memo=memo)  # memoised: no new call
    assert again.text == c.text and len(b.prefixes) == 2 and memo.hits == 2


def test_compose_says_when_the_chain_ends_early_and_falls_back_with_a_reason_when_a_step_is_unusable():
    d = Decomposition([Subtask(1, "rows of singer", (), ("singer",)), Subtask(2, "count of s1", (1,))])
    b = _Scripted(["SELECT * FROM singer", "SELECT count(*) FROM s1"])  # step 1 is already a whole query
    c = compose(d, [_tier(b)] * 2)
    assert c.text == "-- rows of singer\nSELECT * FROM singer" and len(b.prefixes) == 1
    assert c.note == "the final SELECT came at step 1 of 2"
    b1 = _Scripted(["WITH s1 AS (SELECT * FROM singer)", "-- a comment only"])
    c1 = compose(d, [_tier(b1)] * 2)
    assert c1.text is None and c1.fallback and c1.fallback.startswith("step 2")
    b2 = _Scripted(["", "SELECT 1"])
    c2 = compose(d, [_tier(b2)] * 2)
    assert c2.text is None and c2.fallback == "step 1: the model wrote no SQL after the comment"
    with pytest.raises(ValueError, match="2 tiers for 1 subtasks"):
        compose(Decomposition([Subtask(1, "x", (), ("singer",))]), [_tier(b)] * 2)


# ---------------------------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_one_real_decompose_call_of_the_embedded_model(tiny_model):
    from generators.hf import TransformersGenerator
    from sqlbox.demo import DEMO_EXAMPLES

    gen = TransformersGenerator(loaded=tiny_model, name="tiny", constrained=True)
    schema_prompt = "\n\n".join(f"CREATE TABLE {t} (\n  " + ",\n  ".join(f"{c} TEXT" for c in cols) + "\n);"
                                for t, cols in SCHEMA.items())
    examples = decomposition_examples(DEMO_EXAMPLES, "sqlite")
    t0 = time.monotonic()
    d = decompose(gen, "How many singers are older than 30?", schema_prompt, SCHEMA, examples, "sqlite")
    assert time.monotonic() - t0 < 120
    assert isinstance(d, Decomposition) and d.raw.startswith("1.")
    assert 1 <= len(d) <= 6 and all(t in SCHEMA for s in d.subtasks for t in s.tables)
    assert d.constrained and 0.0 < d.confidence <= 1.0
    assert d.prompt_tokens > 100 and 0 < d.completion_tokens <= 256


class _FakeClient:
    base = "http://fake/v1"

    def __init__(self, content, logprobs):
        self.content, self.logprobs, self.calls = content, logprobs, []

    def chat(self, messages, **kw):
        self.calls.append((messages, kw))
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.content},
                             "logprobs": {"content": [{"logprob": x} for x in self.logprobs]},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 321, "completion_tokens": len(self.logprobs)}}


class _FakeHTTPGenerator:
    """The attributes of generators.openai.OpenAIGenerator the decomposer uses (chat endpoint)."""

    def __init__(self, client, constrained=False):
        self.name, self.model, self.endpoint, self.grammar_field = "http", "m", "chat", "guided_grammar"
        self.client, self.constrained = client, constrained


def test_decompose_over_http_continues_the_forced_opener_and_reads_the_confidence():
    import math

    client = _FakeClient(" count of singer where age > 30 [tables: singer] [needs: -]\n\nmore prose", [-0.1, -0.3])
    d = decompose(_FakeHTTPGenerator(client, constrained=True), "How many singers are older than 30?",
                  "CREATE TABLE singer (...)", SCHEMA, [("How many singers?", "1. count of singer [tables: singer] "
                                                                           "[needs: -]")])
    messages, kw = client.calls[0]
    assert messages[-1] == {"role": "assistant", "content": "1."} and messages[-2]["role"] == "user"
    assert kw["continue_final_message"] is True and kw["add_generation_prompt"] is False
    assert kw["temperature"] == 0.0 and "\n\n" in kw["stop"] and "guided_grammar" in kw
    assert d.text == "1. count of singer where age > 30 [tables: singer] [needs: -]"  # cut at the blank line
    assert d.prompt_tokens == 321 and d.completion_tokens == 2 and d.constrained
    assert d.confidence == pytest.approx(math.exp(-0.2))


def test_a_refused_list_from_the_model_carries_its_raw_text_and_tokens():
    client = _FakeClient(" count of singers [tables: singers] [needs: -]", [-0.5])
    with pytest.raises(DecompositionError) as e:
        decompose(_FakeHTTPGenerator(client), "How many singers?", "CREATE TABLE singer (...)", SCHEMA, [])
    assert e.value.kind == "unknown_table" and e.value.raw == "1. count of singers [tables: singers] [needs: -]"
    assert e.value.prompt_tokens == 321 and e.value.completion_tokens == 1
