"""Issue 12 ("a discriminator you can trust"): each defect reproduced with scripted model outputs through the
real parser and scoring code (the real SmolLM2 tokenizer), and verdict forcing on the real model, locally and
over the loopback OpenAI-compatible server."""

from __future__ import annotations

import pytest

from core.model import Candidate, ExecutionResult, Score, ScoredCandidate
from discriminators.base import DiscriminationRequest
from discriminators.check import CheckDiscriminator
from discriminators.cot import FALLBACK, CotDiscriminator, parse_answer
from discriminators.verdict import find_verdict, first_complete_verdict, forcing_text
from eval.metrics import discriminator_metrics, macro_f1
from eval.replay import discriminator_key
from generators.extract import extract_sql

RESTATED = ('I must answer {"correct": true} if the query is right, or {"correct": false} if it is not. '
            "Let me check the joins and the filter on age")


def _parse(tok, text, **kw):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return parse_answer(tok, ids, [0.9] * len(ids), FALLBACK, **kw)


def test_restated_prompt_examples_are_not_a_verdict(tiny_model):
    out = _parse(tiny_model.tokenizer, RESTATED, finished=False)  # the budget ran out mid-thought
    assert out["parse_failure"] and out["verdict"] is None and out["score"] == FALLBACK
    done = _parse(tiny_model.tokenizer, RESTATED + '. It is right.\n{"correct": true}', finished=False)
    assert done["verdict"] is True and not done["parse_failure"]


@pytest.mark.parametrize("text", ['{"incorrect": true}', "correct: true", '"correct": false', '{"correct": "yes"}',
                                  '{"correct": true, "why": "x"}'])
def test_only_a_json_object_keyed_correct_is_a_verdict(tiny_model, text):
    assert _parse(tiny_model.tokenizer, text)["parse_failure"]


def test_only_the_answer_after_the_reasoning_counts(tiny_model):
    tok = tiny_model.tokenizer
    assert _parse(tok, '{"correct": true} hmm, still thinking', thinking=True)["parse_failure"]  # unclosed <think>
    out = _parse(tok, 'maybe {"correct": true}?</think>\n{"correct": false}', thinking=True)
    assert out["verdict"] is False
    assert find_verdict('<think>{"correct": true}</think>', finished=True) is None
    assert forcing_text("still thinking", True).startswith("\n</think>") and forcing_text("x", False) == '\n{"correct":'


def test_early_stop_needs_an_answer_on_its_own_line():
    """Early stop ends a row at its first complete verdict. Without think tags, a verdict quoted mid-sentence is a
    restatement (defect 1): the row must go on."""
    quoted = 'I must answer {"correct": true} if the SQL counts singers, so let me'
    assert first_complete_verdict(quoted) is None
    for answer in ('{"correct": false}', 'The SQL misses the filter.\n{"correct": false}',
                   'Reasoning...\n```json\n{"correct": false}', '  - {"correct": false}'):
        v = first_complete_verdict(answer)
        assert v is not None and v.value is False and answer[v.begin:v.end] == '{"correct": false}'
    # after the reasoning (think tags), any verdict in the answer is the answer
    assert first_complete_verdict('<think>{"correct": true} maybe</think> so {"correct": false}').value is False


def test_no_verdict_ranks_below_every_parsed_verdict():
    confident_false = Score(score=0.0, verdict=False)
    failure = Score(score=FALLBACK, parse_failure=True, verdict_kind="missing")
    assert failure.score < confident_false.score
    assert macro_f1([FALLBACK, 0.9], [False, True]) == 1.0  # predicted incorrect, not "correct" at 0.5


def test_check_mode_non_executable_is_strictly_worst():
    from planner.select import select

    class Confident:
        name, fallback = "c", FALLBACK

        def score(self, req):
            return [Score(score=0.0, verdict=False) for _ in req.sqls]

    disc = CheckDiscriminator(Confident())
    bad, good = ExecutionResult(ok=False, error="no such table"), ExecutionResult(ok=True)
    req = DiscriminationRequest(question="q", schema="", sqls=["SELECT x FROM nope", "SELECT 1"], executions=[bad, good])
    scores = disc.score(req)
    assert scores[0].score < scores[1].score == 0.0 and scores[0].verdict_kind == "not_executable"
    cands = [ScoredCandidate(candidate=Candidate(sql=s, source="t"), execution=e, scores=[sc])
             for s, e, sc in zip(req.sqls, [bad, good], scores, strict=True)]
    assert select("rerank", cands).index == 1
    with pytest.raises(ValueError):
        CheckDiscriminator(Confident(), worst=-0.5)


def test_replay_cache_key_covers_every_score_setting(tiny_model):
    def key(**kw):
        return discriminator_key(CheckDiscriminator(CotDiscriminator(loaded=tiny_model, name="e", **kw)))

    assert key(budget=512) != key(budget=1024)
    assert key(budget=512) != key(budget=512, fallback=-0.25)
    assert key(budget=512) != key(budget=512, prompt="cot-paper")
    assert key(budget=512) != key(budget=512, force=False)
    assert key(budget=512) == key(budget=512)
    assert "files=" in key(budget=512) and "files=None" not in key(budget=512)


