"""Few-shot examples reach the generator prompt."""

import json

import pytest

from generators.base import GenerationRequest
from generators.prompts import build_messages
from planner.examples import few_shot_examples
from sqlbox.demo import DEMO_EXAMPLES, DEMO_QUESTION


def test_demo_ships_examples_and_k_bounds_them():
    assert few_shot_examples("demo", 2) == list(DEMO_EXAMPLES[:2])
    assert few_shot_examples("demo", 0) == []
    assert few_shot_examples("other_db", 3) == []
    assert all(q != DEMO_QUESTION for q, _ in DEMO_EXAMPLES)


def test_examples_file_adds_per_database_examples(tmp_path):
    f = tmp_path / "shots.jsonl"
    f.write_text(json.dumps({"db_id": "x", "question": "how many?", "sql": "SELECT count(*) FROM t"}) + "\n\n")
    assert few_shot_examples("x", 3, few_shot_file=f) == [("how many?", "SELECT count(*) FROM t")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"db_id": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        few_shot_examples("x", 3, few_shot_file=bad)


def test_examples_become_chat_turns_before_the_question():
    shots = few_shot_examples("demo", 3)
    msgs = build_messages(GenerationRequest(question=DEMO_QUESTION, schema="CREATE TABLE singer (age INT)",
                                            few_shot=shots))
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert shots[0][1] in msgs[2]["content"] and DEMO_QUESTION in msgs[-1]["content"]


def test_the_few_shot_file_has_one_parser(tmp_path):
    """planner.examples owns the file: the same-database lookup and the retrieval store (planner.fewshot) read
    it through `load_file`, parsed once per path and modification time."""
    import os

    from planner import examples, fewshot

    f = tmp_path / "shots.jsonl"
    f.write_text(json.dumps({"db_id": "x", "question": "how many?", "sql": "SELECT count(*) FROM t"}) + "\n")
    examples._parse.cache_clear()
    assert few_shot_examples("x", 3, few_shot_file=f) == [("how many?", "SELECT count(*) FROM t")]
    store = fewshot.file_store(str(f))
    assert [(e.db_id, e.question, e.sql) for e in store.examples] == list(examples.load_file(f))
    assert examples._parse.cache_info().misses == 1
    f.write_text(json.dumps({"db_id": "x", "question": "list all", "sql": "SELECT * FROM t"}) + "\n")
    os.utime(f, (1, 1))  # a new modification time: read again
    assert few_shot_examples("x", 3, few_shot_file=f) == [("list all", "SELECT * FROM t")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"db_id": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        fewshot.file_store(str(bad))
