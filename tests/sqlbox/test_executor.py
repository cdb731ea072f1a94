"""The sandboxed executor (the facade over the engines): results, preview, row cap, fingerprints, error kinds,
timeouts, threads, connection reuse and closing, on both engines."""

import threading
import time

import duckdb
import pytest

from core.model import ErrorKind, ExecutionResult
from sqlbox.databases import DatabaseRegistry, UnknownDatabase
from sqlbox.executor import Executor

ENGINES = ["duckdb", "sqlite"]


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
