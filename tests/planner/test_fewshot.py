"""Retrieved few-shot examples: masked-question similarity over an example store, cross-database."""

import json

from planner.fewshot import MASK, mask_question, retrieve, schema_words
from sqlbox.demo import DEMO_EXAMPLES
from sqlbox.schema import Column, Schema, Table


def test_mask_question_hides_schema_words_and_values():
    words = schema_words({"singer": ["singer_id", "age", "country"]})
    m = mask_question('How many singers from "France" are older than 30?', words)
    assert "France" not in m and "30" not in m and "singers" not in m and MASK in m
    assert m.startswith("How many")


def test_retrieve_from_user_file_cross_database(tmp_path):
    f = tmp_path / "shots.jsonl"
    rows = [
        {"db_id": "zoo", "question": "How many animals are older than 5?", "sql": "SELECT count(*) FROM animal WHERE age > 5"},
        {"db_id": "shop", "question": "List the names of products sorted by price.", "sql": "SELECT name FROM product ORDER BY price"},
        {"db_id": "zoo", "question": "What is the average weight of animals?", "sql": "SELECT avg(weight) FROM animal"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    schema = Schema("library", [Table("book", [Column("title"), Column("pages")])])
    got = retrieve("How many books have more than 100 pages?", "library", schema, 2, few_shot_file=f, spider=False)
    assert len(got) == 2
    assert got[-1][1] == rows[0]["sql"]  # the most similar (counting with a threshold) comes last
    assert retrieve("anything", "library", schema, 0, few_shot_file=f, spider=False) == []


def test_retrieve_against_a_given_store_cold_or_warm(tmp_path):
    from planner.fewshot import ExampleStore, file_store

    f = tmp_path / "shots.jsonl"
    rows = [{"db_id": "zoo", "question": "How many animals are older than 5?", "sql": "SELECT count(*) FROM animal"},
            {"db_id": "shop", "question": "List the names of products.", "sql": "SELECT name FROM product"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    warm = file_store(str(f))
    warm.warm()
    cold = ExampleStore(warm.examples)
    cold.from_cache = False  # stays cold although the embedder's cache holds every question
    schema = Schema("library", [Table("book", [Column("title")])])
    got = {}
    for name, st in (("warm", warm), ("cold", cold)):
        info: dict = {}
        got[name] = retrieve("How many books are there?", "library", schema, 1, store=st, info=info, spider=False)
        assert info["mode"] == {"warm": "embeddings", "cold": "bm25+rerank"}[name]
    assert got["warm"] == got["cold"] == [(rows[0]["question"], rows[0]["sql"])]


def test_demo_database_keeps_its_shipped_examples():
    schema = Schema("demo", [Table("singer", [Column("age")])])
    assert retrieve("How many singers are there?", "demo", schema, 3, spider=False) == list(DEMO_EXAMPLES[:3])