def test_default_budget_is_512():
    from planner.config import GPU_REASONING_BUDGET, Defaults

    assert Defaults().reasoning_budget is None and GPU_REASONING_BUDGET == 512  # by device: the paper's 512 on a GPU
    assert CotDiscriminator.__init__.__defaults__ is None or True  # budget default read from the profile below
    from discriminators.cot import DEFAULT_BUDGET, PROFILES

    assert DEFAULT_BUDGET == 512 and PROFILES["paper"]["budget"] == 512


def test_metrics_paper_convention():
    groups = [[(0.5, True), (0.2, False)], [(0.9, False), (0.9, True)], [(0.1, False)]]
    m = discriminator_metrics(groups, sqls=[["b", "a"], ["z", "a"], ["x"]])
    p = m["paper"]
    assert p["hit_at_1"] == pytest.approx(1 / 3)  # all 3 questions; the tie goes to the earliest candidate
    assert p["mrr"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert p["hit_at_1_e2e"] == pytest.approx(2 / 3)  # tie: the lexicographically smallest SQL ("a") wins
    assert p["macro_f1"] != m["macro_f1"]  # 0.5 is "correct" only at >= 0.5
    assert m["hit_at_1"] == pytest.approx(1 / 2)  # project convention: mixed questions only


def test_extraction_ignores_sql_in_unfinished_reasoning():
    assert extract_sql("we need names, so SELECT name FROM singer might", thinking=True) == ""
    assert extract_sql("draft SELECT a FROM b</think>\nSELECT name FROM singer", thinking=True) == "SELECT name FROM singer"


def test_sample_ignore_eos_keeps_decoding(tiny_model):
    from core.runtime.hf import encode, sample

    lm = tiny_model
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}], tokenize=False,
                                           add_generation_prompt=True)
    ids = encode(lm, text, templated=True)
    free = sample(lm, ids, temperature=0, max_tokens=48)[0]
    assert free.finish_reason == "stop" and len(free.ids) < 48
    forced = sample(lm, ids, temperature=0, max_tokens=48, ignore_eos=True)[0]
    assert len(forced.ids) == 48 and forced.ids[:len(free.ids)] == free.ids


SCHEMA = "CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, age INT, country TEXT);"
REQ = DiscriminationRequest(question="How many singers are older than 30?", schema=SCHEMA,
                            sqls=["SELECT count(*) FROM singer WHERE age > 30", "SELECT name FROM singer"])


def test_forcing_gives_every_candidate_a_verdict_on_all_paths(tiny_model):
    d = CotDiscriminator(loaded=tiny_model, name="t", budget=8)
    ref, pre, many = d.traces(REQ, "reference"), d.traces(REQ, "prefix"), d.traces(REQ, "batch")
    for a, b, c in zip(ref, pre, many, strict=True):
        assert a.verdict_kind == b.verdict_kind == c.verdict_kind == "forced"
        assert a.score == pytest.approx(b.score, abs=1e-4) and b.score == pytest.approx(c.score, abs=1e-4)
        assert 0.0 <= b.score <= 1.0 and not b.parse_failure
    off = CotDiscriminator(loaded=tiny_model, name="t", budget=8, force=False)
    assert all(s.verdict_kind == "missing" and s.score == FALLBACK for s in off.score(REQ))
    norm = CotDiscriminator(loaded=tiny_model, name="t", budget=8, scoring="normalized").score(REQ)
    for s in norm:
        pt, pf = s.forced_probs
        assert s.score == pytest.approx(pt / (pt + pf), abs=1e-6)


def _demo_request() -> DiscriminationRequest:
    """The demo question on the demo schema: at budget 24 SmolLM2 writes a verdict for the first candidate
    ("The answer is:\n{"correct": false}") and none for the second (forced)."""
    from sqlbox.databases import registry_for
    from sqlbox.demo import DEMO_QUESTION
    from sqlbox.schema import schema_to_prompt

    return DiscriminationRequest(question=DEMO_QUESTION, schema=schema_to_prompt(registry_for().schema("demo")),
                                 sqls=["SELECT count(*) FROM singer WHERE age > 30", "SELECT count(*) FROM singer"])


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_http_path_matches_local_natural_and_forced(tiny_model, tiny_checkpoint, endpoint):
    from api.openai_server import create_openai_app, serve_in_thread
    from core.specs import ModelSpec
    from discriminators.openai import OpenAICotDiscriminator

    req = _demo_request()
    local = CotDiscriminator(loaded=tiny_model, name="t", budget=24).score(req)
    assert [s.verdict_kind for s in local] == ["natural", "forced"]  # the premise: one of each kind
    with serve_in_thread(create_openai_app("tiny", tiny_model)) as url:
        spec = ModelSpec(name="tiny", role="discriminator", backend="openai-cot", url=url, model="tiny",
                         options={"budget": 24, "endpoint": endpoint, "tokenizer": str(tiny_checkpoint)})
        remote = OpenAICotDiscriminator(spec).score(req)
    for a, b in zip(local, remote, strict=True):
        print(f"{endpoint} {a.verdict_kind}: local {a.score:.6f} remote {b.score:.6f} |d| {abs(a.score - b.score):.2e}")
        assert a.verdict_kind == b.verdict_kind
        assert a.verdict == b.verdict and abs(a.score - b.score) <= 1e-4, (a.score, b.score)


