"""Least privilege, enforced (sqlbox.privileges): a server database is refused before anything reads it when
its role can do more than read, unless the configuration opts it in by name (then every plan says so), and
`sqlarbiter databases grant-readonly` makes a role that passes.

The server tests load Spider's concert_singer into a throwaway database on the local PostgreSQL and MariaDB
(.ci/postgres.sh, .ci/mariadb.sh; the admins are `postgres`, a superuser, and `sqlarbiter`, ALL PRIVILEGES WITH
GRANT OPTION) and make throwaway roles; everything is dropped afterwards. They skip, saying why, only when no
server answers."""

from __future__ import annotations

import uuid

import pytest

from core.model import Question, Score
from core.settings import spider_dir
from discriminators.base import DISCRIMINATORS
from generators.base import GENERATORS, GenerationResult
from sqlbox.admin import load_spider
from sqlbox.databases import DatabaseRegistry
from sqlbox.executor import Executor
from sqlbox.privileges import (
    PrivilegeError,
    grant_readonly,
    grant_readonly_sql,
    parse_grant,
    role_problems,
)
from sqlbox.servers.pool import dispose_all
from sqlbox.servers.targets import parse_target

CS = spider_dir() / "database" / "concert_singer" / "concert_singer.sqlite"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432"
MY_ADMIN = "mysql://sqlarbiter@127.0.0.1:3306"


# --------------------------------------------------------------------------- no server needed


def test_grant_lines_parse():
    g = parse_grant("GRANT SELECT (`a`, `b`), INSERT (`c`) ON `shop`.`orders` TO `r`@`%`")
    assert (g.privileges, g.on, g.grantee, g.grant_option) == (["SELECT", "INSERT"], "`shop`.`orders`", "`r`@`%`", False)
    g = parse_grant("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` IDENTIFIED BY PASSWORD '*AB' WITH GRANT OPTION")
    assert (g.privileges, g.on, g.grantee, g.grant_option) == (["ALL PRIVILEGES"], "*.*", "`root`@`localhost`", True)
    g = parse_grant("GRANT `readers` TO `u`@`h`")
    assert g.role == "`readers`" and g.privileges == []
    assert parse_grant("GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION").privileges == ["PROXY"]
    assert parse_grant("not a grant") is None


def test_grant_readonly_ddl():
    _, pg = parse_target("postgresql://admin@db.internal:5432/sales?include=public.*,audit.*")
    ddl = grant_readonly_sql(pg, "reader")
    assert ddl[0] == "CREATE ROLE reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
    assert "GRANT CONNECT ON DATABASE sales TO reader" in ddl
    for schema in ("public", "audit"):
        assert f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO reader" in ddl
        assert f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO reader" in ddl
        assert f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC" in ddl
    assert grant_readonly_sql(pg, "reader", exists=True)[0].startswith("ALTER ROLE reader LOGIN NOSUPERUSER")
    _, my = parse_target("mysql://root@db.internal/shop_eu")
    assert grant_readonly_sql(my, "reader") == ["CREATE USER IF NOT EXISTS 'reader'@'%'",
                                                "GRANT SELECT ON `shop\\_eu`.* TO 'reader'@'%'"]
    _, local = parse_target("mysql://root@127.0.0.1/shop")
    assert [s for s in grant_readonly_sql(local, "r") if s.startswith("CREATE")] == [
        "CREATE USER IF NOT EXISTS 'r'@'127.0.0.1'", "CREATE USER IF NOT EXISTS 'r'@'localhost'"]
    for bad in ("x; DROP TABLE t", "1abc", ""):
        with pytest.raises(ValueError, match="role name"):
            grant_readonly_sql(pg, bad)


def test_grant_readonly_prints_without_a_server(capsys):
    from cli.main import main

    assert main(["databases", "grant-readonly", "postgresql://postgres@127.0.0.1:1/sales", "--role", "rd"]) == 0
    out = capsys.readouterr().out
    assert "CREATE ROLE rd LOGIN NOSUPERUSER" in out and "GRANT SELECT ON ALL TABLES IN SCHEMA public TO rd;" in out
    assert "ALTER ROLE rd PASSWORD" in out and "password_env" in out and "--apply" in out
    assert main(["databases", "grant-readonly", "postgresql://u:pw9@h/db"]) == 2
    assert "pw9" not in capsys.readouterr().err


