"""Schema introspection, prompt serialization within a token budget, router features."""

import json

import duckdb
import pytest

from core.settings import spider_dir
from sqlbox.databases import DatabaseInfo, DatabaseRegistry, introspect, registry_for
from sqlbox.schema import approx_tokens, schema_features, schema_to_prompt

SPIDER_DB = spider_dir() / "database"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SQLARBITER_DATABASES", raising=False)


@pytest.fixture
def demo_schema():
    return registry_for().schema("demo")


def test_introspect_demo(demo_schema):
    s = demo_schema
    assert s.table_names() == ["stadium", "singer", "concert", "singer_in_concert"]
    singer = s.table("singer")
    assert singer.primary_key == ["singer_id"] and singer.row_count == 15
    assert singer.column("age").type == "INTEGER" and singer.column("age").storage == ("integer",)
    assert singer.column("genre").storage == ("text",)
    assert len(singer.column("name").samples) == 3 and len(singer.sample_rows) == 3
    sic = s.table("singer_in_concert")
    assert sic.primary_key == ["concert_id", "singer_id"]
    refs = {(fk.columns, fk.ref_table, fk.ref_columns) for fk in sic.foreign_keys}
    assert refs == {(("concert_id",), "concert", ("concert_id",)), (("singer_id",), "singer", ("singer_id",))}
    assert s.table("concert").column("ticket_price").storage == ("real",)


def test_to_dict_is_json(demo_schema):
    d = demo_schema.to_dict()
    again = json.loads(json.dumps(d))
    assert again["db_id"] == "demo" and again["tables"][1]["name"] == "singer"
    assert again["tables"][3]["foreign_keys"][0]["ref_columns"]


def test_prompt_has_create_tables_keys_and_samples(demo_schema):
    text = schema_to_prompt(demo_schema)
    assert text.count("CREATE TABLE") == 4
    assert "PRIMARY KEY (concert_id, singer_id)" in text
    assert "FOREIGN KEY (stadium_id) REFERENCES stadium(stadium_id)" in text
    assert "example rows" not in text
    with_rows = schema_to_prompt(demo_schema, sample_rows=2)
    assert with_rows.count("/* 2 example rows") == 4 and "Ada Lark" in with_rows


def test_prompt_budget_drops_rows_then_columns_deterministically(demo_schema):
    full = schema_to_prompt(demo_schema, sample_rows=3)
    no_rows = schema_to_prompt(demo_schema)
    budget = approx_tokens(no_rows)
    assert schema_to_prompt(demo_schema, sample_rows=3, max_tokens=budget) == no_rows
    assert approx_tokens(full) > budget
    small = schema_to_prompt(demo_schema, sample_rows=3, max_tokens=budget // 2)
    assert approx_tokens(small) <= budget // 2
    assert small == schema_to_prompt(demo_schema, sample_rows=3, max_tokens=budget // 2)
    # key columns survive trimming
    assert "singer_id" in small and "PRIMARY KEY (singer_id)" in small
    tiny = schema_to_prompt(demo_schema, max_tokens=1)
    assert tiny.count("CREATE TABLE") == 1 and "stadium_id" in tiny


def test_prompt_accepts_token_counters(demo_schema):
    words = lambda s: len(s.split())  # noqa: E731
    t1 = schema_to_prompt(demo_schema, max_tokens=60, count_tokens=words)
    assert len(t1.split()) <= 60
    ids = lambda s: list(range(len(s.split())))  # noqa: E731  a tokenizer.encode-like callable
    assert schema_to_prompt(demo_schema, max_tokens=60, count_tokens=ids) == t1
    enc = lambda s: {"input_ids": list(range(len(s.split())))}  # noqa: E731  a tokenizer __call__-like
    assert schema_to_prompt(demo_schema, max_tokens=60, count_tokens=enc) == t1


def test_schema_features(demo_schema):
    f = schema_features(demo_schema)
    assert f["n_tables"] == 4 and f["n_columns"] == 19 and f["n_foreign_keys"] == 3
    assert f["n_composite_keys"] == 1 and f["max_columns_per_table"] == 6
    assert f["total_rows"] == 10 + 15 + 12 + 31 and f["prompt_tokens"] > 0


def test_introspect_duckdb_file(tmp_path):
    path = tmp_path / "x.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR NOT NULL)")
    con.execute("CREATE TABLE b (id INTEGER, a_id INTEGER REFERENCES a(id))")
    con.execute("INSERT INTO a VALUES (1, 'x'), (2, 'y')")
    con.close()
    s = introspect(DatabaseInfo("x", path, "duckdb"))
    assert s.kind == "duckdb" and s.table_names() == ["a", "b"]
    assert s.table("a").primary_key == ["id"] and s.table("a").row_count == 2
    assert s.table("b").foreign_keys[0].ref_table == "a"
    assert s.table("a").column("v").samples == ("x", "y")


@pytest.mark.skipif(not (SPIDER_DB / "concert_singer").is_dir(), reason="Spider databases not available")
def test_spider_mixed_storage_is_recorded():
    reg = DatabaseRegistry()
    reg.register_dir(SPIDER_DB)
    singer = reg.schema("concert_singer").table("singer")
    assert singer.column("Is_male").type.lower() == "bool" or singer.column("Is_male").storage == ("text",)
    weather = reg.schema("bike_1").table("weather")
    assert set(weather.column("max_temperature_f").storage) == {"integer", "text"}
    assert schema_features(reg.schema("bike_1"))["n_mixed_type_columns"] > 0
