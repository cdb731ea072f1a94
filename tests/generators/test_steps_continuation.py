"""Prefix continuation of ONE CTE step (issue 28) on every generator backend: the local `transformers` /
`embedded` generators and the `openai` generator against the project's loopback server (chat
`continue_final_message` and completions), with the step grammar. The prefix reaches the model byte for byte,
generation stops at the step boundary, and the token counts add up."""

from __future__ import annotations

import pytest

from api.openai_server import create_openai_app, serve_in_thread
from core.runtime.chat import render_continuation, render_plain
from core.runtime.hf import encode, sample
from core.specs import ModelSpec
from generators.base import (
    STEP_STOPS,
    GenerationRequest,
    SamplingParams,
    StepRequest,
    cut_at_step_boundary,
    step_opener,
)
from generators.grammar import accepts, step_grammar
from generators.hf import TransformersGenerator
from generators.openai import OpenAIGenerator
from generators.prompts import STEP_PROMPT_VERSION, build_step_messages
from sqlbox.databases import DatabaseInfo, introspect
from sqlbox.demo import build_demo
from sqlbox.steps import cut_step

SCHEMA = "CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, age INT, country TEXT);"
FEW_SHOT = [("How many singers are from France?",
             "-- singers from France\nWITH s1 AS (SELECT * FROM singer WHERE country = 'France'),\n"
             "-- how many there are\ns2 AS (SELECT count(*) AS n FROM s1)\n-- the answer\nSELECT n FROM s2")]
STEP1 = "-- singers older than 30\nWITH s1 AS (SELECT * FROM singer WHERE age > 30),"
PREFIX = "```sql\n" + STEP1 + "\n--"  # the second step, the comment's space left to the model


def _req(temperature: float = 0.0) -> GenerationRequest:
    return GenerationRequest(question="How many singers are older than 30?", schema=SCHEMA, few_shot=FEW_SHOT,
                             params=SamplingParams(n=1, temperature=temperature, seed=7))


@pytest.fixture(scope="module")
def demo_schema():
    return introspect(DatabaseInfo("demo", build_demo(), "sqlite"), samples=0)


# ---- text and grammar, no model ---------------------------------------------------------------------------


def test_boundaries_openers_and_step_text():
    assert STEP_STOPS == ("\n--", "```")
    assert cut_at_step_boundary(" a\nb AS (x),\n-- next") == (" a\nb AS (x),", "\n--")
    assert cut_at_step_boundary(" a\nSELECT 1\n```") == (" a\nSELECT 1\n", "```")
    assert cut_at_step_boundary(" a\nSELECT 1") == (" a\nSELECT 1", None)
    assert cut_step(" the answer\nSELECT 1\n```")[0] == cut_step("the answer\nSELECT 1\n```", "-- ")[0] == \
        "-- the answer\nSELECT 1"
    assert step_opener("```sql\n-- ") == "-- " and step_opener(PREFIX) == "--"
    # a prefix that already holds the step's comment (Route-and-Reason's sub-question): the model writes the body
    assert step_opener("```sql\n-- the singers\n") == "-- the singers\n"
    with pytest.raises(ValueError, match="forced opening"):
        step_opener("```sql\n--\n")
    with pytest.raises(ValueError, match="forced opening"):
        step_opener("```sql\nSELECT")


