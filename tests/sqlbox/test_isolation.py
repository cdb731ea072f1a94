"""Issue 15's hostile inputs through the isolated executor (`sqlbox.isolation`), on both engines, with the
guard on and off: parser hangs, DuckDB functions that ignore the memory limit or the interrupt, the LIKE
rewrite blow-up and catalog disclosure. Each must end within its timeout + 1 s (plus a margin for this busy
machine), leave the caller's memory alone, and the executor must keep working afterwards (killed workers
are replaced). The limits are small so the pass stays bounded."""

import resource
import time

import pytest

from core.model import ErrorKind
from sqlbox.databases import DatabaseRegistry
from sqlbox.demo import build_demo
from sqlbox.executor import Executor
from sqlbox.guard import Rejected, UnknownRelation, guard

TIMEOUT = 1.0
SLACK = 1.0 + 1.5  # the bound (1 s past the timeout) plus scheduling on a loaded 2-core machine

# parsing never ends in sqlglot (memory grows ~100 MB/s)
PARSER_HANGS = ["COPY }", "COPY ]", "COPY t FROM ]", "COPY (SELEC*/T 1 AS a) TO 'x.json' (FORMAT JSON;)"]
# DuckDB functions that ignore memory_limit or the interrupt (sqlite: no such function, or bounded)
RESOURCE = [
    "SELECT length(repeat('x', 2000000000))",
    "SELECT length(list(range(1000000000)))",
    "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))",
    "SELECT damerau_levenshtein(repeat('a', 40000), repeat('b', 40000))",
    "SELECT length(list_sort(range(100000000)))",
    "SELECT repeat('a', 1000000) LIKE '" + "%a" * 500 + "'",
    "SELECT count(*) FROM singer WHERE name || repeat('a', 1000000) LIKE '" + "%a" * 500 + "'",
]
# catalog views and tables outside the database's own
DISCLOSURE = [
    "SELECT * FROM pragma_database_list", "SELECT * FROM duckdb_databases", "SELECT * FROM duckdb_views",
    "SELECT * FROM duckdb_tables", "SELECT * FROM pg_catalog.pg_settings", "SELECT * FROM pg_settings",
    "SELECT * FROM information_schema.tables", "SELECT * FROM information_schema.columns", "SELECT * FROM pg_proc",
    "SELECT * FROM src.singer", "SELECT * FROM sqlite_master",
    "SELECT * FROM sqlite_schema", "SELECT * FROM temp.sqlite_master", "SELECT name FROM pragma_table_info('singer')",
    "SELECT * FROM singer WHERE singer_id IN (SELECT database_oid FROM duckdb_databases)",
    "WITH x AS (SELECT * FROM duckdb_settings) SELECT * FROM x",
    "SELECT * FROM singer, system.main.duckdb_tables",
]


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iso")
    r = DatabaseRegistry()
    r.register("demo", build_demo(tmp / "demo.sqlite", force=True))
    return r


@pytest.fixture(scope="module", params=["duckdb", "sqlite"])
def engine(request):
    return request.param


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("use_guard", [True, False], ids=["guard", "sandbox-only"])
def test_hostile_inputs_are_bounded(reg, engine, use_guard):
    rss0 = _rss_mb()
    failures = []
    with Executor(reg, engine=engine, timeout_s=TIMEOUT, memory_limit="256MB", use_guard=use_guard,
                  workers=2, address_space_mb=2560) as ex:
        assert ex.execute("demo", "SELECT count(*) FROM singer").rows == [[15]]  # warm
        for sql in PARSER_HANGS + RESOURCE:
            t = time.perf_counter()
            r = ex.execute("demo", sql)
            dt = time.perf_counter() - t
            if dt > TIMEOUT + SLACK:
                failures.append(f"{dt:.1f}s: {sql[:60]}")
            if r.ok and "LIKE" not in sql:
                failures.append(f"ran: {sql[:60]} -> {r.rows}")
            # the executor is still usable (a killed worker was replaced)
            after = ex.execute("demo", "SELECT count(*) FROM singer")
            assert after.rows == [[15]], (sql, after.error_kind, after.error)
        for sql in DISCLOSURE:
            r = ex.execute("demo", sql)
            if r.ok or r.error_kind not in (ErrorKind.REJECTED, ErrorKind.BINDER, ErrorKind.PARSE):
                failures.append(f"disclosed: {sql} -> {r.error_kind} {r.rows[:2]}")
        # the database's own tables, CTEs and the allowlisted table functions still work
        assert ex.execute("demo", "WITH x AS (SELECT name FROM singer) SELECT count(*) FROM x").rows == [[15]]
        assert ex.execute("demo", "SELECT count(*) FROM singer AS s JOIN concert AS c ON 1 = 1").ok
        assert ex.execute("demo", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) "
                                  "SELECT sum(x) FROM c").rows == [[15]]
    assert not failures, "\n".join(failures)
    # the caller never parsed or ran them: its peak RSS did not grow by the hostile allocations
    assert _rss_mb() - rss0 < 200


