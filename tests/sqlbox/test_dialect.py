"""SQLite semantics on DuckDB (sqlbox.dialect): the DuckDB engine returns what SQLite would (same fingerprints,
same column names), and the rewrite and naming helpers on their own."""

import shutil
import sqlite3

import pytest
import sqlglot

from core.settings import spider_dir
from sqlbox.databases import DatabaseRegistry, registry_for
from sqlbox.dialect import duck_type, sqlite_affinity, sqlite_result_names, sqlite_to_duckdb
from sqlbox.executor import Executor
from sqlbox.schema import Column, Schema, Table

SPIDER_DB = spider_dir() / "database"
needs_spider = pytest.mark.skipif(not (SPIDER_DB / "concert_singer").is_dir(),
                                  reason=f"Spider databases not found under {SPIDER_DB}")


def test_same_fingerprints_across_engines(registry):
    queries = [
        "SELECT name, age FROM singer WHERE age > 30",
        "SELECT avg(age), sum(age), min(ticket_price) FROM singer, concert",
        "SELECT country, count(*) FROM singer GROUP BY country",
        "SELECT 7 / 2, 7.0 / 2, 1 = 1, NULL",
        "SELECT name FROM singer WHERE name LIKE 'ada%'",
        "SELECT name, max(age) FROM singer",
        "SELECT genre FROM singer ORDER BY genre LIMIT 3",
        "SELECT name FROM stadium WHERE location = \"York\"",
        "SELECT avg(ticket_price) FROM concert WHERE ticket_price IS NOT NULL",
    ]
    with Executor(registry, engine="duckdb") as d, Executor(registry, engine="sqlite") as s:
        for q in queries:
            a, b = d.execute("demo", q), s.execute("demo", q)
            assert a.ok and b.ok, (q, a.error, b.error)
            assert a.fingerprint == b.fingerprint, (q, a.rows, b.rows)


def test_mixed_type_sqlite_column(tmp_path):
    """SQLite lets an INTEGER column hold text; the DuckDB engine must read it, not fail."""
    p = tmp_path / "m.sqlite"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE m (id INTEGER, flag INTEGER, price NUMERIC, note TEXT)")
    con.executemany("INSERT INTO m VALUES (?, ?, ?, ?)",
                    [(1, 1, 2.5, "10"), (2, "F", 3, "9"), (3, None, "n/a", "100")])
    con.commit()
    con.close()
    reg = DatabaseRegistry()
    reg.register("m", p)
    with Executor(reg, engine="duckdb") as d, Executor(reg, engine="sqlite") as s:
        a, b = d.execute("m", "SELECT * FROM m"), s.execute("m", "SELECT * FROM m")
        assert a.ok and b.ok
        # known gap: a column mixing text and numbers is VARCHAR in DuckDB, so its numbers come back as text
        assert [[None if v is None else str(v) for v in r] for r in a.rows] == \
            [[None if v is None else str(v) for v in r] for r in b.rows]
        for q in ["SELECT count(*) FROM m WHERE note > 50", "SELECT sum(note) FROM m",
                  "SELECT id FROM m WHERE flag = 1", "SELECT id FROM m WHERE price > 2"]:
            a, b = d.execute("m", q), s.execute("m", q)
            assert a.ok and b.ok, (q, a.error, b.error)
            assert a.fingerprint == b.fingerprint, (q, a.rows, b.rows)


@needs_spider
@pytest.mark.parametrize("idx_sql", [
    ("concert_singer", "SELECT YEAR FROM concert GROUP BY YEAR ORDER BY count(*) DESC LIMIT 1"),
    ("car_1", "SELECT avg(mpg) FROM CARS_DATA WHERE Cylinders = 4"),
    ("car_1", "SELECT count(*) FROM CARS_DATA WHERE horsepower > 150"),
    ("orchestra", "SELECT avg(Attendance) FROM SHOW"),
    ("concert_singer", "SELECT name, country, age FROM singer ORDER BY age DESC"),
    ("concert_singer", 'SELECT count(*) FROM singer WHERE country = "France"'),
    ("pets_1", "SELECT max(weight), petType FROM pets GROUP BY petType"),
    ("world_1", "SELECT Name FROM country WHERE Continent = 'Europe' AND Population = 80000"),
    ("student_transcripts_tracking", "SELECT avg(transcript_date) FROM Transcripts"),
])
def test_spider_sqlite_semantics_on_duckdb(idx_sql, tmp_path):
    db, sql = idx_sql
    reg = DatabaseRegistry()
    reg.register(db, shutil.copy(SPIDER_DB / db / f"{db}.sqlite", tmp_path / f"{db}.sqlite"))
    with Executor(reg, engine="duckdb") as d, Executor(reg, engine="sqlite") as s:
        a, b = d.execute(db, sql), s.execute(db, sql)
        assert a.ok and b.ok, (a.error, b.error)
        assert a.fingerprint == b.fingerprint, (a.executed_sql, a.rows, b.rows)


