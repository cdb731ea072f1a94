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


def test_demo_database_keeps_its_shipped_examples():
    schema = Schema("demo", [Table("singer", [Column("age")])])
    assert retrieve("How many singers are there?", "demo", schema, 3, spider=False) == list(DEMO_EXAMPLES[:3])