# --------------------------------------------------------------------------- servers


def _admin(kind: str):
    if kind == "postgresql":
        psycopg = pytest.importorskip("psycopg")
        try:
            return psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3",
                                   autocommit=True)
        except psycopg.OperationalError as e:
            pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432: {str(e).splitlines()[0]}")
    pymysql = pytest.importorskip("pymysql")
    try:
        return pymysql.connect(host="127.0.0.1", port=3306, user="sqlarbiter", autocommit=True, connect_timeout=3)
    except pymysql.err.OperationalError as e:
        pytest.skip(f"no MariaDB server on 127.0.0.1:3306: {e}")


class Db:
    """A throwaway concert_singer on one server, its admin URL, and throwaway roles (dropped afterwards)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.admin = _admin(kind)
        self.name = f"sqlarbiter_p_{uuid.uuid4().hex[:10]}"
        base = PG_ADMIN if kind == "postgresql" else MY_ADMIN
        load_spider(CS, base + ("/postgres" if kind == "postgresql" else "/mysql"), self.name)
        self.admin_url = f"{base}/{self.name}"
        self.roles: list[str] = []

    def role(self) -> str:
        r = f"sqlarbiter_t_{uuid.uuid4().hex[:8]}"
        self.roles.append(r)
        return r

    def url(self, role: str) -> str:
        host = "127.0.0.1:5432" if self.kind == "postgresql" else "127.0.0.1:3306"
        return f"{self.kind}://{role}@{host}/{self.name}"

    def sql(self, *stmts: str, db: bool = False) -> None:
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={self.name}", autocommit=True) as c:
                for s in stmts:
                    c.execute(s)
            return
        cur = self.admin.cursor()
        for s in stmts:
            cur.execute(s)
        cur.close()

    def drop(self) -> None:
        dispose_all()
        if self.kind == "postgresql":
            self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            for r in self.roles:
                self.admin.execute(f"DROP ROLE IF EXISTS {r}")
        else:
            cur = self.admin.cursor()
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            for r in self.roles:
                for h in ("127.0.0.1", "localhost", "%"):
                    cur.execute(f"DROP USER IF EXISTS '{r}'@'{h}'")
            for db in getattr(self, "extra_dbs", []):
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        self.admin.close()


@pytest.fixture(scope="module", params=[pytest.param("postgresql", marks=pytest.mark.postgres),
                                        pytest.param("mysql", marks=pytest.mark.mariadb)])
def db(request):
    if not CS.is_file():
        pytest.skip(f"Spider concert_singer not found at {CS}")
    d = Db(request.param)
    yield d
    d.drop()


def _fix(db: Db) -> str:
    """What the refusal of the admin must tell the user to change."""
    return "ALTER ROLE postgres NOSUPERUSER" if db.kind == "postgresql" else "REVOKE ALL PRIVILEGES ON *.* FROM"


def test_admin_refused_before_anything_reads_it(db):
    reg = DatabaseRegistry()
    reg.register_url(db.admin_url, db_id="prod")
    for use in (lambda: reg.schema("prod"), lambda: reg.verify("prod")):
        with pytest.raises(PrivilegeError) as e:
            use()
        msg = str(e.value)
        assert "'prod'" in msg and "refused" in msg and _fix(db) in msg and 'privileged_databases = ["prod"]' in msg
        assert "grant-readonly" in msg
    # the executor refuses in the parent, before any sandbox worker sees the database; a check is no verdict
    with Executor(reg, timeout_s=5) as ex:
        with pytest.raises(PrivilegeError):
            ex.execute("prod", "SELECT count(*) FROM singer")
        assert ex.pool is not None and ex.pool.alive == 0
    with Executor(reg, timeout_s=5, isolation="none") as ex, pytest.raises(PrivilegeError):
        ex.execute("prod", "SELECT count(*) FROM singer")


def test_grant_readonly_then_accepted_through_the_cli(db, capsys):
    from cli.main import main

    assert main(["databases", "--data", db.admin_url]) == 2
    cap = capsys.readouterr()
    assert "refused" in cap.out and _fix(db) in cap.err
    role = db.role()
    assert main(["databases", "grant-readonly", db.admin_url, "--role", role, "--apply"]) == 0
    out = capsys.readouterr().out
    assert "applied" in out and f"verified: {db.url(role)} can only read" in out
    assert main(["databases", "--data", db.url(role), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"role": "read-only"' in out and '"n_tables": 4' in out
    assert main(["check", "--data", db.url(role), "--db", db.name, "SELECT count(*) FROM singer"]) == 0
    assert "ok: 1 row(s)" in capsys.readouterr().out
    assert main(["check", "--data", db.admin_url, "--db", db.name, "SELECT count(*) FROM singer"]) == 2
    assert _fix(db) in capsys.readouterr().err
    # --apply again on an existing role: the same role, still read-only
    assert main(["databases", "grant-readonly", db.admin_url, "--role", role, "--apply"]) == 0
    assert "verified" in capsys.readouterr().out


def test_each_extra_privilege_is_named_with_its_fix(db):
    role = db.role()
    assert grant_readonly(db.admin_url, role, apply=True).problems == []
    _, target = parse_target(db.url(role))
    if db.kind == "postgresql":
        db.sql(f"GRANT pg_read_server_files TO {role}", f"GRANT pg_monitor TO {role}", f"ALTER ROLE {role} CREATEDB",
               f"GRANT INSERT ON singer TO {role}", f"GRANT CREATE ON SCHEMA public TO {role}",
               f"GRANT CREATE ON DATABASE {db.name} TO {role}")
        wanted = [f"REVOKE pg_read_server_files FROM {role}",
                  f"member of pg_read_all_settings: REVOKE pg_monitor FROM {role}",  # through pg_monitor
                  f"ALTER ROLE {role} NOCREATEDB",
                  f"can write 1 table(s) (public.singer): REVOKE INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER ON ALL "
                  f"TABLES IN SCHEMA public FROM {role}",
                  f"REVOKE CREATE ON SCHEMA public FROM {role}", f"REVOKE CREATE ON DATABASE {db.name} FROM {role}"]
        undo = [f"REVOKE pg_read_server_files FROM {role}", f"REVOKE pg_monitor FROM {role}",
                f"ALTER ROLE {role} NOCREATEDB", f"REVOKE INSERT ON singer FROM {role}",
                f"REVOKE CREATE ON SCHEMA public FROM {role}", f"REVOKE CREATE ON DATABASE {db.name} FROM {role}"]
    else:
        other = f"{db.name}_x"
        db.extra_dbs = [other]
        acct = f"'{role}'@'localhost'"
        db.sql(f"CREATE DATABASE `{other}`", f"GRANT FILE, PROCESS ON *.* TO {acct}",
               f"GRANT INSERT ON `{db.name}`.singer TO {acct}", f"GRANT SELECT ON `{other}`.* TO {acct}",
               f"GRANT SELECT ON mysql.user TO {acct}")
        wanted = [f"has FILE (it reads and writes server files): REVOKE FILE ON *.* FROM `{role}`@`localhost`",
                  f"REVOKE PROCESS ON *.* FROM `{role}`@`localhost`",
                  f"REVOKE INSERT ON `{db.name}`.`singer` FROM `{role}`@`localhost`",
                  f"REVOKE SELECT ON `{other}`.* FROM `{role}`@`localhost`",
                  f"the mysql schema; only the registered database {db.name} is allowed): "
                  f"REVOKE SELECT ON `mysql`.`user` FROM"]
        undo = [f"REVOKE FILE, PROCESS ON *.* FROM {acct}", f"REVOKE INSERT ON `{db.name}`.singer FROM {acct}",
                f"REVOKE SELECT ON `{other}`.* FROM {acct}", f"REVOKE SELECT ON mysql.user FROM {acct}"]
    problems = role_problems(target)
    for w in wanted:
        assert any(w in p for p in problems), (w, problems)
    assert len(problems) == len(wanted), problems
    # refused while it has them (a refusal is not cached: the fixed role passes without a restart)
    reg = DatabaseRegistry()
    reg.register_url(db.url(role), db_id="r")
    with pytest.raises(PrivilegeError):
        reg.verify("r")
    db.sql(*undo)
    assert role_problems(target) == [] and reg.verify("r") == []
    assert len(reg.schema("r").tables) == 4


@GENERATORS.register("test-priv-fixed")
class _FixedGenerator:
    def __init__(self, spec=None, **_):
        self.name = spec.name

    def generate(self, request):
        sqls = ["SELECT count(*) FROM singer"] * request.params.n
        return GenerationResult(sqls=sqls, raw=sqls, model=self.name, prompt_tokens=1, completion_tokens=1)


@DISCRIMINATORS.register("test-priv-yes")
class _YesDiscriminator:
    def __init__(self, spec=None, **_):
        self.name = spec.name

    def score(self, request):
        return [Score(score=0.9, verdict=True, discriminator=self.name, checkpoint=self.name) for _ in request.sqls]


def _config(databases, privileged=(), tmp_path=None):
    from planner.config import config_from_dict

    data = {"generators": {"g": {"backend": "test-priv-fixed"}}, "discriminators": {"d": {"backend": "test-priv-yes"}},
            "pairs": {"p": {"generator": "g", "discriminator": "d"}}, "databases": list(databases),
            "privileged_databases": list(privileged)}
    if tmp_path is not None:
        data["store_url"] = f"sqlite:///{tmp_path / 'store.db'}"
    return config_from_dict(data, env={})


def test_opted_in_by_name_and_every_plan_says_so(db):
    from planner.pipeline import Planner, build_registry

    url = f"{db.admin_url}?id=prod"
    # not opted in: the plan is refused, saying what to change
    p = Planner(_config([url]))
    try:
        with pytest.raises(PrivilegeError, match="refused"):
            p.plan(Question(text="How many singers?", db_id="prod"), n=1, policy="vote")
    finally:
        p.close()
    # opted in by name: it runs, and each plan carries the warning
    reg = build_registry(_config([url], privileged=["prod"]))
    p = Planner(_config([url], privileged=["prod"]), registry=reg)
    try:
        for _ in range(2):
            plan = p.plan(Question(text="How many singers?", db_id="prod"), n=1, policy="vote", execute=True)
            assert plan.status == "ok" and plan.preview.rows == [[6]]
            assert len(plan.warnings) == 1 and "opted in by privileged_databases" in plan.warnings[0]
            assert _fix(db) in plan.warnings[0]
        plan = p.plan(Question(text="How many singers?", db_id="demo"), n=1, policy="vote")
        assert plan.warnings == []  # only the opted-in database's plans
    finally:
        p.close()
    other = DatabaseRegistry(privileged=["other_id"])  # opting in another id does not cover this one
    other.register_url(url)
    with pytest.raises(PrivilegeError):
        other.verify("prod")


def test_service_answers_403_for_a_refused_database(db, tmp_path, caplog):
    from fastapi.testclient import TestClient

    from api.app import create_app

    role = db.role()
    assert grant_readonly(db.admin_url, role, apply=True).problems == []
    cfg = _config([f"{db.admin_url}?id=prod", f"{db.url(role)}?id=ro"], tmp_path=tmp_path)
    with caplog.at_level("ERROR"), TestClient(create_app(cfg), raise_server_exceptions=False) as c:
        assert any("DATABASE prod REFUSED" in r.getMessage() for r in caplog.records)  # said at startup
        for r in (c.post("/check", json={"db_id": "prod", "sql": "SELECT 1"}), c.get("/databases/prod/schema"),
                  c.post("/plan", json={"question": "How many singers?", "db_id": "prod", "n": 1, "policy": "vote"})):
            assert r.status_code == 403, r.text
            assert _fix(db) in r.json()["detail"] and "privileged_databases" in r.json()["detail"]
        r = c.post("/check", json={"db_id": "ro", "sql": "SELECT count(*) FROM singer"})
        assert r.status_code == 200 and r.json()["rows"] == [[6]]
        r = c.post("/plan", json={"question": "How many singers?", "db_id": "ro", "n": 1, "policy": "vote"})
        assert r.status_code == 200 and r.json()["warnings"] == []