@pytest.mark.parametrize(("expect", "text", "ok"), [
    ("first", "singers over 30\nWITH s1 AS (SELECT * FROM singer WHERE age > 30),", True),
    ("first", "singers over 30\nWITH s1 AS (SELECT * FROM singer WHERE age > 30)", True),
    ("first", "the answer\nSELECT count(*) FROM singer\n```", True),
    ("first", "the answer\nSELECT count(*) FROM singer", False),  # a final step ends with the fence
    ("first", "singers\ns1 AS (SELECT * FROM singer),", False),  # the first CTE opens with WITH
    ("cte", "how many\ns2 AS (SELECT count(*) AS n FROM s1)", True),
    ("cte", "how many\ns2 AS (SELECT count(*) AS n FROM s1),", True),
    ("cte", "how many\nWITH s2 AS (SELECT count(*) AS n FROM s1)", False),
    ("cte", "how many\ns2 AS (SELECT count(*) AS n FROM s9)", False),  # s9 is no step
    ("final", "the answer\nSELECT n FROM s2\n```", True),
    ("final", "the answer\nSELECT n FROM s2;\n```", True),
    ("final", "the answer\nSELECT nope FROM s2\n```", False),  # no such column
    ("final", "the answer\ns3 AS (SELECT n FROM s2)", False),
    ("any", "how many\ns2 AS (SELECT count(*) AS n FROM s1),", True),
    ("any", "the answer\nSELECT n FROM s2\n```", True),
    ("any", " the answer\nSELECT n FROM s2\n```", False),  # after "-- " the comment starts with its text
    ("any", "the ``` answer\nSELECT n FROM s2\n```", False),  # no fence inside a comment
])
def test_step_grammar(demo_schema, expect, text, ok):
    g = step_grammar(demo_schema, expect=expect, names=["s1", "s2"], columns={"s1": ["singer_id"], "s2": ["n"]})
    assert accepts(g, text) is ok


def test_step_grammar_opener_and_bad_arguments(demo_schema):
    g = step_grammar(demo_schema, expect="final", names=["s1"], columns=["n"], opener="--")
    assert accepts(g, " the answer\nSELECT n FROM s1\n```") and not accepts(g, "the answer\nSELECT n FROM s1\n```")
    with pytest.raises(ValueError, match="expect"):
        step_grammar(demo_schema, expect="middle")
    with pytest.raises(ValueError, match="opener"):
        step_grammar(demo_schema, opener="#")


def test_step_prompt_messages():
    msgs = build_step_messages(_req(), PREFIX)
    assert STEP_PROMPT_VERSION == "steps-v1"
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert "chain of steps" in msgs[0]["content"] and SCHEMA in msgs[0]["content"]
    assert msgs[2]["content"] == "```sql\n" + FEW_SHOT[0][1] + "\n```"  # few-shot SQL as given
    assert msgs[-1] == {"role": "assistant", "content": PREFIX}
    assert build_step_messages(_req())[-1]["role"] == "user"


def test_render_continuation_ends_with_the_prefix(tiny_model):
    tok = tiny_model.tokenizer
    msgs = build_step_messages(_req(), "```sql\n-- ")
    text = render_continuation(tok, msgs)
    assert text.endswith("<|im_start|>assistant\n```sql\n-- ")

    class Trimming:  # a template that trims messages: transformers drops the prefix's trailing space
        chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
                         "{% endfor %}")

        def apply_chat_template(self, messages, **kw):
            return tok.apply_chat_template(messages, chat_template=self.chat_template, **kw)

    trimmed = Trimming().apply_chat_template(msgs, tokenize=False, add_generation_prompt=False,
                                             continue_final_message=True)
    assert trimmed.endswith("```sql\n--")  # what the template alone gives
    assert render_continuation(Trimming(), msgs).endswith("```sql\n-- ")

    class Plain:
        chat_template = None

    plain = render_continuation(Plain(), msgs)
    assert plain == render_plain(msgs[:-1]) + "```sql\n-- " and plain.endswith("### Response:\n```sql\n-- ")
    with pytest.raises(ValueError, match="final assistant"):
        render_continuation(tok, msgs[:-1])


# ---- the local backend ------------------------------------------------------------------------------------


def _generated_until(tiny_model, prompt_ids: list[int], k: int) -> str:
    """The greedy continuation's text after k tokens (no stopping rule)."""
    s = sample(tiny_model, prompt_ids, n=1, temperature=0, max_tokens=k)[0]
    return tiny_model.tokenizer.decode(s.ids[:k], skip_special_tokens=True)


