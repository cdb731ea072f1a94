"""Issue 25: work off the request path. The example store ranks by BM25 (+ an embedding re-rank of its best
candidates) until its embeddings are built, the schema index answers with its lexical stage while its embeddings
are built, an incremental rebuild re-indexes the changed table only, `warm` builds both ahead of need, and a plan
says what it used."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from planner.fewshot import ExampleStore, mask_question, retrieve, schema_words
from sqlbox.databases import DatabaseRegistry
from sqlbox.schema import Column, Schema, Table

ROWS = [
    {"db_id": "zoo", "question": "How many animals are older than 5?", "sql": "SELECT count(*) FROM animal WHERE age > 5"},
    {"db_id": "shop", "question": "List the names of products sorted by price.", "sql": "SELECT name FROM product ORDER BY price"},
    {"db_id": "zoo", "question": "What is the average weight of animals?", "sql": "SELECT avg(weight) FROM animal"},
    {"db_id": "zoo", "question": "How many keepers are older than 40?", "sql": "SELECT count(*) FROM keeper WHERE age > 40"},
]


def test_store_ranks_cold_then_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "shots.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    schema = Schema("library", [Table("book", [Column("title"), Column("pages")])])
    q = "How many books have more than 100 pages?"
    info: dict = {}
    cold = retrieve(q, "library", schema, 2, few_shot_file=f, spider=False, rerank=False, info=info)
    assert info["mode"] == "bm25" and len(cold) == 2 and "ms" in info
    assert cold[-1][1].startswith("SELECT count(*)")  # "how many ... older/more than" shape, lexically
    from planner.fewshot import file_store

    st = file_store(str(f))
    assert len(st.texts) == 4 and not st.ready
    info = {}
    retrieve(q, "library", schema, 2, few_shot_file=f, spider=False, info=info)
    assert info["mode"] in ("bm25+rerank", "embeddings")
    st.warm()
    info = {}
    exact = retrieve(q, "library", schema, 2, few_shot_file=f, spider=False, info=info)
    assert info["mode"] == "embeddings" and exact[-1][1].startswith("SELECT count(*)")


def test_distinct_masked_questions_are_encoded_once():
    from planner.fewshot import Example

    exs = [Example("a", "How many singers?", "s1", "How many <mask>?"),
           Example("b", "How many stadiums?", "s2", "How many <mask>?"),
           Example("b", "List names.", "s3", "List names.")]
    st = ExampleStore(exs)
    assert st.texts == ["How many <mask>?", "List names."]
    picked = st.top_k("How many <mask>?", "How many concerts?", 3, rerank=False)
    assert {e.sql for e in picked} == {"s1", "s2", "s3"} and picked[-1].sql in ("s1", "s2")


@pytest.fixture()
def bigdb(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_CACHE_DIR", str(tmp_path / "cache"))
    p = tmp_path / "big.sqlite"
    con = sqlite3.connect(p)
    con.executescript(
        "CREATE TABLE student (stu_id INTEGER PRIMARY KEY, first_name TEXT, city_code TEXT);\n"
        "CREATE TABLE course (course_id INTEGER PRIMARY KEY, title TEXT, credits INT);\n"
        "CREATE TABLE volcano (id INTEGER PRIMARY KEY, label TEXT, height REAL);\n")
    con.executemany("INSERT INTO course VALUES (?,?,?)", [(1, "Linear Algebra", 4), (2, "Organic Chemistry", 3)])
    con.executemany("INSERT INTO volcano VALUES (?,?,?)", [(1, "Etna", 3300.0)])
    con.commit()
    con.close()
    reg = DatabaseRegistry()
    reg.register("big", p)
    from sqlbox import index as mod

    mod._MEM.clear()
    yield reg, p
    mod._MEM.clear()


def test_lexical_stage_links_before_the_embeddings(bigdb):
    from sqlbox.index import build_index
    from sqlbox.linking import link

    reg, _ = bigdb
    got = {}
    build_index(reg.get("big"), reg.schema("big"), on_lexical=lambda lex: got.setdefault("lex", lex))
    lex = got["lex"]
    assert not lex.embedded and "linear algebra" in lex.values
    res = link("Which courses have more than 3 credits?", reg.schema("big"), lex, top_k=1, closure=False)
    assert res.mode == "bm25" and res.tables == ["course"]


def test_incremental_rebuild_reindexes_the_changed_table_only(bigdb):
    from sqlbox.index import schema_index

    reg, p = bigdb
    first = schema_index(reg.get("big"), reg.schema("big"))
    con = sqlite3.connect(p)
    con.execute("ALTER TABLE volcano ADD COLUMN country TEXT")
    con.execute("UPDATE volcano SET country = 'Italy'")
    con.commit()
    con.close()
    reg.register("big", p)
    second = schema_index(reg.get("big"), reg.schema("big"))
    assert second.key != first.key and second.embedded
    # the volcano table's documents changed (its table doc and the new column); every other doc was reused
    assert second.reused["docs_encoded"] <= 1 + 4 + 1
    assert second.reused["docs_reused"] >= len(first.column_docs) - 3
    assert second.reused["tables_values"] == 2 and "italy" in second.values and "linear algebra" in second.values
    import numpy as np

    i = second.columns.index(("course", "title"))
    j = first.columns.index(("course", "title"))
    assert np.allclose(second.column_emb[i], first.column_emb[j])


def test_request_path_never_waits_for_a_build(bigdb, monkeypatch):
    from sqlbox import index as mod

    reg, _ = bigdb
    release = __import__("threading").Event()
    real = mod.encode_docs

    def slow(docs, known=None, batch_size=128):
        release.wait(30)
        return real(docs, known, batch_size)

    monkeypatch.setattr(mod, "encode_docs", slow)
    t = time.perf_counter()
    idx = mod.schema_index(reg.get("big"), reg.schema("big"), wait=False, wait_s=5.0)
    assert time.perf_counter() - t < 5.0 + 1.0
    assert idx is not None and not idx.embedded  # the lexical stage of the build started in the background
    assert mod.build_state("big").startswith("building")
    release.set()
    for _ in range(600):
        if mod.build_state("big") == "ready":
            break
        time.sleep(0.05)
    full = mod.schema_index(reg.get("big"), reg.schema("big"), wait=False)
    assert full is not None and full.embedded


def test_warm_builds_the_index_and_annotate_says_what_a_plan_used(bigdb):
    from core.model import Plan, Question
    from planner.config import load_config
    from planner.warmup import annotate, warm
    from sqlbox import index as mod
    from sqlbox.linking import link

    reg, _ = bigdb
    cfg = load_config(None)
    cfg = cfg.model_copy(update={"defaults": cfg.defaults.model_copy(update={"schema_linking": "on",
                                                                             "few_shot_retrieval": False})})
    pipe = SimpleNamespace(config=cfg, registry=reg)
    st = warm(pipe, ["big"])
    assert st["state"] == "done" and st["items"]["schema index big"]["state"] == "ready"
    assert mod.build_state("big") == "ready"
    q = Question(text="Which courses have more than 3 credits?", db_id="big")
    plan = Plan(question=q)
    got = {}
    mod.build_index(reg.get("big"), reg.schema("big"), on_lexical=lambda lex: got.setdefault("lex", lex))
    annotate(plan, pipe, q, {"mode": "bm25+rerank", "ms": 12.5, "encoded": "0/6513"},
             link(q.text, reg.schema("big"), got["lex"]))
    assert plan.timings_ms["few_shot"] == 12.5 and "link" in plan.timings_ms
    assert any("BM25 + embedding re-rank" in w and "0/6513" in w for w in plan.warnings)
    assert any("lexical stage" in w for w in plan.warnings)
    plan2 = Plan(question=q)
    annotate(plan2, pipe, q, {"mode": "embeddings", "ms": 3.0}, None)
    assert plan2.warnings == []


def test_check_config_does_not_import_the_router_registries():
    code = ("import sys; from planner.config import load_config; load_config(None, registries=False); "
            "print('routing.registry_all' in sys.modules, 'generators.registry_all' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_one_shot_check_forks_one_worker_with_the_same_limits():
    """`sqlarbiter check`: the worker is a fork of the (lean: no torch) command itself; the limits still hold."""
    def check(sql: str, timeout: str = "5") -> tuple[int, dict, float]:
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "cli.main", "check", "--db", "demo", "--json", "--timeout", timeout,
                            sql], capture_output=True, text=True)
        return p.returncode, json.loads(p.stdout), time.perf_counter() - t

    rc, rec, _ = check("SELECT count(*) FROM singer")
    assert rc == 0 and rec["verdict"] == "ok" and rec["rows"] == [[15]], rec
    rc, rec, wall = check("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) "
                         "SELECT count(*) FROM c", "2")  # stopped by the timeout / memory limit
    assert rc == 1 and rec["verdict"] == "failed" and rec["error_kind"] in ("timeout", "too_large"), rec


def test_mask_and_schema_words_unchanged():
    words = schema_words({"singer": ["singer_id", "age", "country"]})
    assert mask_question("How many singers are from France?", words) == "How many <mask> are from France ?"
