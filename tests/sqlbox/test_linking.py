"""sqlbox.index + sqlbox.linking on a real SQLite database with the shipped MiniLM encoder: the index
is cached by schema hash and rebuilt when the schema changes; the linker finds the needed tables,
closes them over foreign keys, matches literals to column values, and fits the prompt to the budget."""

from __future__ import annotations

import sqlite3

import pytest

from sqlbox.databases import DatabaseRegistry
from sqlbox.index import schema_index, words
from sqlbox.linking import link, value_hits

FILLER = ["aircraft", "weather_station", "library_book", "hospital_ward", "ferry_route", "museum_exhibit",
          "tax_form", "volcano", "satellite", "bakery_recipe", "chess_tournament", "river_dam"]


@pytest.fixture()
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_CACHE_DIR", str(tmp_path / "cache"))
    p = tmp_path / "big.sqlite"
    con = sqlite3.connect(p)
    con.executescript(
        "CREATE TABLE student (stu_id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, city_code TEXT);\n"
        "CREATE TABLE course (course_id INTEGER PRIMARY KEY, title TEXT, credits INT);\n"
        "CREATE TABLE enrollment (stu_id INT REFERENCES student(stu_id), course_id INT REFERENCES course(course_id), grade TEXT);\n"
        + "".join(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, label TEXT, amount REAL);\n" for t in FILLER))
    con.executemany("INSERT INTO student VALUES (?,?,?,?)", [(1, "Linda", "Smith", "BAL"), (2, "Tracy", "Kim", "HKG")])
    con.executemany("INSERT INTO course VALUES (?,?,?)", [(1, "Linear Algebra", 4), (2, "Organic Chemistry", 3)])
    con.executemany("INSERT INTO enrollment VALUES (?,?,?)", [(1, 1, "A"), (2, 2, "B")])
    con.commit()
    con.close()
    reg = DatabaseRegistry()
    reg.register("big", p)
    return reg, p


def test_index_documents_values_and_cache(db):
    reg, p = db
    idx = schema_index(reg.get("big"), reg.schema("big"))
    assert len(idx.tables) == 3 + len(FILLER) and idx.column_emb.shape == (len(idx.columns), 384)
    assert "linear algebra" in idx.values and idx.columns[idx.values["linear algebra"][0]] == ("course", "title")
    assert any("stu id" in d and "primary key" in d for d in idx.column_docs)
    assert schema_index(reg.get("big"), reg.schema("big")) is idx  # memory cache
    from sqlbox import index as mod

    mod._MEM.clear()
    again = schema_index(reg.get("big"), reg.schema("big"))
    assert again.from_cache and again.key == idx.key  # disk cache
    fresh = schema_index(reg.get("big"), reg.schema("big"), rebuild=True)
    assert not fresh.from_cache and fresh.key == idx.key and fresh.build_s > 0
    con = sqlite3.connect(p)
    con.execute("ALTER TABLE course ADD COLUMN room TEXT")
    con.commit()
    con.close()
    reg.register("big", p)
    changed = schema_index(reg.get("big"), reg.schema("big"))
    assert changed.key != idx.key and not changed.from_cache and ("course", "room") in changed.columns


def test_link_ranks_closes_over_fks_and_matches_values(db):
    reg, _ = db
    schema = reg.schema("big")
    idx = schema_index(reg.get("big"), schema)
    res = link("What are the first names of students enrolled in Linear Algebra?", schema, idx, top_k=2, budget=None)
    assert {"student", "course", "enrollment"} <= set(res.tables)
    assert set(res.tables) - {"student", "course", "enrollment"} == set()  # no filler table with top_k=2
    assert ("linear algebra", "course", "title") in res.value_hits
    assert res.prompt_tokens < res.full_tokens and "CREATE TABLE volcano" not in res.prompt
    assert ("student", "first_name") in res.column_pairs()
    # a bridge table is added even when only its two ends rank in the top k
    bridge = link("students and courses", schema, idx, top_k=2, budget=None)
    if {"student", "course"} <= set(bridge.tables[:2]):
        assert "enrollment" in bridge.closure


def test_fuzzy_value_match_and_budget(db):
    reg, _ = db
    schema = reg.schema("big")
    idx = schema_index(reg.get("big"), schema)
    hits = value_hits('Who takes "Organic Chemestry"?', idx)  # misspelt: rapidfuzz finds it
    assert "organic chemistry" in hits
    res = link("Which students are enrolled?", schema, idx, top_k=15, budget=120)
    assert res.prompt_tokens <= 120 and res.tables and res.prompt.startswith("CREATE TABLE")
    with pytest.raises(ValueError):
        link("x", schema, idx, top_k=0)


def test_words():
    assert words("singer_in_concert") == "singer in concert" and words("StuID") == "stu id"
