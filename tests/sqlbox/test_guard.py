"""The SQL guard: single read-only queries pass; everything else is rejected with a reason."""

import pytest
from sqlglot import exp

from sqlbox.guard import MAX_SQL_CHARS, ParseFailure, Rejected, guard, normalize, transpile

ACCEPTED = [
    "SELECT count(*) FROM singer WHERE age > 30",
    "select T1.name from singer as T1 join singer_in_concert as T2 on T1.singer_id = T2.singer_id",
    "SELECT name FROM singer UNION SELECT name FROM stadium",
    "SELECT name FROM singer INTERSECT SELECT name FROM singer EXCEPT SELECT 'x'",
    "WITH old AS (SELECT * FROM singer WHERE age > 40) SELECT count(*) FROM old",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT * FROM c",
    "(SELECT 1)",
    "SELECT * FROM singer;",
    "SELECT * FROM singer; -- trailing comment",
    "SELECT 1 /* ; DROP TABLE singer */",
    'SELECT name FROM singer WHERE country = "France"',
    "SELECT * FROM range(10)",
    "SELECT * FROM generate_series(1, 100, 2)",
    "SELECT * FROM sqlite_master",
]

REJECTED = {
    "DROP TABLE singer": "DROP",
    "delete from singer": "DELETE",
    "UPDATE singer SET age = 1": "UPDATE",
    "INSERT INTO singer VALUES (1)": "INSERT",
    "CREATE TABLE x (a int)": "CREATE",
    "CREATE VIEW v AS SELECT 1": "CREATE",
    "ALTER TABLE singer ADD COLUMN x int": "ALTER",
    "ATTACH 'x.db' AS x": "ATTACH",
    "DETACH x": "DETACH",
    "COPY singer TO '/tmp/x.csv'": "COPY",
    "PRAGMA table_info(singer)": "PRAGMA",
    "INSTALL httpfs": "not a query",
    "LOAD httpfs": "command",
    "SET memory_limit = '10GB'": "SET",
    "RESET memory_limit": "not a query",
    "CALL pragma_version()": "command",
    "SELECT sqlite_version()": "sqlite_version",
    "VACUUM": "command",
    "BEGIN": "transaction",
    "SELECT 1; SELECT 2": "multiple statements",
    "SELECT 1; DROP TABLE singer": "multiple statements",
    "WITH d AS (DELETE FROM singer RETURNING *) SELECT * FROM d": "DELETE",
    "SELECT * INTO t2 FROM singer": "INTO",
    "SELECT * FROM read_csv('/etc/passwd')": "read_csv",
    "SELECT * FROM read_csv_auto('/etc/passwd')": "read_csv",
    "SELECT * FROM read_parquet('x.parquet')": "read_parquet",
    "SELECT * FROM read_json('x.json')": "read_json",
    "SELECT read_text('/etc/passwd')": "read_text",
    "SELECT * FROM read_blob('/etc/passwd')": "read_blob",
    "SELECT * FROM sqlite_scan('/x.db', 't')": "sqlite_scan",
    "SELECT * FROM parquet_scan('x')": "parquet_scan",
    "SELECT getenv('HOME')": "getenv",
    "SELECT current_setting('memory_limit')": "current_setting",
    "SELECT load_extension('x')": "load_extension",
    "SELECT readfile('/etc/passwd')": "readfile",
    "SELECT * FROM duckdb_settings()": "duckdb_settings",
    "SELECT * FROM pragma_table_info('singer')": "pragma_table_info",
    "SELECT * FROM query('DROP TABLE singer')": "query",
    "SELECT * FROM '/etc/passwd'": "file path",
    'SELECT * FROM "/etc/passwd"': "file path",
    "SELECT * FROM 'data.csv'": "file path",
    "SELECT * FROM range(100000000000)": "more than",
    "SELECT * FROM range((SELECT max(age) FROM singer))": "literal",
    "SELECT * FROM generate_series(1, 10, 0)": "step 0",
    "SELECT * FROM some_table_function(1)": "not allowed",
    "EXPLAIN SELECT 1": "command",
    "DESCRIBE singer": "DESCRIBE",
    "checkpoint": "not a query",
    "": "empty",
    "   ;  ": "empty",
}


@pytest.mark.parametrize("sql", ACCEPTED)
def test_accepts_read_only_queries(sql):
    assert isinstance(guard(sql), exp.Expression)


