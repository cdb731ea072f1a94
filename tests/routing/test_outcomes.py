"""Logged outcomes (store, JSONL, pool import, plan logging), the systems' cost model and router features."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.model import Plan, Question, RouteDecision, TokenUsage
from core.settings import candidates_dir, spider_dir
from eval.outcomes import load_outcomes, outcomes_from_pool, outcomes_from_results
from routing.costs import CostConfigError, load_cost_config, system_cost, system_costs
from routing.features import (
    EMBED_DIM,
    FeatureConfig,
    Featurizer,
    embedder_dir,
    question_features,
    schema_features_for,
)
from routing.outcomes import (
    Outcome,
    OutcomeError,
    OutcomeLogger,
    OutcomeMatrix,
    OutcomeStore,
    outcome_from_plan,
    read_jsonl,
    write_jsonl,
)


def _o(q="How many singers?", pair="cheap", correct=True, cost=0.01, **kw):
    return Outcome(question=q, db_id="concert_singer", pair=pair, correct=correct, cost=cost, **kw)


# ---------------------------------------------------------------------------- outcomes


def test_store_add_load_label(tmp_path):
    store = OutcomeStore(f"sqlite:///{tmp_path / 'o.db'}")
    assert store.add([_o(), _o(pair="strong", cost=0.1, source="eval"), _o(correct=None, plan_id="p1")]) == 3
    assert len(store.load()) == 2  # labelled only
    assert store.count() == 3 and store.sources() == ["eval", "unknown"]
    assert [o.pair for o in store.load(source="eval")] == ["strong"]
    assert store.label("p1", True) == 1
    assert len(store.load()) == 3
    # a second store object on the same file sees the same rows (durable)
    assert OutcomeStore(f"sqlite:///{tmp_path / 'o.db'}").count() == 3


def test_jsonl_roundtrip_and_errors(tmp_path):
    outs = [_o(), _o(pair="strong", correct=False, prompt_tokens=10)]
    write_jsonl(outs, tmp_path / "o.jsonl")
    back = read_jsonl(tmp_path / "o.jsonl")
    assert back == outs
    assert load_outcomes(str(tmp_path / "o.jsonl")) == outs
    (tmp_path / "bad.jsonl").write_text('{"question": 1}\n')
    with pytest.raises(OutcomeError, match="bad.jsonl:1"):
        read_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(OutcomeError, match="cannot read outcomes"):
        load_outcomes(str(tmp_path / "nothing.txt"))


def test_matrix_pivots_questions_by_pairs():
    outs = [_o("q1", "a", True, 1.0, question_id="1"), _o("q1", "b", False, 2.0, question_id="1"),
            _o("q2", "a", False, 1.0, question_id="2"), _o("q3", "b", None, 2.0, question_id="3")]
    M = OutcomeMatrix.from_outcomes(outs)
    assert M.pairs == ["a", "b"] and M.questions == ["q1", "q2"]
    assert M.correct[0].tolist() == [1.0, 0.0]
    assert M.correct[1, 0] == 0.0 and math.isnan(M.correct[1, 1])
    assert M.subset([1]).questions == ["q2"]
    assert M.data_hash() == OutcomeMatrix.from_outcomes(outs).data_hash()
    with pytest.raises(OutcomeError):
        OutcomeMatrix.from_outcomes([_o(correct=None)])


def test_pool_import_with_labels_and_real_ex(tmp_path):
    dev = spider_dir() / "dev.json"
    if not dev.is_file():
        pytest.skip(f"Spider dev data not found at {dev}")
    pool = tmp_path / "pool.jsonl"
    lines = [
        {"idx": 0, "db_id": "concert_singer", "candidates": [
            {"sql": "SELECT count(*) FROM singer", "system": "sysA", "cost": 0.5},
            {"sql": "SELECT count(*) FROM stadium", "system": "sysB", "correct": False},
            {"sql": "SELECT count(*) FROM singer", "system": "sysB", "correct": True}]},
        {"idx": 1, "db_id": "concert_singer", "question": "custom text", "candidates": ["SELECT 1"]},
    ]
    pool.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    first = outcomes_from_pool(pool, costs={"pool": 0.01})
    by = {(o.question_id, o.pair): o for o in first}
    assert by[("0", "sysA")].correct is True and by[("0", "sysA")].cost == 0.5  # judged with real EX
    assert by[("0", "sysB")].correct is False  # first candidate of sysB
    assert by[("1", "pool")].correct is False and by[("1", "pool")].question == "custom text"
    assert by[("1", "pool")].cost == 0.01 and by[("0", "sysA")].question == "How many singers do we have?"
    anyof = {(o.question_id, o.pair): o for o in outcomes_from_pool(pool, mode="any")}
    assert anyof[("0", "sysB")].correct is True
    assert load_outcomes(str(pool))[0].source == "pool:pool.jsonl"
    with pytest.raises(OutcomeError):
        outcomes_from_pool(pool, mode="vote")


def test_real_candidate_pool_file_imports(tmp_path):
    f = candidates_dir() / "spider_dev_samples" / "qwen2.5-coder-7b-instruct_T0.4_x5_200q.jsonl"
    if not f.is_file():
        pytest.skip(f"candidate pool not found at {f}")
    head = tmp_path / f.name  # the first 5 questions, labelled with the project's real EX
    head.write_text("\n".join(f.read_text().splitlines()[:5]) + "\n")
    outs = outcomes_from_pool(head)
    assert len(outs) == 5 and all(o.pair == f.stem for o in outs) and all(o.correct is not None for o in outs)


def test_end_to_end_eval_results_import(tmp_path):
    if not (spider_dir() / "dev.json").is_file():
        pytest.skip("Spider dev data not found")
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"index": 1, "db_id": "concert_singer", "ex": True, "route": "cheap", "cost": 0.01, "prompt_tokens": 300,
              "completion_tokens": 40, "latency_ms": 900.0, "plan_id": "p1"},
             {"index": 0, "db_id": "concert_singer", "ex": False, "route": "strong", "cost": 0.2},
             {"index": 2, "db_id": "concert_singer", "ex": True}]  # a predictions-mode line: no route
    (run / "results.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{torn")
    outs = outcomes_from_results(run)
    assert [(o.question_id, o.pair, o.correct) for o in outs] == [("1", "cheap", True), ("0", "strong", False)]
    assert outs[1].question == "How many singers do we have?" and outs[0].prompt_tokens == 300
    assert outs[0].source == "eval:run" and outs[0].plan_id == "p1"
    assert [o.model_dump(exclude={"created_at"}) for o in load_outcomes(str(run))] == \
        [o.model_dump(exclude={"created_at"}) for o in outs]
    with pytest.raises(OutcomeError):
        outcomes_from_results(tmp_path / "nothing")


def test_plan_outcomes_are_logged_and_labelled(tmp_path):
    store = OutcomeStore(f"sqlite:///{tmp_path / 'o.db'}")
    route = RouteDecision(router="cascade", pair="cheap", generator="g", discriminator="d", steps=["cheap", "strong"],
                          escalated=True)
    plan = Plan(question=Question(text="How many singers?", db_id="demo", id="7"), route=route,
                usage=[TokenUsage(model="g", role="generator", prompt_tokens=100, completion_tokens=20, cost=0.002)],
                total_cost=0.002, timings_ms={"generate": 10.0, "execute": 5.0})
    o = outcome_from_plan(plan)
    assert o.pair == "strong" and o.prompt_tokens == 100 and o.latency_ms == 15.0 and o.correct is None
    OutcomeLogger(store)(plan)
    assert store.load() == []
    assert store.label(plan.id, False) == 1
    assert store.load()[0].correct is False and store.load()[0].plan_id == plan.id


# ---------------------------------------------------------------------------- costs


def test_every_published_system_has_a_documented_cost():
    f = candidates_dir() / "spider_dev" / "systems.json"
    if not f.is_file():
        pytest.skip(f"systems.json not found at {f}")
    names = [s["name"] for s in json.loads(f.read_text())]
    costs = system_costs(names)
    assert len(costs) == 43
    api = [c for c in costs.values() if c.kind == "api"]
    hosted = [c for c in costs.values() if c.kind == "self-hosted"]
    assert api and hosted
    assert min(c.usd_per_question for c in api if c.model == "gpt-4") > max(c.usd_per_question for c in hosted)
    assert costs["Spider-baseline_pred_example"].usd_per_question < 1e-6  # 2018-era: near zero
    gpt4 = costs["GPT-4_zero-shot_DINrepo"]
    assert gpt4.usd_per_question == pytest.approx(800 / 1000 * 0.03 + 60 / 1000 * 0.06)
    codes = costs["CodeS-15b_SFT"]
    assert codes.usd_per_question == pytest.approx(2 * 15e9 * 1900 * 5.9e-18)


def test_cost_config_override_and_errors(tmp_path, monkeypatch):
    cfg = load_cost_config()
    text = (tmp_path / "c.toml")
    base = open(__import__("routing.costs", fromlist=["x"]).DEFAULT_COST_CONFIG).read()
    text.write_text(base.replace("input = 0.03\n", "input = 0.3\n", 1))
    monkeypatch.setenv("SQLARBITER_SYSTEM_COSTS", str(text))
    assert system_cost("GPT-4_zero-shot_DINrepo").usd_per_question == pytest.approx(0.8 * 0.3 + 0.06 * 0.06)
    with pytest.raises(CostConfigError, match="no cost entry"):
        system_cost("nope", cfg)
    (tmp_path / "v.toml").write_text("format_version = 2\n")
    with pytest.raises(CostConfigError, match="format_version"):
        load_cost_config(tmp_path / "v.toml")
    with pytest.raises(CostConfigError, match="does not exist"):
        load_cost_config(tmp_path / "missing.toml")


# ---------------------------------------------------------------------------- features


def test_question_features_count_structure_words():
    f = question_features("What is the average age of singers who are not from France, for each country?")
    assert f["kw_average"] > 0 and f["kw_negation"] > 0 and f["kw_group"] > 0 and f["kw_count"] == 0
    g = question_features("How many singers?")
    assert g["kw_count"] > 0 and g["q_words"] < f["q_words"]
    assert all(0.0 <= v <= 2.0 for v in f.values())


def test_featurizer_embeds_with_the_packaged_minilm():
    assert (embedder_dir() / "modules.json").is_file()
    fz = Featurizer(FeatureConfig())
    X = fz.transform(["How many singers?", "How many singers are there?", "List stadium names by capacity."],
                     [{"n_tables": 4, "n_columns": 20}, None, None])
    assert X.shape == (3, fz.dim) and fz.dim == len(FeatureConfig().names()) > EMBED_DIM
    e = X[:, -EMBED_DIM:]
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2]  # paraphrases are closer
    small = Featurizer(FeatureConfig(project_dim=8, bias=True, question=False, schema_feats=False))
    Y = small.transform(["How many singers?"])
    assert Y.shape == (1, 9) and Y[0, -1] == 1.0
    assert np.allclose(Featurizer(FeatureConfig(project_dim=8, bias=True, question=False, schema_feats=False))
                       .transform(["How many singers?"]), Y)  # seeded projection: reproducible


def test_the_router_features_and_the_schema_index_share_one_encoder():
    from core.runtime.embeddings import sentence_model
    from routing.features import Embedder

    assert Embedder.model() is sentence_model()  # one instance per process, not one per user


def test_schema_features_from_spider_databases():
    if not (spider_dir() / "database" / "concert_singer").is_dir():
        pytest.skip("Spider databases not found")
    sf = schema_features_for(["concert_singer", "no_such_db"])
    assert sf["concert_singer"]["n_tables"] == 4 and sf["no_such_db"] == {}


def test_schema_features_from_a_given_registry(tmp_path):
    """With `registry`, features come from its databases (here the demo plus one SQLite file), not Spider's folder."""
    import sqlite3

    from sqlbox.databases import registry_for

    f = tmp_path / "two_tables.sqlite"
    con = sqlite3.connect(f)
    con.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)")
    con.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id))")
    con.commit()
    con.close()
    sf = schema_features_for(["two_tables", "demo", "concert_singer"], registry=registry_for([f]))
    assert sf["two_tables"]["n_tables"] == 2 and sf["demo"]["n_tables"] == 4 and sf["concert_singer"] == {}
