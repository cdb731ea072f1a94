"""Hostile candidates through the executor, with the guard on and with it off (straight into the sandbox):
none may write, read a file, attach a database, load an extension, change a setting, or run past its
timeout, and the database files stay byte-identical (sha256)."""

import hashlib
import shutil
import time

import pytest

from core.model import ErrorKind
from core.settings import spider_dir
from sqlbox.databases import DatabaseRegistry
from sqlbox.demo import build_demo
from sqlbox.executor import Executor

SPIDER_DB = spider_dir() / "database"
TIMEOUT = 1.0
SLACK = 4.0  # interrupt latency on a busy 2-core machine


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def hostile(tmp) -> list[tuple[str, str, str]]:
    """(db_id, sql, category). category: 'effect' must fail even without the guard; 'resource' must end
    within the time bound (a capped, harmless result is acceptable without the guard)."""
    out = tmp / "out"
    effects = [
        "DROP TABLE singer", "drop table if exists singer", "DELETE FROM singer", "delete from singer where 1=1",
        "UPDATE singer SET age = 0", "INSERT INTO singer (singer_id, name, country, age, is_male) VALUES (99, 'x', 'y', 1, 0)",
        "INSERT INTO singer SELECT * FROM singer", "CREATE TABLE pwn (a int)", "CREATE TEMP TABLE pwn AS SELECT 1",
        "CREATE VIEW pwn AS SELECT 1", "CREATE INDEX pwn ON singer(age)", "ALTER TABLE singer RENAME TO pwn",
        "ALTER TABLE singer ADD COLUMN pwn int", "REPLACE INTO singer SELECT * FROM singer",
        f"ATTACH '{out}_att.db' AS pwn", f"ATTACH DATABASE '{out}_att2.db' AS pwn", "DETACH src", "DETACH DATABASE main",
        f"COPY singer TO '{out}_copy.csv'", f"COPY (SELECT * FROM singer) TO '{out}_copy2.parquet' (FORMAT parquet)",
        f"EXPORT DATABASE '{out}_export'", "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd')", "SELECT * FROM read_text('/etc/passwd')",
        "SELECT content FROM read_blob('/etc/hostname')", "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM '/etc/passwd'", "SELECT * FROM \"/etc/hosts\"",
        f"SELECT * FROM sqlite_scan('{tmp / 'other.sqlite'}', 'singer')",  # another file than the database's
        f"CALL sqlite_attach('{tmp / 'demo.sqlite'}')", "SELECT * FROM read_parquet('/tmp/x.parquet')",
        "SELECT * FROM read_json('/etc/passwd')", "INSTALL httpfs", "LOAD httpfs", "FORCE INSTALL json",
        "LOAD '/tmp/evil.duckdb_extension'", "SELECT load_extension('/tmp/evil.so')",
        "PRAGMA writable_schema = ON", "PRAGMA query_only = OFF", "PRAGMA journal_mode = WAL",
        "SET enable_external_access = true", "SET lock_configuration = false", "RESET memory_limit",
        "SET memory_limit = '100GB'", "SELECT getenv('HOME')",
        "SELECT 1; DROP TABLE singer", "SELECT 1;DELETE FROM singer;", "sElEcT 1; dRoP tAbLe SiNgEr",
        "/* ok */ SELECT 1; -- x\nDELETE FROM singer", "SELECT 1 --\n; UPDATE singer SET age = 1",
        "WITH d AS (DELETE FROM singer RETURNING *) SELECT * FROM d",
        "WITH x AS (SELECT 1) INSERT INTO singer SELECT * FROM singer",
        "SELECT * INTO pwn FROM singer", "VACUUM", f"VACUUM INTO '{out}_vac.db'", "CHECKPOINT", "BEGIN",
        "COMMIT", "CREATE MACRO pwn(a) AS a", "CREATE SECRET pwn (TYPE s3)", "USE memory",
        "SELECT * FROM query('DROP TABLE singer')",
        "SELECT current_setting('enable_external_access') FROM (SELECT 1) WHERE 1 = 0 UNION ALL SELECT read_text('/etc/passwd')",
        "SELECT * FROM (SELECT * FROM (SELECT * FROM read_csv('/etc/passwd')))",
    ]
    resources = [
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(max(s)) FROM r",
        "SELECT count(*) FROM singer a, singer b, singer c, singer d, singer e, singer f, singer g, singer h",
        "SELECT a.* FROM singer a, singer b, singer c, singer d, singer e",
        "SELECT count(*) FROM range(100000000000)",
    ]
    # reads that stay within the sandbox: the guard refuses them, the sandbox may answer them
    harmless = [f"SELECT * FROM sqlite_scan('{tmp / 'demo.sqlite'}', 'singer')",  # its own database file
                "SELECT * FROM duckdb_settings()"]
    cands = [("demo", s, "effect") for s in effects] + [("demo", s, "resource") for s in resources]
    cands += [("demo", s, "harmless") for s in harmless]
    if (SPIDER_DB / "world_1").is_dir():
        cands.append(("world_1", "SELECT count(*) FROM city a, city b, city c, city d, city e", "resource"))
        cands.append(("world_1", "SELECT * FROM city a, city b ORDER BY a.Name, b.Name", "resource"))
    return cands


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    reg = DatabaseRegistry()
    reg.register("demo", build_demo(tmp / "demo.sqlite", force=True))
    build_demo(tmp / "other.sqlite", force=True)  # a file no database id points to
    if (SPIDER_DB / "world_1").is_dir():
        reg.register("world_1", shutil.copy(SPIDER_DB / "world_1" / "world_1.sqlite", tmp / "world_1.sqlite"))
    files = {db: reg.get(db).path for db in reg.ids()} | {"other": tmp / "other.sqlite"}
    before = {db: _sha(p) for db, p in files.items()}
    listing = sorted(p.name for p in tmp.iterdir())
    return tmp, reg, files, before, listing


