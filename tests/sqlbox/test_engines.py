"""The execution engines on their own (sqlbox.engines): opening, the row cap, the sandbox's own checks, the
deadline and error classification, for both engines."""

import sqlite3
import time

import duckdb
import pytest

from core.model import ErrorKind
from sqlbox.databases import DatabaseRegistry
from sqlbox.engines import ENGINES, DuckConn, SqliteConn, open_connection, sqlite_extension_path
from sqlbox.guard import Rejected

SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture(params=ENGINES)
def conn(request, registry):
    c = open_connection(request.param, registry.get("demo"), registry.schema("demo"))
    yield c
    c.close()


def test_open_connection_picks_the_engine(conn):
    assert isinstance(conn, DuckConn if conn.engine == "duckdb" else SqliteConn)


def test_run_caps_rows(conn):
    cols, rows = conn.run("SELECT a.singer_id FROM singer a, singer b", 5.0, 10)
    assert len(cols) == 1 and len(rows) == 11  # one over the cap: the caller sees it was hit
    cols, rows = conn.run("SELECT count(*) AS n FROM singer", 5.0, 10)
    assert cols == ["n"] and rows == [(15,)] and not conn.timed_out()


def test_sandbox_refuses_writes_and_files(conn):
    def refused(sql: str) -> BaseException:
        with pytest.raises((Rejected, sqlite3.Error)) as e:
            conn.run(sql, 5.0, 10)
        return e.value

    for sql in ("DELETE FROM singer", "SELECT load_extension('x')"):
        err = refused(sql)  # DuckDB: the sandbox's parse check; sqlite3: the authorizer
        assert isinstance(err, Rejected) or conn.classify(err) == ErrorKind.REJECTED, (sql, err)
    refused("SELECT 1; SELECT 2")  # one statement only (DuckDB: the parse check; sqlite3: the module)
    if conn.engine == "duckdb":
        with pytest.raises(Rejected, match="sqlite_scan"):
            conn.run("SELECT * FROM sqlite_scan('/etc/passwd', 't')", 5.0, 10)
    assert conn.run("SELECT count(*) FROM singer", 5.0, 10)[1] == [(15,)]  # still usable, nothing written


def test_deadline_interrupts_and_classifies(conn):
    t = time.perf_counter()
    with pytest.raises(Exception) as e:
        conn.run(SLOW, 0.3, 10)
    assert time.perf_counter() - t < 5
    assert conn.timed_out() and conn.classify(e.value) == ErrorKind.TIMEOUT


def test_classify_engine_errors(conn):
    with pytest.raises(Exception) as e:
        conn.run("SELECT nope FROM singer", 5.0, 10)
    assert conn.classify(e.value) == ErrorKind.BINDER


def test_open_connection_bad_args(registry, tmp_path):
    with pytest.raises(ValueError, match="duckdb, sqlite"):
        open_connection("postgres", registry.get("demo"))
    with pytest.raises(ValueError, match="schema"):
        open_connection("duckdb", registry.get("demo"))  # a sqlite file needs its schema for the typed views
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    reg = DatabaseRegistry()
    reg.register("w", path)
    with pytest.raises(ValueError, match="cannot open"):
        open_connection("sqlite", reg.get("w"))
    open_connection("duckdb", reg.get("w")).close()  # a DuckDB file needs no schema


def test_sqlite_extension_is_installed():
    assert sqlite_extension_path().name == "sqlite_scanner.duckdb_extension"