def test_prepare_and_analyze_are_bounded(reg):
    with Executor(reg, timeout_s=TIMEOUT, workers=1, address_space_mb=2560) as ex:
        t = time.perf_counter()
        a = ex.analyze("COPY }")
        assert a["parse_failed"] and time.perf_counter() - t < TIMEOUT + SLACK
        assert ex.analyze("SELECT  1")["normalized"] == "SELECT 1"
        assert ex.analyze("DROP TABLE singer")["rejected"]
        with pytest.raises(UnknownRelation):
            ex.prepare("demo", "SELECT * FROM duckdb_tables")
        assert "singer" in ex.prepare("demo", "SELECT * FROM singer")
        assert ex.pool.kills >= 1


def test_guard_relation_allowlist():
    tables = ["singer", "concert"]
    guard("WITH x AS (SELECT 1) SELECT * FROM x, singer AS s JOIN Concert c ON 1 = 1", relations=tables)
    guard("SELECT * FROM range(3)", relations=tables)
    for sql in ("SELECT * FROM information_schema.tables", "SELECT * FROM main.singer", "SELECT * FROM src.singer",
                "SELECT * FROM pg_catalog.pg_settings"):
        with pytest.raises(Rejected, match="not allowed"):
            guard(sql, relations=tables)
    for sql in ("SELECT * FROM duckdb_databases", "SELECT * FROM pragma_database_list", "SELECT * FROM sqlite_master"):
        with pytest.raises(UnknownRelation, match="no such table"):
            guard(sql, relations=tables)


# --------------------------------------------------------------------------- a killed worker leaves no trace

RUNAWAY = "COPY }"  # sqlglot's parse never ends: the worker is killed at the deadline and replaced


def test_cli_with_a_killed_worker_exits_without_a_traceback():
    """The real CLI, several times: a killed worker is replaced in the background while the CLI prints its
    verdict and exits; nothing of the fork server, the replacement or its thread reaches stdout or stderr."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "SQLBOX_WORKER_DEBUG"}
    for _ in range(3):
        p = subprocess.run([sys.executable, "-m", "cli", "check", "--db", "demo", RUNAWAY, "--timeout", "1"],
                           cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert p.stdout.startswith("failed (timeout):") and "sandbox worker killed" in p.stdout, p.stdout
        for stream in (p.stdout, p.stderr):
            assert "Traceback" not in stream and "Error" not in stream.replace("failed", ""), stream
        assert not p.stderr.strip(), p.stderr


def test_exit_right_after_a_kill_is_quiet(tmp_path):
    """A caller (the service at shutdown, a script) that exits while the replacement of a killed worker is
    starting, with and without closing its executor first: no traceback at exit."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "exit_after_kill.py"
    script.write_text(
        "import sys\n"
        "from sqlbox.databases import registry_for\n"
        "from sqlbox.executor import Executor\n"
        "if __name__ == '__main__':\n"
        "    ex = Executor(registry_for([]), timeout_s=1.0, workers=1)\n"
        f"    r = ex.execute('demo', {RUNAWAY!r})\n"
        "    print(r.error_kind, ex.pool.kills)\n"
        "    if sys.argv[1] == 'close':\n"
        "        ex.close()\n")
    env = {k: v for k, v in os.environ.items() if k != "SQLBOX_WORKER_DEBUG"}
    env["PYTHONPATH"] = str(root)
    for how in ("close", "exit", "close", "exit"):
        p = subprocess.run([sys.executable, str(script), how], cwd=root, env=env, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and p.stdout.strip() == "timeout 1", (how, p.stdout, p.stderr)
        assert "Traceback" not in p.stdout + p.stderr and not p.stderr.strip(), (how, p.stderr)


def test_close_waits_for_replacements_and_starts_none(reg):
    with Executor(reg, timeout_s=TIMEOUT, workers=1, address_space_mb=2560) as ex:
        assert ex.execute("demo", RUNAWAY).error_kind == ErrorKind.TIMEOUT  # killed; a replacement is starting
        pool = ex.pool
        pool.close()
        assert not pool._starters and pool.alive == 0  # the replacement finished starting and was stopped
        pool._replace_in_background()  # a late kill after close: no thread, no worker
        assert not pool._starters and pool.alive == 0


def test_start_in_background_starts_a_worker_without_a_call(reg):
    """A one-shot command starts its sandbox beside its other start-up work: the call returns at once, a worker
    comes up without any call, the first call uses it, and no more than `n` start."""
    with Executor(reg, timeout_s=5.0, workers=2, address_space_mb=2560) as ex:
        pool = ex.pool
        t0 = time.monotonic()
        pool.start_in_background(1)
        assert time.monotonic() - t0 < 0.5  # returns before the worker is up
        deadline = time.monotonic() + 60
        while pool.alive < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.alive == 1 and pool._count == 1
        assert ex.execute("demo", "SELECT count(*) FROM singer").ok
        assert pool.alive == 1  # the call took the idle worker; it started no second one
        pool.start_in_background(5)  # at most `size` workers in all
        while pool._starters and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.alive == 2 and pool._count == 2
    assert pool.alive == 0