def test_duck_types():
    assert duck_type(("integer",), "TEXT") == "BIGINT"
    assert duck_type(("integer", "real"), "INT") == "DOUBLE"
    assert duck_type(("integer", "text"), "INT") == "VARCHAR"
    assert duck_type((), "varchar(20)") == "VARCHAR" and duck_type((), "INT") == "BIGINT"


NAMING = [
    "SELECT count(*) FROM singer",
    "SELECT count(*), max(age) AS m, name, T1.age, age + 1 FROM singer AS T1 GROUP BY name",  # bare columns rewritten
    "SELECT DISTINCT COUNT( * ) c, 'a', 1, T1.name FROM singer T1",
    "SELECT avg(age), min(age) FROM singer UNION SELECT 1, 2",
    "WITH x AS (SELECT 1 AS q) SELECT q + 1, (SELECT count(*) FROM singer) FROM x",
    "SELECT T1.* FROM singer AS T1 LIMIT 1",
    "SELECT name, count(*) FROM singer GROUP BY name ORDER BY count(*) DESC LIMIT 3",
    'SELECT "name", singer.AGE FROM singer',
    "SELECT cast(age AS text) FROM singer",
]


@pytest.mark.parametrize("sql", NAMING)
def test_duckdb_reports_the_column_names_sqlite_would(sql):
    """Result columns are named as SQLite names them (`count(*)`, not DuckDB's `count_star()`), whichever engine ran."""
    reg = registry_for()
    with Executor(reg, engine="duckdb") as d, Executor(reg, engine="sqlite") as s:
        a, b = d.execute("demo", sql), s.execute("demo", sql)
    assert a.ok and b.ok
    assert a.columns == b.columns


def test_sqlite_result_names_leaves_what_it_cannot_map():
    assert sqlite_result_names("SELECT * FROM t", ["a", "b"]) == ["a", "b"]
    assert sqlite_result_names("SELECT count(*), x FROM t", ["only_one"]) == ["only_one"]
    assert sqlite_result_names("SELECT 'unterminated", ["c"]) == ["c"]
    assert sqlite_result_names("VALUES (1)", ["col0"]) == ["col0"]


SCHEMA = Schema("t", [Table("singer", [Column("name", "TEXT", storage=("text",)),
                                       Column("age", "INT", storage=("integer",)),
                                       Column("note", "INTEGER", storage=("integer", "text"))])])


def _rewrite(sql: str) -> str:
    return sqlite_to_duckdb(sqlglot.parse_one(sql, read="sqlite"), SCHEMA)


def test_sqlite_to_duckdb_rewrites():
    assert "LOWER(\"name\") LIKE LOWER('a%')" in _rewrite("SELECT name FROM singer WHERE name LIKE 'a%'")
    assert "'York'" in _rewrite('SELECT name FROM singer WHERE name = "York"')  # a quoted non-column is a string
    assert '"name"' in _rewrite('SELECT "name" FROM singer')  # a quoted column stays a column
    assert 'ARG_MAX_NULL("name", "age")' in _rewrite("SELECT name, max(age) FROM singer")
    assert 'ANY_VALUE("name")' in _rewrite("SELECT name, count(*) FROM singer")
    distinct = _rewrite("SELECT DISTINCT name FROM singer ORDER BY age")
    assert "DISTINCT" not in distinct and 'GROUP BY "name"' in distinct and 'MIN("age")' in distinct
    assert "TRY_CAST" in _rewrite("SELECT count(*) FROM singer WHERE note > 50")  # mixed column: SQLite affinity
    assert "TRY_CAST" not in _rewrite("SELECT count(*) FROM singer WHERE age > 50")
    tree = sqlglot.parse_one("SELECT name FROM singer WHERE name LIKE 'a%'", read="sqlite")
    sqlite_to_duckdb(tree, SCHEMA)
    assert "LIKE" in tree.sql() and "LOWER" not in tree.sql()  # the caller's tree is left alone
    assert "LOWER(" in sqlite_to_duckdb(tree, None)  # no schema: the schema-free rewrites only


def test_sqlite_affinity():
    assert [sqlite_affinity(t) for t in ("INT", "varchar(20)", "BLOB", "", "REAL", "NUMERIC", "DATE")] == \
        ["integer", "text", "blob", "blob", "real", "numeric", "numeric"]