def _scripted_http(tiny_checkpoint, body: dict, endpoint: str = "chat", **options):
    """An OpenAICotDiscriminator on the real client, against a scripted server (httpx.MockTransport) that answers
    every request with `body`; returns (discriminator, the request bodies it received)."""
    import json

    import httpx

    from core.runtime.openai_http import OpenAIClient
    from core.specs import ModelSpec
    from discriminators.openai import OpenAICotDiscriminator

    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=body)

    client = OpenAIClient("http://scripted.invalid/v1", transport=httpx.MockTransport(handler), max_retries=0)
    spec = ModelSpec(name="s", role="discriminator", backend="openai-cot", url="http://scripted.invalid/v1", model="s",
                     options={"budget": 32, "endpoint": endpoint, "tokenizer": str(tiny_checkpoint), **options})
    return OpenAICotDiscriminator(spec, client=client), seen


ONE = DiscriminationRequest(question="How many singers?", schema=SCHEMA, sqls=["SELECT count(*) FROM singer"])


@pytest.mark.parametrize("logprobs", [{"logprobs": {"content": None}}, {}], ids=["content-null", "absent"])
def test_http_missing_logprobs_is_an_explicit_failure(tiny_checkpoint, logprobs):
    body = {"model": "s", "choices": [{"index": 0, "finish_reason": "stop", **logprobs,
                                       "message": {"role": "assistant", "content": '{"correct": true}'}}]}
    d, _ = _scripted_http(tiny_checkpoint, body)
    s = d.score(ONE)[0]
    # before: content-null gave the 0.5 fallback without reading the verdict; absent gave a hard 1.0, no failure
    assert s.parse_failure and s.verdict_kind == "missing" and s.score == FALLBACK
    assert s.verdict is True and "logprob" in (s.error or "")


def test_http_reads_the_answer_after_a_reasoning_parser(tiny_checkpoint):
    import math

    toks = [("maybe", -0.1), (' {"correct": false}', -0.1), ('{"', -0.01), ("correct", -0.01), ('":', -0.01),
            (" true", math.log(0.8)), ("}", -0.01)]
    body = {"model": "s", "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": '{"correct": true}',
                                                   "reasoning_content": 'maybe {"correct": false}'},
                                       "logprobs": {"content": [{"token": t, "logprob": lp, "top_logprobs": []}
                                                                for t, lp in toks]}}]}
    d, _ = _scripted_http(tiny_checkpoint, body)
    s = d.score(ONE)[0]
    assert s.verdict is True and s.verdict_kind == "natural" and s.score == pytest.approx(0.8)


def test_http_completions_frame_the_prompt_with_the_chat_template(tiny_checkpoint, tiny_model):
    from discriminators.prompts import load_prompt, render_prompt

    body = {"model": "s", "choices": [{"index": 0, "finish_reason": "stop", "text": "",
                                       "logprobs": {"tokens": [], "token_logprobs": [], "top_logprobs": []}}]}
    d, seen = _scripted_http(tiny_checkpoint, body, endpoint="completions", force=False)
    d.score(ONE)
    user = load_prompt("cot-v1").fill(question=ONE.question, schema=ONE.schema, sql=ONE.sqls[0])
    # before: "### Instruction:\n..." whatever the model's template
    assert seen[0]["prompt"] == render_prompt(tiny_model.tokenizer, user, "chat")[0]
    assert seen[0]["prompt"].startswith("<|im_start|>") and seen[0]["add_special_tokens"] is False


def test_the_papers_prompt_and_profile(tiny_model):
    from discriminators.prompts import load_prompt, render_parts

    t = load_prompt("cot-paper")  # before: PromptError, {schema} was required
    assert "{schema}" not in t.text
    prefix, suffix, templated = render_parts(tiny_model.tokenizer, t, question="How many singers?", schema="unused",
                                             framing="raw")
    assert not templated and suffix.endswith("<think>\nOkay,") and "unused" not in prefix + suffix
    d = CotDiscriminator(loaded=tiny_model, name="p", profile="paper")
    st = d.settings()
    assert (st["prompt"], st["chat_template"], st["force"], st["early_stop"], st["budget"], st["fallback"]) == \
        ("cot-paper", False, False, False, 512, FALLBACK)
    assert d.thinking_prompt()  # the answer is read after </think> only
    pre, _ = d.prompt_parts(ONE)
    assert tiny_model.tokenizer.decode(pre).startswith("Determine whether the SQL query is correct")  # raw text
