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


def test_duckdb_parse_check_keeps_quotes_and_refuses_nul(registry):
    """The parse check reads the statement as a string literal (no bound parameter, so no numpy/pandas import in a
    one-shot worker): quotes in the SQL survive byte for byte, and a NUL, where DuckDB would end the text, is refused."""
    c = open_connection("duckdb", registry.get("demo"), registry.schema("demo"))
    try:
        assert c.run("SELECT 'it''s' AS q, \"name\" FROM singer WHERE name <> '\\' LIMIT 1", 5.0, 10)[1][0][0] == "it's"
        with pytest.raises(Rejected, match="sqlite_scan"):  # the check still sees a forbidden call behind the quotes
            c.run("SELECT 'x'' ' AS a, * FROM sqlite_scan('/etc/passwd', 't')", 5.0, 10)
        with pytest.raises(Rejected, match="NUL"):
            c.run("SELECT 'a\x00' FROM singer", 5.0, 10)
    finally:
        c.close()


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


# --------------------------------------------------------------------------- bounded results


def test_result_byte_cap_stops_at_the_first_row_past_it(conn):
    from sqlbox.fetch import ResultTooLarge, fetch_capped

    # 15 MB values over a cross join (3375 rows, ~50 GB in all): stopped at row 5 (past 64 MB), nothing drained
    big = "zeroblob(15000000)" if conn.engine == "sqlite" else "repeat('x', 15000000)"
    if conn.engine == "sqlite":
        with pytest.raises(ResultTooLarge, match="64 MB") as e:
            conn.run(f"SELECT {big} FROM singer a, singer b, singer c", 30.0, 10_000)
        assert conn.classify(e.value) == ErrorKind.TOO_LARGE and "row 5" in str(e.value)
    # any cursor: rows are taken one at a time, so the cap is checked row by row
    cur = (conn.con.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) "
                            "SELECT x, printf('%.*c', 10000, 'y') FROM c") if conn.engine == "sqlite"
           else conn.con.execute("SELECT x, repeat('y', 10000) FROM range(5000) t(x)"))
    with pytest.raises(ResultTooLarge, match=r"0\.954 MB limit at row 100:"):  # 100 x (10000 + 3 x 8) bytes
        fetch_capped(cur, 10_000, max_bytes=1_000_000)
    assert cur.fetchone() is not None  # the rest was left unread
    cols, rows = fetch_capped(conn.con.execute("SELECT 1 AS a, 'x' AS b"), 10, max_bytes=100)
    assert cols == ["a", "b"] and rows == [(1, "x")]
    with pytest.raises(ResultTooLarge):
        fetch_capped(conn.con.execute("SELECT 1 AS a, 'x' AS b"), 10, max_bytes=10)
    assert conn.run("SELECT count(*) FROM singer", 5.0, 10)[1] == [(15,)]  # still usable


def test_sqlite_limits_bound_values_and_patterns(registry):
    c = SqliteConn(registry.get("demo"))
    try:
        for sql in ("SELECT length(zeroblob(20000000))", "SELECT 'a' LIKE '" + "%a" * 6000 + "'"):
            with pytest.raises(sqlite3.Error) as e:
                c.run(sql, 5.0, 10)
            assert c.classify(e.value) in (ErrorKind.TOO_LARGE, ErrorKind.RUNTIME), (sql, e.value)
        assert c.run("SELECT printf('%.*c', 20000000, 'x')", 5.0, 10)[1] == [(None,)]  # too big: NULL
        assert c.con.getlimit(sqlite3.SQLITE_LIMIT_ATTACHED) == 0
        assert c.run("SELECT length(zeroblob(15000000))", 5.0, 10)[1] == [(15_000_000,)]
    finally:
        c.close()


def test_sqlite_heap_limit_in_a_worker_process(registry, tmp_path):
    """`limit_sqlite_heap` (what a sandbox worker sets at start; process-wide, so in a child here): one row of
    many big values fails as TOO_LARGE instead of growing without bound."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "heap.py"
    script.write_text(
        "import sys\n"
        "from sqlbox.databases import DatabaseRegistry\n"
        "from sqlbox.engines import SqliteConn, limit_sqlite_heap\n"
        "limit_sqlite_heap(200 * 2**20)\n"
        "reg = DatabaseRegistry(); reg.register('demo', sys.argv[1])\n"
        "c = SqliteConn(reg.get('demo'))\n"
        "try:\n"
        "    c.run('SELECT ' + ', '.join(['zeroblob(15000000)'] * 30), 10.0, 10)\n"
        "    print('ran')\n"
        "except Exception as e:\n"
        "    print(c.classify(e).value, type(e).__name__, e)\n"
        "print(c.run('SELECT count(*) FROM singer', 5.0, 10)[1])\n")
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(script), str(registry.get("demo").path)], cwd=root,
                       capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root)})
    assert p.returncode == 0, p.stderr
    first, second = p.stdout.splitlines()
    assert first.startswith("too_large ResultTooLarge out of memory"), first
    assert second == "[(15,)]"