@pytest.mark.parametrize("engine", ["duckdb", "sqlite"])
@pytest.mark.parametrize("use_guard", [True, False], ids=["guard", "sandbox-only"])
def test_hostile_candidates(env, engine, use_guard):
    tmp, reg, files, before, listing = env
    cands = hostile(tmp)
    assert len(cands) >= 50
    failures = []
    with Executor(reg, engine=engine, timeout_s=TIMEOUT, max_rows=1000, memory_limit="256MB",
                  use_guard=use_guard) as ex:
        for db, sql, cat in cands:
            t = time.perf_counter()
            r = ex.execute(db, sql)
            elapsed = time.perf_counter() - t
            if elapsed > TIMEOUT + SLACK:
                failures.append(f"too slow ({elapsed:.1f}s): {sql}")
            if cat == "effect" and r.ok:
                failures.append(f"ran: {sql} -> {r.rows[:2]}")
            if cat == "resource" and r.ok and not r.truncated and r.row_count > 1:
                failures.append(f"unbounded result: {sql}")
            if use_guard and cat != "resource" and r.error_kind not in (ErrorKind.REJECTED, ErrorKind.PARSE):
                failures.append(f"guard let through: {sql} ({r.error_kind}: {r.error})")
        # the sandbox is intact: still read-only, settings unchanged, the data unchanged
        assert ex.execute("demo", "SELECT count(*) FROM singer").rows == [[15]]
        if engine == "duckdb" and not use_guard:
            # (read on the sandbox connection itself: candidates may not call current_setting)
            con = ex._conn("demo").con
            assert con.execute("SELECT current_setting('enable_external_access'), "
                               "current_setting('lock_configuration'), "
                               "current_setting('autoload_known_extensions')").fetchone() == (False, True, False)
            loaded = ex.execute("demo", "SELECT extension_name FROM duckdb_extensions() WHERE loaded "
                                        "AND extension_name NOT IN ('core_functions', 'parquet', 'json', 'icu')")
            # the sandbox refuses even to list extensions (the listing reads the extension folder)
            assert (not loaded.ok and loaded.error_kind == ErrorKind.REJECTED) or \
                [row[0] for row in loaded.rows] == ["sqlite_scanner"], loaded
            # functions that extensions such as httpfs would add do not exist
            assert not ex.execute("demo", "SELECT count(*) FROM read_csv('https://example.com/x.csv')").ok
    assert not failures, "\n".join(failures)
    assert {db: _sha(p) for db, p in files.items()} == before
    assert sorted(p.name for p in tmp.iterdir()) == listing  # no file written beside the databases
    assert not list(tmp.glob("out*"))
