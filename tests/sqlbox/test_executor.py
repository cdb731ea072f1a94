"""The sandboxed executor on both engines: results, fingerprints, caps, timeouts, error kinds, threads,
and SQLite semantics on DuckDB."""

import decimal
import shutil
import sqlite3
import threading
import time

import duckdb
import pytest

from core.model import ErrorKind, ExecutionResult
from core.settings import spider_dir
from sqlbox.databases import DatabaseRegistry, UnknownDatabase, default_registry
from sqlbox.executor import Executor, canonical_value, duck_type, fingerprints, sqlite_extension_path

SPIDER_DB = spider_dir() / "database"
needs_spider = pytest.mark.skipif(not (SPIDER_DB / "concert_singer").is_dir(),
                                  reason=f"Spider databases not found under {SPIDER_DB}")
ENGINES = ["duckdb", "sqlite"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SQLARBITER_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    mp.delenv("SQLARBITER_DATABASES", raising=False)
    reg = default_registry()
    yield reg
    mp.undo()


@pytest.fixture(scope="module", params=ENGINES)
def ex(request, registry):
    e = Executor(registry, engine=request.param, timeout_s=2.0, max_rows=50, preview_rows=5)
    yield e
    e.close()


def test_basic_result(ex):
    r = ex.execute("demo", "SELECT count(*) FROM singer WHERE age > 30")
    assert isinstance(r, ExecutionResult) and r.ok and r.error_kind is None
    assert r.rows == [[9]] and r.row_count == 1 and not r.truncated
    assert r.engine == ex.engine and r.elapsed_ms > 0 and r.executed_sql
    assert ExecutionResult.model_validate_json(r.model_dump_json()) == r


def test_preview_and_row_cap(ex):
    r = ex.execute("demo", "SELECT name FROM singer ORDER BY singer_id")
    assert r.row_count == 15 and len(r.rows) == 5 and not r.truncated and r.rows[0] == ["Ada Lark"]
    big = ex.execute("demo", "SELECT a.singer_id FROM singer a, singer b")  # 225 rows, cap 50
    assert big.ok and big.row_count == 50 and big.truncated


def test_fingerprints_order_insensitive_and_sensitive(ex):
    asc = ex.execute("demo", "SELECT name FROM singer ORDER BY age")
    desc = ex.execute("demo", "SELECT name FROM singer ORDER BY age DESC")
    assert asc.fingerprint == desc.fingerprint
    assert asc.ordered_fingerprint != desc.ordered_fingerprint
    other = ex.execute("demo", "SELECT name FROM singer WHERE age > 30")
    assert other.fingerprint != asc.fingerprint


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


def test_error_kinds(ex):
    assert ex.execute("demo", "SELECT nope FROM singer").error_kind == ErrorKind.BINDER
    assert ex.execute("demo", "SELECT * FROM nope").error_kind == ErrorKind.BINDER
    assert ex.execute("demo", "SELECT * FROM singer WHERE (").error_kind == ErrorKind.PARSE
    r = ex.execute("demo", "DELETE FROM singer")
    assert not r.ok and r.error_kind == ErrorKind.REJECTED and "DELETE" in r.error
    with pytest.raises(UnknownDatabase):
        ex.execute("nope", "SELECT 1")


def test_timeout_interrupts(ex):
    t = time.perf_counter()
    r = ex.execute("demo", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                           "SELECT count(*) FROM c")
    elapsed = time.perf_counter() - t
    assert not r.ok and r.error_kind == ErrorKind.TIMEOUT
    assert elapsed < ex.timeout_s + 3
    assert ex.execute("demo", "SELECT 1").ok  # the connection works afterwards


def test_execute_many(ex):
    rs = ex.execute_many("demo", ["SELECT 1", "DROP TABLE singer", "SELECT count(*) FROM concert"])
    assert [r.ok for r in rs] == [True, False, True] and rs[2].rows == [[12]]


def test_threads_get_their_own_connections(registry):
    with Executor(registry, engine="duckdb") as e:
        out, errs = [], []

        def work(i):
            try:
                for _ in range(5):
                    r = e.execute("demo", f"SELECT count(*) FROM singer WHERE age > {20 + i}")
                    out.append((i, r.rows[0][0]))
            except Exception as exc:  # pragma: no cover - reported below
                errs.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errs and len(out) == 20
        expected = {i: e.execute("demo", f"SELECT count(*) FROM singer WHERE age > {20 + i}").rows[0][0]
                    for i in range(4)}
        assert all(v == expected[i] for i, v in out)


def test_closed_executor_and_bad_args(registry):
    e = Executor(registry)
    e.close()
    assert e.execute("demo", "SELECT 1").ok  # reopens lazily after close
    e.close()
    with pytest.raises(ValueError):
        Executor(registry, engine="postgres")
    with pytest.raises(ValueError):
        Executor(registry, timeout_s=0)


def test_duckdb_database_file(tmp_path):
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE w (x INTEGER); INSERT INTO w VALUES (1), (2), (3)")
    con.close()
    reg = DatabaseRegistry()
    reg.register("w", path)
    with Executor(reg) as e:
        assert e.execute("w", "SELECT sum(x) FROM w").rows == [[6]]
        assert e.execute("w", "SELECT sum(x) FROM w", dialect="duckdb").rows == [[6]]
        assert not e.execute("w", "DROP TABLE w").ok
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM w").fetchone()[0] == 3
    con.close()


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


def test_canonical_values():
    assert canonical_value(3.0) == 3 and canonical_value(True) == 1
    assert canonical_value(decimal.Decimal("2.00")) == 2
    assert canonical_value(0.1 + 0.2) == canonical_value(0.3)
    assert canonical_value(b"\x01") == {"b": "01"}
    assert canonical_value(float("nan")) == {"f": "nan"}
    assert fingerprints([(1, "a"), (2, "b")])[0] == fingerprints([(2.0, "b"), (1, "a")])[0]
    assert fingerprints([(1,)])[0] != fingerprints([("1",)])[0]
    assert fingerprints([(1,), (1,)])[0] != fingerprints([(1,)])[0]  # a multiset, not a set


def test_duck_types_and_extension():
    assert duck_type(("integer",), "TEXT") == "BIGINT"
    assert duck_type(("integer", "real"), "INT") == "DOUBLE"
    assert duck_type(("integer", "text"), "INT") == "VARCHAR"
    assert duck_type((), "varchar(20)") == "VARCHAR" and duck_type((), "INT") == "BIGINT"
    assert sqlite_extension_path().name == "sqlite_scanner.duckdb_extension"


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
    reg = default_registry()
    with Executor(reg, engine="duckdb") as d, Executor(reg, engine="sqlite") as s:
        a, b = d.execute("demo", sql), s.execute("demo", sql)
    assert a.ok and b.ok
    assert a.columns == b.columns


def test_sqlite_result_names_leaves_what_it_cannot_map():
    from sqlbox.executor import sqlite_result_names

    assert sqlite_result_names("SELECT * FROM t", ["a", "b"]) == ["a", "b"]
    assert sqlite_result_names("SELECT count(*), x FROM t", ["only_one"]) == ["only_one"]
    assert sqlite_result_names("SELECT 'unterminated", ["c"]) == ["c"]
    assert sqlite_result_names("VALUES (1)", ["col0"]) == ["col0"]