@pytest.mark.parametrize("prefix", [PREFIX, "```sql\n" + STEP1 + "\n-- "])
def test_local_step_keeps_the_prefix_and_stops_at_the_boundary(tiny_model, prefix):
    gen = TransformersGenerator(loaded=tiny_model, name="tiny-gen")
    sreq = StepRequest(_req(), prefix, max_tokens=60)
    prompt = gen.step_prompt(sreq)
    assert prompt.endswith(prefix)
    res = gen.continue_step(sreq)
    opener = step_opener(prefix)
    assert res.text.startswith("--") and res.text == (opener + cut_at_step_boundary(res.raw)[0]).rstrip()
    answer = prefix[: -len(opener)] + res.text
    assert answer.startswith("```sql\n" + STEP1 + "\n--")  # the prefix, byte for byte, then the step
    assert res.boundary in ("step", "end") and res.model == "tiny-gen" and not res.constrained
    ids = encode(tiny_model, prompt, templated=True)
    assert res.prompt_tokens == len(ids)
    # completion_tokens = the tokens generated up to and including the one that completed the boundary
    k = res.completion_tokens
    assert cut_at_step_boundary(_generated_until(tiny_model, ids, k))[1] is not None
    assert k == 1 or cut_at_step_boundary(_generated_until(tiny_model, ids, k - 1))[1] is None
    assert res.logprob_tokens is None or (res.logprob_tokens <= k and res.logprob <= 0)


def test_local_constrained_step_is_accepted_by_its_grammar(tiny_model, demo_schema, monkeypatch):
    import generators.embedded as emb

    monkeypatch.setattr(emb, "embedded_checkpoint", lambda: str(tiny_model.path))
    gen = emb.embedded_generator(ModelSpec(name="embedded", role="generator", backend="embedded"), loaded=tiny_model)
    assert gen.constrained and hasattr(gen, "continue_step")
    req = GenerationRequest(question="How many singers are older than 30?", schema=SCHEMA, few_shot=FEW_SHOT,
                            params=SamplingParams(n=1, temperature=0, seed=1))
    g = step_grammar(demo_schema, expect="any", names=["s1"], columns={"s1": ["singer_id", "name", "age"]},
                     opener="--")
    res = gen.continue_step(StepRequest(req, PREFIX, grammar=g, max_tokens=80))
    assert res.constrained and res.boundary in ("eos", "end")
    assert accepts(g, res.raw)  # a CTE step to the grammar's end, or a final step to its closing fence


# ---- over HTTP: the loopback server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_model):
    log: list[dict] = []
    with serve_in_thread(create_openai_app("tiny", tiny_model, request_log=log)) as url:
        yield url, log


def _http(url: str, **options) -> OpenAIGenerator:
    return OpenAIGenerator(ModelSpec(name="http-gen", role="generator", backend="openai", url=url, model="tiny",
                                     options=options))


def test_http_chat_step_continues_the_prefix_like_the_local_backend(served, tiny_model):
    url, log = served
    sreq = StepRequest(_req(), PREFIX, max_tokens=60)
    local = TransformersGenerator(loaded=tiny_model, name="tiny").continue_step(sreq)
    n0 = len(log)
    res = _http(url).continue_step(sreq)
    entry = log[n0]
    assert len(log) == n0 + 1 and entry["endpoint"] == "chat" and entry["continue_final_message"] is True
    assert entry["prefix"] == PREFIX  # the server received the exact prefix
    assert (res.text, res.boundary) == (local.text, local.boundary) and not res.notes
    # token counts: the server's usage, the same as the local count of generated tokens
    assert res.completion_tokens == entry["completion_tokens"] == local.completion_tokens
    assert res.prompt_tokens == entry["prompt_tokens"] == local.prompt_tokens
    assert res.logprob == pytest.approx(local.logprob, abs=1e-3) and res.logprob_tokens == local.logprob_tokens


def test_http_completions_step(served):
    url, log = served
    n0 = len(log)
    res = _http(url, endpoint="completions").continue_step(StepRequest(_req(), PREFIX, max_tokens=60))
    entry = log[n0]
    assert entry["endpoint"] == "completions" and entry["prefix"] == PREFIX  # the prompt ends with the prefix
    assert res.text.startswith("--") and res.boundary in ("step", "end", "eos", "length")
    assert res.completion_tokens == entry["completion_tokens"] >= 1 and res.prompt_tokens == entry["prompt_tokens"]
    assert cut_at_step_boundary(res.raw)[1] is None  # the server stopped before the boundary