@pytest.mark.parametrize("sql,reason", list(REJECTED.items()))
def test_rejects_with_reason(sql, reason):
    with pytest.raises(Rejected) as ei:
        guard(sql)
    assert reason.lower() in ei.value.reason.lower()


def test_case_and_comment_tricks():
    for sql in ["dRoP tAbLe singer", "/* hi */ DELETE FROM singer", "SELECT 1;\n--x\nDROP TABLE singer",
                "sElEcT * FrOm ReAd_CsV('/etc/passwd')", "select * from (select * from (select GETENV('x')))"]:
        with pytest.raises(Rejected):
            guard(sql)


def test_parse_failures_are_a_kind_of_rejection():
    with pytest.raises(ParseFailure):
        guard("SELEC name FROM")
    with pytest.raises(ParseFailure):
        guard("SELECT")
    with pytest.raises(Rejected, match="longer than"):
        guard("SELECT " + "1+" * MAX_SQL_CHARS + "1")
    with pytest.raises(Rejected):
        guard(None)  # type: ignore[arg-type]


def test_duckdb_dialect():
    assert guard("FROM singer", dialect="duckdb")
    with pytest.raises(Rejected):
        guard("INSTALL httpfs", dialect="duckdb")


def test_normalize_formatting_case_aliases():
    a = normalize("select T1.Name from Singer as T1 where T1.age > 3;")
    b = normalize("SELECT name   FROM singer\nWHERE age>3")
    assert a[1] == b[1]
    assert b[0] == "SELECT name FROM singer WHERE age > 3"
    c = normalize("SELECT name FROM singer WHERE name = 'Ab'")
    d = normalize("SELECT name FROM singer WHERE name = 'ab'")
    assert c[1] != d[1]  # string literals keep their case
    j1 = normalize("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.sid")
    j2 = normalize("select singer.name from singer join concert on singer.id = concert.sid")
    assert j1[1] == j2[1]
    assert normalize("SELECT age FROM singer")[1] != normalize("SELECT name FROM singer")[1]


def test_normalize_never_raises():
    canon, key = normalize("this is   not SQL (")
    assert canon == "this is not SQL (" and key


def test_transpile():
    assert transpile("SELECT ifnull(a, b) FROM t", "sqlite", "duckdb") == "SELECT COALESCE(a, b) FROM t"
    with pytest.raises(ParseFailure):
        transpile("SELECT * FROM (", "sqlite", "duckdb")


# --------------------------------------------------------------------------- classes of attack, every dialect

DIALECTS = ["sqlite", "duckdb", "postgres", "mysql"]

# text an engine could read differently from sqlglot: refused whatever the dialect
AMBIGUOUS = [
    "SELECT name FROM singer /*!50000 INTO OUTFILE '/tmp/x' */",
    "SELECT 1 /*! , version() */",
    "SELECT 1 /*M! , version() */",
    "SELECT 1 /*m!100000 , 2 */",
    "SELECT 1 --1\n, 2",
    "SELECT 1 --x\n",
    "SELECT 1 /* a /* b */ , 2",
    "SELECT 1 /* unterminated",
    "SELECT /*+ SET_VAR(max_statement_time=0) */ 1",
]


