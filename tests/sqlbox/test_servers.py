"""Server databases (sqlbox.servers): PostgreSQL and MariaDB targets registered by URL, introspected, and
queried read-only and bounded; hostile SQL per engine, checked with row counts and checksums of every table,
a canary file that must not be read, a marker file that must not appear, and a time bound.

Each server test loads Spider's concert_singer into a throwaway database (dropped afterwards) and queries it
as a throwaway read-only role made by `sqlbox.privileges.grant_readonly` (`sqlarbiter databases grant-readonly`;
dropped afterwards). The servers are the CI's (.ci/postgres.sh, .ci/mariadb.sh); the tests
try to start them and skip, saying why, only when that fails."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from core.model import ErrorKind
from core.settings import spider_dir
from sqlbox.admin import load_spider
from sqlbox.databases import DatabaseRegistry
from sqlbox.executor import Executor
from sqlbox.guard import Rejected, guard, normalize
from sqlbox.privileges import grant_readonly
from sqlbox.servers.pool import dispose_all
from sqlbox.servers.targets import TargetError, is_url, parse_target, split_database_list

ROOT = Path(__file__).resolve().parents[2]
SPIDER_DB = spider_dir() / "database"
CS = SPIDER_DB / "concert_singer" / "concert_singer.sqlite"
TIMEOUT = 1.0
SLACK = 4.0  # cancel latency on a busy 2-core machine
RO = f"sqlarbiter_ro_{uuid.uuid4().hex[:8]}"  # per run: a MariaDB user keeps grants on dropped databases


# --------------------------------------------------------------------------- URLs (no server needed)


def test_parse_target_ids_options_and_passwords():
    ident, t = parse_target("postgresql://reader@db.example:5433/sales")
    assert (ident, t.kind, t.dialect, t.database, t.url) == (
        "sales", "postgresql", "postgres", "sales", "postgresql://reader@db.example:5433/sales")
    ident, t = parse_target("mariadb://r@h/shop?id=store&include=orders,public.items&exclude=*_tmp&password_env=PW")
    assert (ident, t.kind, t.dialect, t.include, t.exclude, t.password_env) == (
        "store", "mysql", "mysql", ("orders", "public.items"), ("*_tmp",), "PW")
    assert parse_target("postgres://u@h/db", db_id="x")[0] == "x"
    assert t.keeps(None, "orders", None) and not t.keeps(None, "customers", None)
    with pytest.raises(TargetError) as e:
        parse_target("postgresql://u:hunter2@h/db")
    assert "hunter2" not in str(e.value) and "password_env" in str(e.value)
    for bad, why in [("postgresql://u@h", "database name"), ("mysql://u@h/db?sslmode=x", "unknown URL option"),
                     ("postgresql://u@h/db?password_env=A&password_file=B", "not both"), ("/tmp/x.sqlite", "not a database URL")]:
        with pytest.raises(TargetError, match=why):
            parse_target(bad)
    assert is_url("postgresql+psycopg://u@h/d") and not is_url("data/spider") and not is_url("sqlite:///x.db")


def test_password_from_env_or_file_never_in_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_TEST_PW", "s3cret-Pw")
    reg = DatabaseRegistry()
    # a port nothing listens on: the connection error must not carry the password
    info = reg.register_url("postgresql://nobody@127.0.0.1:1/nodb?password_env=SQLARBITER_TEST_PW")
    assert info.db_id == "nodb" and info.location == "postgresql://nobody@127.0.0.1:1/nodb"
    assert info.target.password() == "s3cret-Pw" and "s3cret" not in repr(info)
    with Executor(reg, timeout_s=2) as ex:
        res = ex.execute("nodb", "SELECT 1")
    assert not res.ok and res.engine == "postgresql"
    assert "s3cret" not in res.model_dump_json()
    pwf = tmp_path / "pw"
    pwf.write_text("file-Secret\n")
    _, t = parse_target(f"mysql://nobody@127.0.0.1:1/nodb?password_file={pwf}")
    assert t.password() == "file-Secret"
    _, t = parse_target("mysql://nobody@127.0.0.1:1/nodb?password_env=SQLARBITER_UNSET_VAR")
    with pytest.raises(TargetError, match="not set"):
        t.password()


def test_database_lists_keep_urls_whole():
    sep = os.pathsep
    items = ["data/spider", "postgresql://u@127.0.0.1:5432/cs", "mysql://u@h/db?id=x", "/tmp/a.sqlite"]
    assert split_database_list(sep.join(items)) == items


def test_guard_parses_in_the_server_dialect():
    assert guard("SELECT name::text FROM singer WHERE age > 3 LIMIT 2", "postgres")
    assert guard("SELECT `name` FROM singer LIMIT 1, 2", "mysql")
    canon, _ = normalize("select name from singer where name ilike '%a%'", "postgres")
    assert "ILIKE" in canon
    for sql, d in [("SELECT pg_sleep(10)", "postgres"), ("SELECT * FROM singer WHERE pg_read_file('/etc/passwd') > ''", "postgres"),
                   ("SELECT pg_advisory_lock(1)", "postgres"), ("SELECT nextval('s')", "postgres"),
                   ("SELECT SLEEP(5)", "mysql"), ("SELECT BENCHMARK(1000000000, md5('a'))", "mysql"),
                   ("SELECT LOAD_FILE('/etc/passwd')", "mysql"), ("SELECT name FROM singer INTO OUTFILE '/tmp/x'", "mysql"),
                   ("SELECT @@version", "mysql")]:
        with pytest.raises(Rejected):
            guard(sql, d)
    # the allowlist holds for SQL written in another dialect too (SQLite text bound for PostgreSQL)
    with pytest.raises(Rejected):
        guard("SELECT pg_sleep(1)", "sqlite")


def test_sqlite_sql_rewritten_for_servers():
    from sqlbox.schema import Column, Schema, Table
    from sqlbox.servers.targets import server_url_for
    from sqlbox.servers.translate import sqlite_to_server

    schema = Schema("x", [Table("airlines", [Column("Airline"), Column("Country")])])
    tree = guard('SELECT Country FROM airlines WHERE Airline = "JetBlue" AND "Country" LIKE \'u%\'', "sqlite")
    pg = sqlite_to_server(tree, "postgres", schema)
    assert "'JetBlue'" in pg and "ILIKE" in pg and '"Country"' in pg
    my = sqlite_to_server(guard('SELECT count(*) FROM (SELECT Airline FROM airlines INTERSECT SELECT Country FROM airlines)',
                                "sqlite"), "mysql", schema)
    assert ") AS _t" in my
    assert server_url_for("mysql://u@h:1/db?id=a&password_env=P", "other") == "mysql://u@h:1/other?password_env=P"


def test_prompt_names_the_dialect():
    from generators.base import GenerationRequest
    from generators.prompts import build_messages

    for dialect, name in [("postgres", "PostgreSQL"), ("mysql", "MySQL")]:
        msgs = build_messages(GenerationRequest(question="How many singers?", schema="CREATE TABLE singer (id int);",
                                                dialect=dialect))
        assert name in msgs[0]["content"] and name in msgs[-1]["content"]


# --------------------------------------------------------------------------- servers


def _start(script: str) -> None:
    subprocess.run(["bash", str(ROOT / ".ci" / script)], capture_output=True, timeout=240, check=False)


def _pg_admin():
    psycopg = pytest.importorskip("psycopg")
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError:
        _start("postgres.sh")
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432 and .ci/postgres.sh could not start one: "
                    f"{str(e).splitlines()[0]}")


def _my_admin(db: str | None = None):
    pymysql = pytest.importorskip("pymysql")
    kw = {"host": "127.0.0.1", "port": 3306, "user": "sqlarbiter", "autocommit": True, "connect_timeout": 3}
    try:
        return pymysql.connect(**kw, database=db)
    except pymysql.err.OperationalError:
        _start("mariadb.sh")
    try:
        return pymysql.connect(**kw, database=db)
    except pymysql.err.OperationalError as e:
        pytest.skip(f"no MariaDB server on 127.0.0.1:3306 and .ci/mariadb.sh could not start one: {e}")


class Server:
    """A loaded throwaway copy of concert_singer, an admin handle for checks, and a read-only registry."""

    def __init__(self, kind: str, name: str, admin, reg: DatabaseRegistry):
        self.kind, self.name, self.admin, self.reg = kind, name, admin, reg

    def q(self, sql: str) -> list[tuple]:
        cur = self.admin.cursor()
        cur.execute(sql)
        rows = list(cur.fetchall()) if cur.description else []
        cur.close()
        return rows

    def snapshot(self) -> dict[str, tuple]:
        """Every table of the database: (row count, checksum of the sorted rows), plus the table list."""
        if self.kind == "postgresql":
            tables = [r[0] for r in self.q("SELECT tablename FROM pg_tables WHERE schemaname NOT IN "
                                           "('pg_catalog', 'information_schema') ORDER BY 1")]
            out = {t: tuple(self.q(f'SELECT count(*), md5(coalesce(string_agg(x::text, \',\' ORDER BY x::text), \'\')) '
                                   f'FROM "{t}" x')[0]) for t in tables}
        else:
            tables = [r[0] for r in self.q(f"SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                           f"'{self.name}' ORDER BY 1")]
            out = {}
            for t in tables:
                rows = self.q(f"SELECT * FROM `{self.name}`.`{t}`")
                out[t] = (len(rows), hash(tuple(sorted(map(repr, rows)))))
        out["__tables__"] = tuple(tables)
        return out


@pytest.fixture(scope="module")
def pg():
    if not CS.is_file():
        pytest.skip(f"Spider concert_singer not found at {CS}")
    admin = _pg_admin()
    name = f"sqlarbiter_t_{uuid.uuid4().hex[:10]}"
    load_spider(CS, "postgresql://postgres@127.0.0.1:5432/postgres", name)
    # the read-only role of docs/databases.md, made as `sqlarbiter databases grant-readonly --apply` makes it
    granted = grant_readonly(f"postgresql://postgres@127.0.0.1:5432/{name}", RO, apply=True)
    assert granted.problems == [], granted
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}", autocommit=True) as c:
        c.execute("COMMENT ON TABLE singer IS 'People who sing at concerts'")
        c.execute("COMMENT ON COLUMN singer.age IS 'age in years'")
        c.execute("CREATE SEQUENCE IF NOT EXISTS seq1")
        db_admin = psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}", autocommit=True)
    reg = DatabaseRegistry()
    reg.register_url(f"postgresql://{RO}@127.0.0.1:5432/{name}", db_id="cs")
    reg.register(CS.stem, CS)
    yield Server("postgresql", name, db_admin, reg)
    dispose_all()
    db_admin.close()
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f"DROP ROLE IF EXISTS {RO}")
    admin.close()


@pytest.fixture(scope="module")
def my():
    if not CS.is_file():
        pytest.skip(f"Spider concert_singer not found at {CS}")
    admin = _my_admin()
    name = f"sqlarbiter_t_{uuid.uuid4().hex[:10]}"
    load_spider(CS, "mysql://sqlarbiter@127.0.0.1:3306/mysql", name)
    granted = grant_readonly(f"mysql://sqlarbiter@127.0.0.1:3306/{name}", RO, apply=True)  # 127.0.0.1 and localhost
    assert granted.problems == [], granted
    cur = admin.cursor()
    cur.execute(f"ALTER TABLE `{name}`.singer COMMENT = 'People who sing at concerts'")
    reg = DatabaseRegistry()
    reg.register_url(f"mysql://{RO}@127.0.0.1:3306/{name}", db_id="cs")
    reg.register(CS.stem, CS)
    yield Server("mysql", name, _my_admin(name), reg)
    dispose_all()
    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    for host in ("127.0.0.1", "localhost"):
        cur.execute(f"DROP USER IF EXISTS '{RO}'@'{host}'")
    admin.close()


@pytest.fixture(params=["pg", "my"])
def server(request):
    return request.getfixturevalue(request.param)


pytestmark = pytest.mark.postgres

SAME_AS_SQLITE = [
    "SELECT count(*) FROM singer",
    "SELECT name, country, age FROM singer ORDER BY age DESC",
    "SELECT avg(age), min(age), max(age) FROM singer WHERE country = 'France'",
    "SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
    "GROUP BY T2.stadium_id, T2.name",
    "SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)",
    "SELECT country FROM singer WHERE age > 40 INTERSECT SELECT country FROM singer WHERE age < 30",
    "SELECT DISTINCT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id",
]


def test_introspection_feeds_the_schema_prompt(server):
    from sqlbox.schema import schema_features, schema_to_prompt

    reg = server.reg
    s = reg.schema("cs")
    assert s.kind == server.kind and sorted(s.table_names()) == ["concert", "singer", "singer_in_concert", "stadium"]
    singer = s.table("singer")
    assert singer.primary_key == ["singer_id"] and singer.row_count == 6
    assert singer.comment == "People who sing at concerts"
    assert {c.name for c in singer.columns} >= {"name", "country", "age"} and singer.column("name").samples
    assert any(fk.ref_table == "stadium" for fk in s.table("concert").foreign_keys)
    prompt = schema_to_prompt(s, sample_rows=2)
    assert "CREATE TABLE singer" in prompt and "People who sing at concerts" in prompt and "REFERENCES stadium" in prompt
    assert schema_features(s)["n_tables"] == 4
    info = reg.get("cs")
    assert (info.kind, info.dialect) == (server.kind, "postgres" if server.kind == "postgresql" else "mysql")


def test_results_match_sqlite_fingerprints(server):
    with Executor(server.reg, engine="sqlite", timeout_s=10) as ex:
        for sql in SAME_AS_SQLITE:
            a, b = ex.execute(CS.stem, sql), ex.execute("cs", sql)  # SQLite text, transpiled for the server
            assert a.ok and b.ok, (sql, a.error, b.error)
            assert b.engine == server.kind and b.executed_sql
            assert a.fingerprint == b.fingerprint, (sql, a.rows, b.rows)


def test_row_cap_and_native_dialect(server):
    with Executor(server.reg, timeout_s=10, max_rows=2) as ex:
        r = ex.execute("cs", "SELECT name FROM singer ORDER BY name")
        assert r.ok and r.row_count == 2 and r.truncated
        native = "SELECT name || '!' FROM singer LIMIT 1" if server.kind == "postgresql" else \
            "SELECT CONCAT(`name`, '!') FROM singer LIMIT 1"
        r = ex.execute("cs", native, dialect=server.reg.get("cs").dialect)
        assert r.ok and r.executed_sql == native and r.rows[0][0].endswith("!")
        r = ex.execute("cs", "SELECT nosuch FROM singer")
        assert not r.ok and r.error_kind == ErrorKind.BINDER


def test_privilege_check_reports_writers(server):
    from sqlbox.privileges import PrivilegeError, privilege_warnings, role_problems

    assert role_problems(server.reg.get("cs").target) == []  # the role grant_readonly made
    assert server.reg.verify("cs") == []
    admin_url = (f"postgresql://postgres@127.0.0.1:5432/{server.name}" if server.kind == "postgresql"
                 else f"mysql://sqlarbiter@127.0.0.1:3306/{server.name}")
    problems = role_problems(parse_target(admin_url)[1])
    fix = "ALTER ROLE postgres NOSUPERUSER" if server.kind == "postgresql" else "REVOKE ALL PRIVILEGES ON *.* FROM"
    assert any(fix in p for p in problems), problems
    assert privilege_warnings(parse_target(admin_url)[1]) == problems
    # the admin registered as a database: refused before anything reads it, saying what to change
    reg = DatabaseRegistry()
    reg.register_url(admin_url, db_id="adm")
    with pytest.raises(PrivilegeError, match="refused") as e:
        reg.schema("adm")
    assert fix in str(e.value) and 'privileged_databases = ["adm"]' in str(e.value)


# --------------------------------------------------------------------------- hostile corpora

CANARY = "/tmp/sqlarbiter_canary.txt"
CANARY_TEXT = "canary-7f3a9c-do-not-read"
MARKER = "/tmp/sqlarbiter_marker_{}"

PG_HOSTILE = [
    "COPY singer TO PROGRAM 'touch {marker}'", "COPY singer FROM PROGRAM 'cat {canary}'",
    "COPY (SELECT 1) TO '{marker}'", "COPY singer FROM '{canary}'",
    "SELECT pg_read_file('{canary}')", "SELECT pg_read_binary_file('{canary}')", "SELECT * FROM pg_ls_dir('/tmp')",
    "SELECT pg_stat_file('{canary}')", "SELECT lo_import('{canary}')", "SELECT lo_export(1, '{marker}')",
    "SELECT * FROM dblink('dbname=postgres', 'DELETE FROM singer') AS t(a int)", "SELECT set_config('statement_timeout', '0', false)",
    "SELECT pg_sleep(30)", "SELECT pg_sleep_for('30 seconds')", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "SELECT pg_advisory_lock(42)", "SELECT pg_try_advisory_xact_lock(42)", "SELECT * FROM singer FOR UPDATE",
    "SELECT * FROM singer FOR SHARE", "SELECT * INTO pwn FROM singer", "SELECT nextval('seq1')", "SELECT setval('seq1', 99)",
    "SELECT pg_notify('ch', 'x')", "WITH d AS (DELETE FROM singer RETURNING *) SELECT count(*) FROM d",
    "WITH u AS (UPDATE singer SET age = 0 RETURNING 1) SELECT * FROM u",
    "WITH i AS (INSERT INTO stadium (stadium_id) VALUES (999) RETURNING 1) SELECT * FROM i",
    "DO $$ BEGIN DELETE FROM singer; END $$", "CALL pwn()", "SELECT 1; DROP TABLE singer", "SELECT 1; COMMIT; DELETE FROM singer",
    "DROP TABLE singer", "TRUNCATE singer", "CREATE TABLE pwn AS SELECT 1", "SET default_transaction_read_only = off",
    "SELECT query_to_xml('DELETE FROM singer RETURNING 1', true, false, '')",
    "SELECT count(*) FROM generate_series(1, 100000000000)", "LOCK TABLE singer IN ACCESS EXCLUSIVE MODE",
    "SELECT current_setting('data_directory')", "SELECT txid_current()",
]
MY_HOSTILE = [
    "SELECT * FROM singer INTO OUTFILE '{marker}'", "SELECT name FROM singer LIMIT 1 INTO DUMPFILE '{marker}'",
    "SELECT LOAD_FILE('{canary}')", "LOAD DATA INFILE '{canary}' INTO TABLE singer",
    "LOAD DATA LOCAL INFILE '{canary}' INTO TABLE singer", "SELECT SLEEP(30)", "SELECT BENCHMARK(5000000000, md5('x'))",
    "SELECT GET_LOCK('x', 30)", "SELECT * FROM singer FOR UPDATE", "SELECT * FROM singer LOCK IN SHARE MODE",
    "SET @@session.max_statement_time = 0", "SET @@global.read_only = 0", "SELECT @@datadir",
    "HANDLER singer OPEN", "SELECT 1; DROP TABLE singer", "SELECT 1; DELETE FROM singer",
    "DELETE FROM singer", "UPDATE singer SET age = 0", "DROP TABLE singer", "CREATE TABLE pwn (a int)",
    "INSERT INTO stadium (stadium_id) VALUES (999)", "SELECT name INTO @v FROM singer LIMIT 1",
    "SELECT count(*) FROM singer a, singer b, singer c, singer d, singer e, singer f, singer g, singer h, singer i, singer j",
    "SELECT * FROM singer WHERE name = 'x' OR SLEEP(1)", "DO SLEEP(30)", "KILL CONNECTION_ID()",
]


def _hostile(server, corpus: list[str], tmp_path) -> dict:
    Path(CANARY).write_text(CANARY_TEXT)
    Path(CANARY).chmod(0o644)
    before = server.snapshot()
    tried = writes = file_reads = slow = 0
    failures = []
    outcomes: dict[str, int] = {}  # guard off: what the server layer did
    for i, template in enumerate(corpus):
        marker = MARKER.format(f"{server.kind}_{i}")
        if os.path.exists(marker):
            os.remove(marker)
        sql = template.format(canary=CANARY, marker=marker)
        for use_guard in (True, False):
            with Executor(server.reg, timeout_s=TIMEOUT, use_guard=use_guard) as ex:
                t0 = time.monotonic()
                res = ex.execute("cs", sql, dialect=server.reg.get("cs").dialect)
                took = time.monotonic() - t0
            tried += 1
            text = res.model_dump_json()
            if CANARY_TEXT in text:
                file_reads += 1
                failures.append(f"file read: {sql}")
            if os.path.exists(marker):
                writes += 1
                failures.append(f"file written: {sql}")
                os.remove(marker)
            if took > TIMEOUT + SLACK:
                slow += 1
                failures.append(f"{took:.1f}s: {sql}")
            if use_guard and res.ok:
                failures.append(f"guard let through: {sql}")
            if not use_guard:
                k = "ok (harmless)" if res.ok else str(res.error_kind)
                outcomes[k] = outcomes.get(k, 0) + 1
                if os.environ.get("SQLARBITER_SHOW_HOSTILE"):
                    print(f"  guard off: {k:<14} {took:5.2f}s  {sql[:70]}  | {(res.error or '')[:90]}")
            after = server.snapshot()
            if after != before:
                writes += 1
                failures.append(f"database changed (guard={'on' if use_guard else 'off'}): {sql}")
                before = after
    return {"tried": tried, "writes": writes, "file_reads": file_reads, "slow": slow, "failures": failures,
            "guard_off": outcomes}


def test_hostile_postgresql(pg, tmp_path):
    rep = _hostile(pg, PG_HOSTILE, tmp_path)
    print(f"postgresql hostile: {rep}")
    assert rep["tried"] == 2 * len(PG_HOSTILE)
    assert rep["failures"] == [] and rep["writes"] == rep["file_reads"] == rep["slow"] == 0
    # nothing left behind: no advisory locks, no idle transactions of ours
    assert pg.q("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] == 0
    assert pg.q("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND state LIKE 'idle in transaction%%'"
                .replace("%s", f"'{RO}'"))[0][0] == 0


@pytest.mark.mariadb
def test_hostile_mariadb(my, tmp_path):
    rep = _hostile(my, MY_HOSTILE, tmp_path)
    print(f"mariadb hostile: {rep}")
    assert rep["tried"] == 2 * len(MY_HOSTILE)
    assert rep["failures"] == [] and rep["writes"] == rep["file_reads"] == rep["slow"] == 0
    assert my.q("SELECT IS_USED_LOCK('x')")[0][0] is None


def test_read_only_transaction_holds_without_role_limits(pg):
    """Even as the owner (a superuser) with the guard off, the read-only transaction refuses writes."""
    reg = DatabaseRegistry(privileged=["own"])  # opted in by name: a superuser role is refused otherwise
    reg.register_url(f"postgresql://postgres@127.0.0.1:5432/{pg.name}", db_id="own")
    before = pg.snapshot()
    with Executor(reg, timeout_s=TIMEOUT, use_guard=False) as ex:
        for sql in ["WITH d AS (DELETE FROM singer RETURNING *) SELECT count(*) FROM d", "SELECT nextval('seq1')",
                    "SELECT 1; COMMIT; DELETE FROM singer", "SELECT * INTO pwn FROM singer"]:
            r = ex.execute("own", sql, dialect="postgres")
            assert not r.ok, sql
        r = ex.execute("own", "SELECT pg_sleep(20)", dialect="postgres")
        assert r.error_kind == ErrorKind.TIMEOUT and r.elapsed_ms < (TIMEOUT + SLACK) * 1000
    assert pg.snapshot() == before


# --------------------------------------------------------------------------- planner and CLI


def test_planner_uses_the_database_dialect(pg):
    from planner.config import config_from_dict
    from planner.normalize import CandidatePool
    from planner.pipeline import Planner

    cfg = config_from_dict({}, env={})
    p = Planner(cfg, registry=pg.reg)
    try:
        assert p.dialect("cs") == "postgres" and p.dialect(CS.stem) == cfg.defaults.dialect
    finally:
        p.close()
    pool = CandidatePool(dialect="postgres")
    pool.add_many(["SELECT pg_sleep(5)", "SELECT name::varchar FROM singer"], source="t")
    assert pool.candidates[0].rejected and not pool.candidates[1].rejected


def test_cli_databases_and_load_spider_usage(pg, capsys):
    from cli.main import main

    url = f"postgresql://{RO}@127.0.0.1:5432/{pg.name}"
    assert main(["databases", "--data", url, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"kind": "postgresql"' in out and '"dialect": "postgres"' in out
    assert main(["databases", "load-spider", "--to", "/tmp/x.sqlite"]) == 2
    assert "server URL" in capsys.readouterr().err
    assert main(["databases", "load-spider", "--to", "postgresql://postgres@127.0.0.1:5432", "--db-ids", "nope_1"]) == 2
    err = capsys.readouterr().err
    assert "unknown Spider database" in err and "concert_singer" in err
    assert main(["check", "--data", "postgresql://u:pw1@127.0.0.1:5432/x", "--db", "x", "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert "pw1" not in err and "password_env" in err


def test_api_lists_kind_and_dialect(pg, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from planner.config import config_from_dict

    monkeypatch.setenv("SQLARBITER_TEST_PW2", "zz-secret-zz")
    url = f"postgresql://{RO}@127.0.0.1:5432/{pg.name}?id=cs_pg&password_env=SQLARBITER_TEST_PW2"
    cfg = config_from_dict({"databases": [url], "store_url": f"sqlite:///{tmp_path / 's.db'}"}, env={})
    with TestClient(create_app(cfg)) as c:
        r = c.get("/databases")
        assert r.status_code == 200
        rows = {d["db_id"]: d for d in r.json()}
        assert rows["cs_pg"]["kind"] == "postgresql" and rows["cs_pg"]["dialect"] == "postgres"
        assert rows["cs_pg"]["n_tables"] == 4 and "zz-secret" not in r.text
        s = c.get("/databases/cs_pg/schema")
        assert s.status_code == 200 and "CREATE TABLE singer" in s.json()["prompt"]
        r = c.post("/check", json={"db_id": "cs_pg", "sql": "SELECT count(*) FROM singer"})
        assert r.status_code == 200 and r.json()["rows"] == [[6]]


def test_eval_verdicts_on_the_server(server):
    """`eval ... --target-url`: gold and predictions (SQLite SQL) run on the server under the official rule."""
    from eval.exec_match import verdicts

    base = (f"postgresql://{RO}@127.0.0.1:5432" if server.kind == "postgresql"
            else f"mysql://{RO}@127.0.0.1:3306")
    gold = 'SELECT name FROM singer WHERE country = "France" ORDER BY age DESC'
    preds = ["SELECT name FROM singer WHERE country = 'France' ORDER BY age DESC",
             "SELECT name FROM singer WHERE country = 'France' ORDER BY age ASC",
             "SELECT nosuch FROM singer", "DROP TABLE singer", ""]
    vs = verdicts("spider", f"/nowhere/{server.name}.sqlite", gold, preds, target_url=base, timeout=5)
    assert [v.ex for v in vs] == [True, False, False, False, False]
    assert vs[2].error_kind == "pred_error" and "rejected" not in (vs[2].error or "")
    assert vs[3].error_kind == "pred_error" and "DROP" in (vs[3].error or "")


# --------------------------------------------------------------------------- what runs is what was checked

# The attacks and their classes, run with the server's most powerful role (opted in by name), so the
# guard alone must hold: comment smuggling, quoted/qualified/case-varied function names, SQL inside strings,
# catalogs, other databases, settings and accounts.
PG_PRIVILEGED = [
    ("sqlite", "SELECT 1 -- */ , pg_read_file('/etc/passwd') /*"),
    ("postgres", "SELECT 1 -- */ , pg_read_file('/etc/passwd') /*"),
    ("postgres", "SELECT 1 /* a */ -- */ , pg_ls_dir('/') /*"),
    ("postgres", "SELECT pg_catalog.\"pg_read_file\"('/etc/passwd')"),
    ("postgres", "SELECT \"pg_read_file\"('/etc/passwd')"),
    ("postgres", "SELECT PG_CATALOG.PG_READ_FILE('/etc/passwd')"),
    ("postgres", "SELECT * FROM pg_catalog.\"pg_ls_dir\"('/')"),
    ("postgres", "SELECT pg_catalog.\"pg_stat_file\"('/etc/passwd')"),
    ("postgres", "SELECT pg_catalog.\"lo_import\"('/etc/passwd')"),
    ("sqlite", "SELECT \"pg_read_file\"('/etc/passwd')"),
    ("postgres", "SELECT * FROM ts_stat('SELECT to_tsvector(pg_read_file(''/etc/passwd''))')"),
    ("postgres", "SELECT word FROM singer, ts_stat('SELECT to_tsvector(pg_read_file(''/etc/passwd''))') AS s"),
    ("postgres", "SELECT query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, true, '')"),
    ("postgres", "SELECT xpath('/a', query_to_xml('SELECT 1', true, true, ''))"),
    ("postgres", "SELECT datname FROM pg_database"),
    ("postgres", "SELECT query FROM pg_stat_activity"),
    ("postgres", "SELECT * FROM pg_file_settings"),
    ("postgres", "SELECT * FROM pg_config"),
    ("postgres", "SELECT * FROM pg_show_all_settings()"),
    ("postgres", "SELECT name, setting FROM pg_catalog.pg_settings"),
    ("postgres", "SELECT rolname, rolpassword FROM pg_authid"),
    ("postgres", "SELECT table_name FROM information_schema.tables"),
    ("postgres", "SELECT (SELECT setting FROM pg_settings WHERE name = 'data_directory') FROM singer"),
    ("postgres", "SELECT user"),
    ("postgres", "SELECT session_user FROM singer"),
    ("postgres", "SELECT current_user"),
    ("postgres", "SELECT version()"),
    ("postgres", "SELECT current_database()"),
    ("postgres", "SELECT inet_server_addr()"),
    ("postgres", "SELECT $$x$$ || pg_read_file('/etc/passwd')"),
    ("postgres", "SELECT E'\\x41' || pg_catalog.pg_read_file('/etc/passwd')"),
    ("sqlite", "SELECT name FROM singer WHERE name = 'a\\' UNION SELECT pg_read_file('/etc/passwd') -- '"),
    ("postgres", "SELECT E'a\\'' AS x, pg_read_file(chr(47)||'etc/passwd') AS y --'"),
    ("duckdb", "SELECT E'a\\'' AS x, pg_read_file(chr(47)||'etc/passwd') AS y --'"),
]
MY_PRIVILEGED = [
    ("mysql", "SELECT name FROM singer /*!50000 INTO OUTFILE '/tmp/sqlarbiter_outfile_{n}' */"),
    ("mysql", "SELECT 1 /*! , @@datadir, @@hostname */"),
    ("mysql", "SELECT 1 /*M! , @@datadir */"),
    ("sqlite", "SELECT 1 /*! , @@datadir, @@hostname */"),
    ("mysql", "SELECT name FROM singer WHERE 1 = 1 --1\nUNION SELECT @@datadir"),
    ("mysql", "SELECT name FROM singer # x\nUNION SELECT user FROM mysql.user"),
    ("mysql", "SELECT schema_name FROM information_schema.schemata"),
    ("mysql", "SELECT table_schema, table_name FROM information_schema.tables"),
    ("mysql", "SELECT user, password FROM mysql.user"),
    ("mysql", "SELECT * FROM mysql.global_priv"),
    ("mysql", "SELECT * FROM mysql.db"),
    ("mysql", "SELECT * FROM performance_schema.threads"),
    ("mysql", "SELECT * FROM sys.version"),
    ("mysql", "SELECT `load_file`('/etc/passwd')"),
    ("mysql", "SELECT LOAD_FILE('/etc/passwd')"),
    ("sqlite", "SELECT load_file('/etc/passwd')"),
    ("mysql", "SELECT user()"),
    ("mysql", "SELECT current_user"),
    ("mysql", "SELECT database()"),
    ("mysql", "SELECT version()"),
    ("mysql", "SELECT @@version"),
    ("mysql", "SELECT /*+ SET_VAR(max_statement_time=0) */ name FROM singer"),
    ("sqlite", "SELECT name FROM singer WHERE name = 'a\\' UNION SELECT load_file('/etc/passwd') -- '"),
]
_DISCLOSED = ("root:x:0", "/var/lib/", "/etc/", "mysql-files", "datadir", "pg_hba")


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_the_guard_alone_holds_for_a_superuser(kind, request):
    """Registered with the server's superuser (opted in by name), every attack class is refused or runs
    harmlessly: what runs is what the guard checked, rendered from its tree."""
    server = request.getfixturevalue("pg" if kind == "postgresql" else "my")
    admin_url = (f"postgresql://postgres@127.0.0.1:5432/{server.name}" if kind == "postgresql"
                 else f"mysql://sqlarbiter@127.0.0.1:3306/{server.name}")
    reg = DatabaseRegistry(privileged=["adm"])
    reg.register_url(admin_url, db_id="adm")
    leaks = []
    with Executor(reg, timeout_s=TIMEOUT) as ex:
        for n, (dialect, sql) in enumerate(PG_PRIVILEGED if kind == "postgresql" else MY_PRIVILEGED):
            res = ex.execute("adm", sql.format(n=n), dialect=dialect)
            text = json.dumps(res.rows) + " ".join(res.columns)
            if res.ok and (any(m in text for m in _DISCLOSED) or res.rows != [[1]]):
                leaks.append((dialect, sql, res.executed_sql, res.rows))
            if res.executed_sql:
                assert "--" not in res.executed_sql and "/*" not in res.executed_sql, res.executed_sql
    assert leaks == []
    assert not any(Path(f"/tmp/sqlarbiter_outfile_{n}").exists() for n in range(len(MY_PRIVILEGED)))


def test_comment_smuggling_runs_only_what_was_checked(pg):
    with Executor(pg.reg, timeout_s=10) as ex:
        for dialect in ("sqlite", "postgres"):
            res = ex.execute("cs", "SELECT 1 -- */ , pg_read_file('/etc/passwd') /*", dialect=dialect)
            assert res.ok and res.rows == [[1]] and res.executed_sql == "SELECT 1"


def test_postgres_plan_is_a_second_opinion(pg):
    """Past the guard (the connection is driven directly here) and with the superuser (so the server's own
    permissions do not help), PostgreSQL's own plan (EXPLAIN, not run) refuses catalogs, function scans and
    forbidden calls, as PostgreSQL itself reads the text."""
    from sqlbox.servers.execute import ServerConn

    _, target = parse_target(f"postgresql://postgres@127.0.0.1:5432/{pg.name}")
    conn = ServerConn("adm", target)
    for sql in ("SELECT datname FROM pg_database", "SELECT count(*) FROM information_schema.tables",
                "SELECT * FROM pg_show_all_settings()", "SELECT (SELECT rolname FROM pg_roles LIMIT 1)",
                "SELECT E'a\\'' AS x, pg_read_file('/etc/hostname') AS y --'",
                "SELECT name FROM singer WHERE current_setting('work_mem') > ''",
                "SELECT count(*) FROM singer GROUP BY pg_backend_pid()"):
        with pytest.raises(Rejected, match="server check"):
            conn.run(sql, 10.0, 10)
    cols, rows = conn.run("SELECT count(*), lower(min(name)) FROM singer WHERE name LIKE '%pg_sleep(%'", 10.0, 10)
    assert rows[0][0] == 0 or rows


def test_check_defaults_to_the_database_dialect(pg, capsys):
    """`sqlarbiter check` parses in the database's own dialect: PostgreSQL's `||` and `::` on a PostgreSQL
    database, and MySQL's executable comments are refused even when the text names another dialect."""
    from cli.main import main

    url = f"postgresql://{RO}@127.0.0.1:5432/{pg.name}?id=cs"
    assert main(["check", "--data", url, "--db", "cs", "--json", "SELECT name::text || '!' FROM singer LIMIT 1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "ok" and out["rows"][0][0].endswith("!")
    assert main(["check", "--data", url, "--db", "cs", "SELECT 1 /*! , version() */"]) == 1
    assert "executable comments" in capsys.readouterr().out


# --------------------------------------------------------------------------- bounded results, clean sessions


def _server_conn(server):
    """The server connection alone, below the guard and the plan check: these tests drive the session reset and
    the result bounds with SQL the upper layers would refuse (pg_backend_pid, set_config, GET_LOCK, ...)."""
    from sqlbox.servers.execute import ServerConn

    return ServerConn("cs", server.reg.get("cs").target, plan_check=False)


def _running(server, marker: str) -> int:
    """Queries other than this one that are running on the server and contain `marker`."""
    if server.kind == "postgresql":
        return server.q(f"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{marker}%' "
                        f"AND pid <> pg_backend_pid()")[0][0]
    return server.q(f"SELECT count(*) FROM information_schema.processlist WHERE info LIKE '%{marker}%' "
                    f"AND id <> CONNECTION_ID()")[0][0]


def test_huge_results_stream_and_stop_early(server):
    """Rows stream (PostgreSQL: `Cursor.stream`; MariaDB: an unbuffered `SSCursor`) through the row and byte
    caps: 10 MB rows fail TOO_LARGE after a few rows (the whole result is ~1.7 GB); a 10-million-row result
    stops at the row cap at once, without being drained, and the server stops running it; the pool goes on."""
    import resource

    from sqlbox.fetch import ResultTooLarge

    c = _server_conn(server)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with pytest.raises(ResultTooLarge, match="64 MB") as e:
        c.run("SELECT repeat(a.name, 1000000) FROM singer a, singer b, singer c", 30.0, 10_000)
    assert c.classify(e.value) == ErrorKind.TOO_LARGE
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0 < 400
    many = ("SELECT a.singer_id, 'sqlarbiter_many' FROM singer a, singer b, singer c, singer d, singer e, singer f, "
            "singer g, singer h, singer i")  # 6^9 ~ 10 million rows
    t = time.perf_counter()
    cols, rows = c.run(many, 60.0, 10)
    assert len(cols) == 2 and len(rows) == 11 and time.perf_counter() - t < 10
    deadline = time.monotonic() + 15
    while _running(server, "sqlarbiter_many") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running(server, "sqlarbiter_many") == 0  # cancelled / its connection dropped, not left running
    assert c.run("SELECT count(*) FROM singer", 5.0, 10)[1] == [(6,)]
    assert c.run("SELECT name FROM singer WHERE 1 = 0", 5.0, 10) == (["name"], [])  # columns without rows


def test_pooled_sessions_start_clean(server):
    """Session state a candidate could leave behind (the guard refuses these functions; here they run through
    `ServerConn.run` itself) is gone before the next candidate's query on the same pooled session."""
    c = _server_conn(server)
    if server.kind == "postgresql":
        pid = c.run("SELECT pg_backend_pid()", 5.0, 10)[1][0][0]
        c.run("SELECT set_config('sqlarbiter.leak', 'yes', false), set_config('search_path', 'pg_catalog', false), "
              "pg_advisory_lock(4242), pg_advisory_xact_lock(4243)", 5.0, 10)
        assert server.q("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] == 0
        assert c.run("SELECT pg_backend_pid()", 5.0, 10)[1][0][0] == pid  # the same pooled session
        (leak, path), = c.run("SELECT current_setting('sqlarbiter.leak', true), current_setting('search_path')",
                              5.0, 10)[1]
        assert leak in (None, "") and path.strip() != "pg_catalog"
        assert server.q("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] == 0
    else:
        cid = c.run("SELECT CONNECTION_ID()", 5.0, 10)[1][0][0]
        default_mode = c.run("SELECT @@session.sql_mode", 5.0, 10)[1][0][0]
        c.run("SET @x = 42", 5.0, 10)
        c.run("SELECT name INTO @y FROM singer LIMIT 1", 5.0, 10)
        assert c.run("SELECT GET_LOCK('sqlarbiter_leak', 0), @z := 7", 5.0, 10)[1] == [(1, 7)]
        c.run("SET SESSION sql_mode = 'PIPES_AS_CONCAT'", 5.0, 10)
        assert server.q("SELECT IS_USED_LOCK('sqlarbiter_leak')") == [(None,)]  # released at once
        assert c.run("SELECT CONNECTION_ID()", 5.0, 10)[1][0][0] == cid  # the same pooled session
        rows = c.run("SELECT @x, @y, @z, IS_USED_LOCK('sqlarbiter_leak'), @@session.sql_mode", 5.0, 10)[1]
        assert rows == [(None, None, None, None, default_mode)]