def test_http_constrained_step_and_refusal_fallback(served, tiny_model, demo_schema):
    url, log = served
    g = step_grammar(demo_schema, expect="any", names=["s1"], columns=["singer_id", "name", "age"], opener="--")
    sreq = StepRequest(_req(), PREFIX, grammar=g, max_tokens=80)
    res = _http(url, constrained=True).continue_step(sreq)
    assert res.constrained and log[-1]["constrained"] and res.boundary in ("eos", "end")
    assert accepts(g, res.raw + ("```" if res.boundary == "end" else ""))  # the server cut the fence off
    with serve_in_thread(create_openai_app("tiny", tiny_model, grammar=False)) as plain_url:
        res2 = _http(plain_url, constrained=True).continue_step(StepRequest(_req(), PREFIX, grammar=g, max_tokens=8))
    assert not res2.constrained and any("refused guided_grammar" in n for n in res2.notes)


# ---- the prose step kind: reasoning paragraphs split at blank lines, as TRIM's code does -------------------

PROSE_STEP1 = "Step 1: the singers older than 30."
PROSE_FEW_SHOT = [("How many singers are from France?",
                   "Step 1: singers from France.\n\nStep 2: how many there are.\n\n"
                   "```sql\nSELECT count(*) FROM singer WHERE country = 'France'\n```")]


def _prose_req() -> GenerationRequest:
    return GenerationRequest(question="How many singers are older than 30?", schema=SCHEMA, few_shot=PROSE_FEW_SHOT,
                             params=SamplingParams(n=1, temperature=0, seed=7))


def test_prose_step_prompt_and_opener():
    msgs = build_step_messages(_prose_req(), "", kind="prose")
    assert msgs[-1]["role"] == "user" and "paragraphs" in msgs[0]["content"]  # an empty prefix starts the answer
    assert msgs[2]["content"] == PROSE_FEW_SHOT[0][1]  # a prose example is a whole answer, used as given
    msgs = build_step_messages(_prose_req(), PROSE_STEP1 + "\n\n", kind="prose")
    assert msgs[-1] == {"role": "assistant", "content": PROSE_STEP1 + "\n\n"}
    assert step_opener("", "prose") == step_opener(PROSE_STEP1 + "\n\n", "prose") == ""
    with pytest.raises(ValueError, match="blank line"):
        step_opener(PROSE_STEP1, "prose")
    with pytest.raises(ValueError, match="unknown step kind"):
        build_step_messages(_prose_req(), "", kind="poem")


@pytest.mark.parametrize("prefix", ["", PROSE_STEP1 + "\n\n"])
def test_prose_step_local_and_over_http_continue_the_same_prefix(served, tiny_model, prefix):
    sreq = StepRequest(_prose_req(), prefix, max_tokens=48, kind="prose")
    gen = TransformersGenerator(loaded=tiny_model, name="tiny")
    prompt = gen.step_prompt(sreq)
    assert prompt.endswith(prefix) and (prefix or prompt.endswith("assistant\n"))
    local = gen.continue_step(sreq)
    kept, stop = cut_at_step_boundary(local.raw, "prose")
    assert "\n\n" not in local.text and local.text == kept.strip()
    assert (local.boundary == "step") == (stop == "\n\n") and local.boundary in ("step", "eos", "length")
    url, log = served
    n0 = len(log)
    res = _http(url).continue_step(sreq)
    entry = log[n0]
    assert entry["continue_final_message"] is bool(prefix) and entry["prefix"] == (prefix or None)
    assert (res.text, res.boundary, res.completion_tokens) == (local.text, local.boundary, local.completion_tokens)
    assert res.completion_tokens == entry["completion_tokens"] and res.prompt_tokens == local.prompt_tokens