@pytest.mark.parametrize("dialect", ["postgres", "duckdb"])
def test_escape_strings_are_refused(dialect):
    """E'a\\'' is one string to sqlglot and a string plus code to PostgreSQL: refused, whatever follows."""
    for sql in ("SELECT E'a'", "SELECT E'a\\'' AS x, pg_read_file('/etc/passwd') AS y --'"):
        with pytest.raises(Rejected):
            guard(sql, dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", AMBIGUOUS)
def test_text_read_differently_by_an_engine_is_refused(sql, dialect):
    with pytest.raises(Rejected):
        guard(sql, dialect)


def test_hash_comments_are_refused_where_the_dialect_has_them():
    with pytest.raises(Rejected, match="'#'"):
        guard("SELECT 1 # x\n, 2", "mysql")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_comments_never_reach_the_engine(dialect):
    from sqlbox.guard import render

    tree = guard("SELECT 1 -- */ , pg_read_file('/etc/passwd') /*\n", dialect)
    assert render(tree, dialect) == "SELECT 1"
    tree = guard("SELECT /* x */ name FROM singer -- y", dialect)
    out = render(tree, dialect)
    assert "/*" not in out and "--" not in out


# functions an analytical query never needs: files, SQL or paths in strings, settings, accounts, sessions,
# sleeping, locks, sequences, huge values
FORBIDDEN_FUNCS = [
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export", "dblink",
    "query_to_xml", "ts_stat", "xpath", "current_setting", "set_config", "pg_sleep", "pg_advisory_lock",
    "nextval", "version", "current_database", "inet_server_addr", "pg_backend_pid", "load_file", "sleep",
    "benchmark", "get_lock", "user", "database", "connection_id", "sys_exec", "read_csv", "read_text",
    "getenv", "load_extension", "readfile", "writefile", "sqlite_version", "zeroblob", "randomblob", "printf",
    "repeat", "space", "lpad", "json_execute_serialized_sql", "query", "query_table", "glob",
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("name", FORBIDDEN_FUNCS)
def test_functions_off_the_allowlist_are_refused_however_spelled(name, dialect):
    q = "`" if dialect == "mysql" else '"'
    spellings = [f"{name}('x')", f"{name.upper()}('x')", f"{q}{name}{q}('x')", f"pg_catalog.{name}('x')",
                 f"pg_catalog.{q}{name}{q}('x')", f"{q}PG_CATALOG{q}.{q}{name}{q}('x')", f"main.{name}('x')"]
    for call in spellings:
        for sql in (f"SELECT {call}", f"SELECT name FROM singer WHERE name = {call}", f"SELECT * FROM {call}"):
            try:
                guard(sql, dialect, relations=["singer"])
            except Rejected:
                continue
            raise AssertionError(f"{dialect}: {sql} passed the guard")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_allowed_functions_run_as_the_builtin(dialect):
    from sqlbox.guard import render

    out = render(guard("SELECT pg_catalog.lower(name), count(*), max(age) FROM singer GROUP BY name", dialect),
                 dialect)
    assert "pg_catalog" not in out.lower()


CATALOGS = [
    "information_schema.tables", "information_schema.schemata", "pg_catalog.pg_database", "pg_database",
    "pg_stat_activity", "pg_file_settings", "pg_config", "pg_authid", "pg_settings", "mysql.user",
    "mysql.global_priv", "mysql.db", "performance_schema.threads", "sys.version", "sqlite_master",
    "sqlite_schema", "main.sqlite_master", "duckdb_tables", "duckdb_settings", "pragma_database_list",
    "other_db.singer", "public.singer", "src.singer", "temp.sqlite_temp_master",
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("rel", CATALOGS)
def test_catalogs_and_other_databases_are_refused(rel, dialect):
    for sql in (f"SELECT * FROM {rel}", f"SELECT name FROM singer WHERE name IN (SELECT 1 FROM {rel})",
                f"WITH x AS (SELECT * FROM {rel}) SELECT * FROM singer"):
        with pytest.raises(Rejected):
            guard(sql, dialect, relations=["singer", "concert"])


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_bare_account_keywords_stay_columns(dialect):
    from sqlbox.guard import render

    out = render(guard("SELECT user, session_user, current_role FROM singer", dialect), dialect)
    q = "`" if dialect == "mysql" else '"'
    assert f"{q}user{q}" in out and f"{q}session_user{q}" in out


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])  # DuckDB's @ is abs()
def test_variables_parameters_and_into_are_refused(dialect):
    for sql in ("SELECT @x", "SELECT @@datadir", "SELECT name FROM singer WHERE age > $1",
                "SELECT name FROM singer WHERE age > ?", "SELECT name INTO @v FROM singer"):
        with pytest.raises(Rejected):
            guard(sql, dialect)


def test_the_allowlist_covers_the_gold_sql():
    """Every Spider/BIRD gold query that is a single query passes the function allowlist (the allowlist is what
    analytical queries use)."""
    import json

    from core.settings import spider_dir

    spider = spider_dir()
    if not (spider / "dev.json").is_file():
        pytest.skip(f"Spider not found at {spider}")
    refused = []
    for name in ("dev.json", "train_spider.json"):
        for e in json.loads((spider / name).read_text()):
            try:
                guard(e["query"], "sqlite")
            except ParseFailure:
                continue
            except Rejected as err:
                refused.append((e["query"], err.reason))
    assert refused == []
