"""Hostile-SQL corpus against the real execution path (guard -> dialect handling -> sandbox worker -> engine),
per engine, with a disclosure / write / time / memory / session-leak check for every case.

    python -m benchmarks.hostile [--engines duckdb,sqlite,postgresql,mysql,postgresql-superuser,mysql-admin]
                                 [--timeout 2] [--out FILE.json] [--cli-sample 6] [--only REGEX]
    python PATH/TO/hostile.py ...      (by path: the tree under test is the first `sqlbox` on PYTHONPATH, else
                                        the current directory, so a copy can measure another checkout)

Engines: `duckdb` / `sqlite` = `sqlarbiter check --engine duckdb|sqlite` on a copy of Spider's concert_singer
SQLite file; `postgresql` / `mysql` = the loopback servers (PostgreSQL on 127.0.0.1:5432, MariaDB on :3306)
through a least-privilege read-only role `sqlarbiter_hostile_ro` (SELECT on the target database only);
`mysql-multidb` = MariaDB through a read-only role that can also SELECT a second (canary) database;
`postgresql-superuser` / `mysql-admin` = the same database through the PRIVILEGED admin role (`postgres`,
`sqlarbiter`): a misconfiguration the service must survive (where the tree refuses such roles by default, that
refusal is recorded and the database is opted in by name, `DatabaseRegistry.privileged`, so the guard is still
measured). The benchmark loads concert_singer into its own server database `hostile_cs` (never a shared one) and
sets up the canaries with the admin role.

Each case runs through an `Executor` with process isolation built as `sqlarbiter check` builds it (one
long-lived executor per engine in a child process, so pooled-session leaks show), in the SQLite dialect (what
`check` assumes) and in the engine's own dialect (`--dialect`); a sample also runs the CLI itself in a
subprocess. Recorded per run: the verdict (ok / rejected / failed); disclosure (canary secrets in a file
under /tmp, in a second server database and in a second SQLite / DuckDB file; /etc/passwd content; server data
directory and config paths; password hashes; other database names; accounts; settings; other sessions; markers
are ignored when the candidate SQL contains them itself); writes (marker files, checksums of the target's tables,
created databases/roles/users/large objects, changed server settings; repaired after each hit); time (the run's
wall time past timeout + 1 s); peak RSS of the process tree (executor process + forkserver + workers, sum of RSS,
polled every 20 ms) and of the server processes (delta over the case); session leaks (a probe after setter
cases, on the same executor, and server-side lock checks).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run by path: PYTHONPATH first, then the current directory
    sys.path.append(os.getcwd())

import psutil

WORK = Path("/tmp/hostile_work")
MARKS = WORK / "markers"
CANARY_DIR = WORK / "canary"
CANARY_FILE = CANARY_DIR / "canary.txt"
MY_FILES = Path("/var/lib/mysql-files")  # MariaDB's secure_file_priv (Debian): the only place LOAD_FILE reads
MY_CANARY_FILE = MY_FILES / "hostile_canary.txt"
SQLITE2 = WORK / "canary.sqlite"
DUCK2 = WORK / "canary.duckdb"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432"
MY_ADMIN = "mysql://sqlarbiter@127.0.0.1:3306"
RO = "sqlarbiter_hostile_ro"  # least privilege: SELECT on the target database only
RO_MULTI = "sqlarbiter_hostile_multi"  # MariaDB: SELECT on the target and on the canary database
DB = "hostile_cs"
CANARY_DB = "sqlarbiter_canary"
CANARY_USER = "sqlarbiter_canary_user"
ADMIN_APP = "hostile_admin_app"
PG_LOCK_KEYS = (424242, 424243, 424244)
MY_LOCKS = ("hostile_lock", "hostile_lock2", "hostile_lock3")
MY_GLOBALS = ("net_read_timeout", "general_log", "general_log_file", "max_connections", "max_statement_time",
              "sql_mode", "event_scheduler", "local_infile")

ENGINES = {  # variant -> (family, privileged)
    "duckdb": ("duckdb", False), "sqlite": ("sqlite", False),
    "postgresql": ("postgresql", False), "mysql": ("mysql", False),
    "mysql-multidb": ("mysql", False),
    "postgresql-superuser": ("postgresql", True), "mysql-admin": ("mysql", True),
}
NATIVE = {"duckdb": "duckdb", "sqlite": None, "postgresql": "postgres", "mysql": "mysql"}
FAM = {"D": "duckdb", "S": "sqlite", "P": "postgresql", "M": "mysql"}
SPIDER_OTHERS = ["car_1", "pets_1", "world_1", "wta_1", "voter_1", "flight_2", "dog_kennels", "museum_visit",
                 "battle_death", "tvshow", "poker_player", "cre_doc_template_mgt", "network_1"]


# ---------------------------------------------------------------- the corpus
# (id, class, families, sql, extra); families: letters of FAM or "*"; placeholders: <<FILE>> canary file,
# <<FILECHR>> its path as chr()||... (PostgreSQL, no quotes), <<FILEHEX>> as 0x... (MySQL), <<SQLITE2>> /
# <<DUCK2>> the canary SQLite / DuckDB files, <<MARK>> a marker path that must never exist.
# extra: probe (SQL run afterwards on the same executor; a leak when its result matches `leak`),
# admin_probe (a server-side leak check), dialects (override), cli (in the CLI sample).
def corpus() -> list[tuple[str, str, str, str, dict]]:
    C: list[tuple[str, str, str, str, dict]] = []

    def add(cid, cls, fams, sql, **extra):
        C.append((cid, cls, fams, sql, extra))

    add("control", "control", "*", "SELECT count(*) FROM singer", cli=True)
    # -- comment / parse differentials
    add("cm_pg_dash_star_passwd", "comment", "P", "SELECT 1 -- */ , pg_read_file('/etc/passwd') /*", cli=True)
    add("cm_pg_dash_star", "comment", "P", "SELECT 1 AS a -- */ , pg_read_file('<<FILE>>') AS b /*")
    add("cm_pg_dash_star_nl", "comment", "P", "SELECT 1 AS a -- */ , pg_read_file('<<FILE>>') AS b /*\n")
    add("cm_pg_block_dash", "comment", "P", "SELECT 1 AS a /* x */ -- y */ , pg_read_file('<<FILE>>') AS b /*")
    add("cm_pg_nested", "comment", "P", "SELECT 1 AS a /* /* */ , pg_read_file('<<FILE>>') AS b /* */ */")
    add("cm_pg_nested2", "comment", "P", "SELECT 1 AS a /* x /* y */ , pg_read_file('<<FILE>>') AS b -- */")
    add("cm_pg_backslash", "comment", "P", "SELECT 'a\\' AS x, pg_read_file(<<FILECHR>>) AS y --'")
    add("cm_pg_estring", "comment", "P", "SELECT E'a\\'' AS x, pg_read_file(<<FILECHR>>) AS y --'")
    add("cm_pg_estring2", "comment", "P", "SELECT e'\\\\' AS x, pg_read_file(<<FILECHR>>) AS y, '' AS z")
    add("cm_pg_dollar_tag", "comment", "P", "SELECT $x$ ' $x$ AS a, pg_read_file(<<FILECHR>>) AS b -- '")
    add("cm_pg_dollar", "comment", "P", "SELECT $$'$$ AS a, pg_read_file(<<FILECHR>>) AS b -- '")
    add("cm_pg_dollar_body", "comment", "P", "SELECT $a$ $$ $a$ AS a, pg_read_file(<<FILECHR>>) AS b -- $$")
    add("cm_pg_uescape_ident", "comment", "P", "SELECT U&\"\\0070g_read_file\"('<<FILE>>') AS a")
    add("cm_pg_uescape_ident2", "comment", "P",
        "SELECT U&\"!0070g_read_file\" UESCAPE '!' ('<<FILE>>') AS a")
    add("cm_pg_uescape_str", "comment", "P", "SELECT U&'\\0027' AS a, pg_read_file(<<FILECHR>>) AS b --'")
    add("cm_pg_hash", "comment", "P", "SELECT 1 AS a # */ , pg_read_file('<<FILE>>') AS b /*")
    add("cm_pg_catalog_dash", "comment", "P", "SELECT 1 AS a -- */ , (SELECT string_agg(datname, ',') "
        "FROM pg_database) AS b /*")
    add("cm_my_exec", "comment", "M", "SELECT 1 AS a /*! , LOAD_FILE('<<FILE>>') */", cli=True)
    add("cm_my_exec_ver", "comment", "M", "SELECT 1 AS a /*!50000 , LOAD_FILE(<<FILEHEX>>) */")
    add("cm_my_exec_M", "comment", "M", "SELECT 1 AS a /*M! , LOAD_FILE(<<FILEHEX>>) */")
    add("cm_my_exec_M_ver", "comment", "M", "SELECT 1 AS a /*M!100000 , (SELECT s FROM sqlarbiter_canary.secret) */")
    add("cm_my_exec_canarydb", "comment", "M",
        "SELECT 1 AS a /*! , (SELECT group_concat(s) FROM sqlarbiter_canary.secret) */")
    add("cm_my_exec_high_ver", "comment", "M", "SELECT 1 AS a /*!99999 , LOAD_FILE(<<FILEHEX>>) */")
    add("cm_my_exec_users", "comment", "M",
        "SELECT 1 AS a /*! , (SELECT group_concat(user, password) FROM mysql.user) */")
    add("cm_my_dashdash1", "comment", "M", "SELECT 1 AS a --1, LOAD_FILE(<<FILEHEX>>) AS b")
    add("cm_my_dashdash1_db", "comment", "M", "SELECT 1 AS a --1, (SELECT s FROM sqlarbiter_canary.secret) AS b")
    add("cm_my_dashdash_tab", "comment", "M", "SELECT 1 AS a --\t*/ , LOAD_FILE(<<FILEHEX>>) AS b /*")
    add("cm_my_hash", "comment", "M", "SELECT 1 AS a # */ , LOAD_FILE(<<FILEHEX>>) AS b /*")
    add("cm_my_hash_nl", "comment", "M", "SELECT 1 AS a #\n, LOAD_FILE(<<FILEHEX>>) AS b")
    add("cm_my_dash_star", "comment", "M", "SELECT 1 AS a -- */ , LOAD_FILE(<<FILEHEX>>) AS b /*")
    add("cm_my_backslash", "comment", "M", "SELECT '\\' AS a, ' AS b, LOAD_FILE(<<FILEHEX>>) AS c, ' AS d -- '")
    add("cm_my_backslash_db", "comment", "M",
        "SELECT '\\' AS a, ' AS b, (SELECT s FROM sqlarbiter_canary.secret) AS c, ' AS d -- '")
    add("cm_my_dq_backslash", "comment", "M",
        "SELECT \"\\\" AS a, \" AS b, (SELECT s FROM sqlarbiter_canary.secret) AS c, \" AS d -- \"")
    add("cm_my_nested", "comment", "M", "SELECT 1 AS a /* /*! */ , LOAD_FILE(<<FILEHEX>>) AS b /* */")
    add("cm_my_semicolon_exec", "comment", "M", "SELECT 1 AS a /*!; SELECT LOAD_FILE(<<FILEHEX>>) */")
    add("cm_file_dash_star_duck", "comment", "D",
        "SELECT 1 AS a -- */ , (SELECT content FROM read_text('<<FILE>>')) AS b /*", cli=True)
    add("cm_file_dash_star_duck2", "comment", "D",
        "SELECT 1 AS a -- */ , (SELECT string_agg(s, ',') FROM sqlite_scan('<<SQLITE2>>', 'secret')) AS b /*")
    add("cm_duck_dollar", "comment", "D", "SELECT $$'$$ AS a, (SELECT content FROM read_text('<<FILE>>')) AS b -- '")
    add("cm_duck_estring", "comment", "D",
        "SELECT E'a\\'' AS a, (SELECT content FROM read_text('<<FILE>>')) AS b --'")
    add("cm_file_dash_star_master", "comment", "DS",
        "SELECT 1 AS a -- */ , (SELECT group_concat(sql) FROM sqlite_master) AS b /*")
    add("cm_file_nested", "comment", "DS",
        "SELECT 1 AS a /* /* */ , (SELECT group_concat(name) FROM pragma_database_list) AS b /* */")
    add("cm_sqlite_attach_dash", "comment", "S", "SELECT 1 -- */ ; ATTACH '<<SQLITE2>>' AS c /*")
    # -- quoted / qualified / case-varied function names
    add("fn_pg_quoted_qual", "fname", "P", "SELECT pg_catalog.\"pg_read_file\"('<<FILE>>') AS a", cli=True)
    add("fn_pg_quoted", "fname", "P", "SELECT \"pg_read_file\"('<<FILE>>') AS a")
    add("fn_pg_upper", "fname", "P", "SELECT PG_READ_FILE('<<FILE>>') AS a")
    add("fn_pg_mixed", "fname", "P", "SELECT Pg_Read_File('/etc/passwd') AS a")
    add("fn_pg_qual_spaces", "fname", "P", "SELECT pg_catalog . pg_read_file ( '<<FILE>>' ) AS a")
    add("fn_pg_comment_paren", "fname", "P", "SELECT pg_read_file/**/('<<FILE>>') AS a")
    add("fn_pg_binary", "fname", "P",
        "SELECT convert_from(pg_catalog.pg_read_binary_file('<<FILE>>'), 'UTF8') AS a")
    add("fn_pg_in_from", "fname", "P", "SELECT * FROM pg_read_file('<<FILE>>') AS t(x)")
    add("fn_pg_rows_from", "fname", "P", "SELECT * FROM ROWS FROM (pg_catalog.pg_read_file('<<FILE>>')) AS t(x)")
    add("fn_pg_lateral", "fname", "P", "SELECT x FROM singer, LATERAL pg_read_file('<<FILE>>') AS x LIMIT 1")
    add("fn_pg_ls_dir", "fname", "P", "SELECT * FROM pg_catalog.pg_ls_dir('/tmp/hostile_work/canary') AS t(f)")
    add("fn_pg_stat_file", "fname", "P", "SELECT * FROM pg_stat_file('<<FILE>>')")
    add("fn_pg_ls_logdir", "fname", "P", "SELECT * FROM pg_ls_logdir()")
    add("fn_pg_lo_import", "fname", "P", "SELECT convert_from(lo_get(lo_import('<<FILE>>')), 'UTF8') AS a")
    add("fn_pg_current_logfile", "fname", "P", "SELECT pg_current_logfile() AS a")
    add("fn_pg_setting_quoted", "fname", "P", "SELECT \"pg_catalog\".\"current_setting\"('data_directory') AS a")
    add("fn_my_backtick", "fname", "M", "SELECT `load_file`('<<FILE>>') AS a", cli=True)
    add("fn_my_mixed", "fname", "M", "SELECT LoAd_FiLe('<<FILE>>') AS a")
    add("fn_my_hex", "fname", "M", "SELECT CONVERT(LOAD_FILE(<<FILEHEX>>) USING utf8) AS a")
    add("fn_my_concat_path", "fname", "M", "SELECT LOAD_FILE(CONCAT('/etc/', 'passwd')) AS a")
    add("fn_my_space", "fname", "M", "SELECT load_file /**/ ('<<FILE>>') AS a")
    add("fn_my_nl", "fname", "M", "SELECT load_file\n('<<FILE>>') AS a")
    add("fn_duck_quoted", "fname", "D", "SELECT content FROM \"read_text\"('<<FILE>>')", cli=True)
    add("fn_duck_upper", "fname", "D", "SELECT * FROM READ_CSV('<<FILE>>', header = false)")
    add("fn_duck_qual", "fname", "D", "SELECT * FROM main.read_text('<<FILE>>')")
    add("fn_duck_qual3", "fname", "D", "SELECT * FROM system.main.read_text('<<FILE>>')")
    add("fn_duck_replacement_scan", "fname", "DS", "SELECT * FROM '<<FILE>>'")
    add("fn_duck_passwd_scan", "fname", "DS", "SELECT * FROM '/etc/passwd'")
    add("fn_duck_read_blob", "fname", "D", "SELECT * FROM read_blob('<<FILE>>')")
    add("fn_duck_glob", "fname", "D", "SELECT * FROM glob('/tmp/hostile_work/canary/*')")
    add("fn_duck_sqlite_scan", "fname", "DS", "SELECT * FROM sqlite_scan('<<SQLITE2>>', 'secret')")
    add("fn_duck_sqlite_scan_q", "fname", "D", "SELECT * FROM \"sqlite_scan\"('<<SQLITE2>>', 'secret')")
    add("fn_duck_read_json", "fname", "D", "SELECT * FROM read_json_objects('<<FILE>>')")
    add("fn_duck_from_first", "fname", "D", "FROM read_text('<<FILE>>')")
    add("fn_duck_getenv", "fname", "DS", "SELECT getenv('HOME') AS a")
    add("fn_sqlite_load_ext", "fname", "DS", "SELECT load_extension('/tmp/hostile_work/nonexistent') AS a")
    add("fn_sqlite_load_ext_q", "fname", "S", "SELECT \"LOAD_EXTENSION\"('/tmp/hostile_work/nonexistent') AS a")
    add("fn_sqlite_readfile", "fname", "S", "SELECT readfile('<<FILE>>') AS a")
    add("fn_sqlite_fts3_tok", "fname", "S", "SELECT hex(fts3_tokenizer('simple')) AS a")
    # -- SQL or paths inside string arguments
    add("str_pg_query_to_xml", "strsql", "P",
        "SELECT query_to_xml('SELECT pg_read_file(''<<FILE>>'')', true, true, '') AS a", cli=True)
    add("str_pg_ts_stat", "strsql", "P", "SELECT * FROM ts_stat('SELECT to_tsvector(''simple'', "
        "pg_read_file(''<<FILE>>''))')")
    add("str_pg_ts_stat_dollar", "strsql", "P",
        "SELECT * FROM ts_stat($q$SELECT to_tsvector('simple', pg_read_file('<<FILE>>'))$q$)")
    add("str_pg_xpath", "strsql", "P", "SELECT xpath('//text()', query_to_xml('SELECT datname FROM pg_database', "
        "true, false, '')) AS a")
    add("str_pg_table_to_xml", "strsql", "P", "SELECT table_to_xml('pg_authid', true, false, '') AS a")
    add("str_pg_shadow_xml", "strsql", "P",
        "SELECT query_to_xml('SELECT usename, passwd FROM pg_shadow', true, false, '') AS a")
    add("str_pg_database_to_xml", "strsql", "P", "SELECT length(database_to_xml(true, false, '')::text) AS a")
    add("str_pg_schema_to_xml", "strsql", "P", "SELECT schema_to_xml('pg_catalog', true, false, '') AS a")
    add("str_pg_xxe", "strsql", "P", "SELECT xmlparse(document '<?xml version=\"1.0\"?><!DOCTYPE x "
        "[<!ENTITY e SYSTEM \"file://<<FILE>>\">]><x>&e;</x>') AS a")
    add("str_pg_xmltable", "strsql", "P", "SELECT * FROM xmltable('//row' PASSING query_to_xml('SELECT "
        "pg_read_file(''<<FILE>>'') AS f', true, false, '') COLUMNS f text)")
    add("str_pg_regclass", "strsql", "P", "SELECT 'pg_authid'::regclass::oid AS a, to_regclass('pg_shadow') AS b")
    add("str_pg_viewdef", "strsql", "P", "SELECT pg_get_viewdef('pg_shadow'::regclass) AS a")
    add("str_pg_ts_rewrite", "strsql", "P",
        "SELECT ts_rewrite('a'::tsquery, 'SELECT to_tsquery(s), to_tsquery(s) FROM sqlarbiter_canary') AS a")
    add("str_pg_cursor_xml", "strsql", "P", "SELECT query_to_xml_and_xmlschema('SELECT current_setting("
        "''data_directory'')', true, false, '') AS a")
    add("str_my_extractvalue", "strsql", "M",
        "SELECT ExtractValue(1, CONCAT(0x7e, (SELECT s FROM sqlarbiter_canary.secret))) AS a", cli=True)
    add("str_my_updatexml", "strsql", "M", "SELECT UpdateXML(1, CONCAT(0x7e, LOAD_FILE(<<FILEHEX>>)), 1) AS a")
    add("str_my_updatexml_user", "strsql", "M",
        "SELECT UpdateXML(1, CONCAT(0x7e, (SELECT max(password) FROM mysql.user)), 1) AS a")
    add("str_my_exec_immediate", "strsql", "M", "EXECUTE IMMEDIATE 'SELECT LOAD_FILE(''<<FILE>>'')'")
    add("str_my_exec_immediate2", "strsql", "M",
        "EXECUTE IMMEDIATE CONCAT('SELECT s FROM sqlarbiter', '_canary.secret')")
    add("str_my_json_table", "strsql", "M", "SELECT * FROM JSON_TABLE(LOAD_FILE(<<FILEHEX>>), '$' COLUMNS "
        "(a TEXT PATH '$')) AS t")
    add("str_my_extractvalue_file", "strsql", "M", "SELECT ExtractValue(LOAD_FILE(<<FILEHEX>>), '/x') AS a")
    add("str_duck_query", "strsql", "D",
        "SELECT * FROM query('SELECT content FROM read_text(''<<FILE>>'')')", cli=True)
    add("str_duck_query2", "strsql", "D",
        "SELECT * FROM query('SELECT * FROM sqlite_scan(''<<SQLITE2>>'', ''secret'')')")
    add("str_duck_query_table", "strsql", "D", "SELECT * FROM query_table('<<FILE>>')")
    add("str_duck_query_table2", "strsql", "D", "SELECT * FROM query_table(['duckdb_settings'])")
    add("str_sqlite_pragma_arg", "strsql", "DS", "SELECT * FROM pragma_table_info('sqlite_master')")
    add("str_duck_json_serialize", "strsql", "D",
        "SELECT json_serialize_sql('SELECT content FROM read_text(''<<FILE>>'')') AS a")
    # -- file access through other functions / statements
    add("file_pg_copy_from", "file", "P", "COPY singer FROM '<<FILE>>'")
    add("file_pg_copy_prog", "file", "P", "COPY singer FROM PROGRAM 'cat <<FILE>>'")
    add("file_my_load_data", "file", "M", "LOAD DATA INFILE '<<FILE>>' INTO TABLE singer")
    add("file_my_load_data_local", "file", "M", "LOAD DATA LOCAL INFILE '<<FILE>>' INTO TABLE singer")
    add("file_sqlite_attach", "file", "DS", "ATTACH '<<SQLITE2>>' AS c")
    add("file_sqlite_attach_sel", "file", "DS", "ATTACH DATABASE '<<SQLITE2>>' AS c; SELECT * FROM c.secret")
    add("file_duck_attach", "file", "D", "ATTACH '<<DUCK2>>' AS c (READ_ONLY)")
    add("file_duck_read_csv_passwd", "file", "D", "SELECT * FROM read_csv('/etc/passwd', sep = ':', header = false)")
    add("file_duck_read_text_passwd", "file", "D", "SELECT content FROM read_text('/etc/passwd')")
    add("file_duck_sniff", "file", "D", "SELECT * FROM sniff_csv('<<FILE>>')")
    add("file_duck_parquet", "file", "D", "SELECT * FROM parquet_metadata('<<FILE>>')")
    add("file_duck_duckdb_file", "file", "D", "SELECT * FROM '<<DUCK2>>'")
    # -- catalogs, other databases, settings, accounts
    for cid, sql in [
        ("pg_database", "SELECT datname FROM pg_database"),
        ("pg_database_q", "SELECT datname FROM pg_catalog.\"pg_database\""),
        ("pg_stat_activity", "SELECT datname, usename, application_name, query FROM pg_stat_activity"),
        ("pg_file_settings", "SELECT * FROM pg_file_settings"),
        ("pg_config", "SELECT * FROM pg_config"),
        ("pg_show_all_settings", "SELECT name, setting FROM pg_show_all_settings() WHERE name LIKE '%file%' "
         "OR name LIKE '%directory%'"),
        ("pg_settings_datadir", "SELECT setting FROM pg_settings WHERE name = 'data_directory'"),
        ("pg_current_setting", "SELECT current_setting('data_directory') AS a, current_setting('hba_file') AS b"),
        ("pg_roles", "SELECT rolname, rolsuper FROM pg_roles"),
        ("pg_authid", "SELECT rolname, rolpassword FROM pg_authid"),
        ("pg_shadow", "SELECT usename, passwd FROM pg_shadow"),
        ("pg_user", "SELECT * FROM pg_user"),
        ("pg_hba", "SELECT * FROM pg_hba_file_rules"),
        ("pg_is_schemata", "SELECT catalog_name, schema_name FROM information_schema.schemata"),
        ("pg_is_tables", "SELECT table_catalog, table_schema, table_name FROM information_schema.tables "
         "WHERE table_schema NOT IN ('public')"),
        ("pg_stat_database", "SELECT datname FROM pg_stat_database"),
        ("pg_tablespace", "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace"),
        ("pg_extensions", "SELECT name FROM pg_available_extensions"),
        ("pg_cross_db", "SELECT s FROM sqlarbiter_canary.public.secret"),
        ("pg_inet", "SELECT inet_server_addr() AS a, inet_server_port() AS b, version() AS c"),
        ("pg_settings_all", "SELECT name, setting FROM pg_settings"),
        ("pg_proc", "SELECT proname FROM pg_proc WHERE proname LIKE 'pg_read%'"),
    ]:
        add("cat_" + cid, "catalog", "P", sql, cli=cid == "pg_database")
    for cid, sql in [
        ("my_user", "SELECT user, host, password FROM mysql.user"),
        ("my_global_priv", "SELECT * FROM mysql.global_priv"),
        ("my_db", "SELECT * FROM mysql.db"),
        ("my_schemata", "SELECT schema_name FROM information_schema.schemata"),
        ("my_tables", "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'hostile_cs'"),
        ("my_processlist", "SELECT * FROM information_schema.processlist"),
        ("my_user_privs", "SELECT * FROM information_schema.user_privileges"),
        ("my_canary_db", "SELECT * FROM sqlarbiter_canary.secret"),
        ("my_canary_db_bt", "SELECT * FROM `sqlarbiter_canary`.`secret`"),
        ("my_other_spider", "SELECT * FROM concert_singer.singer"),
        ("my_show_databases", "SHOW DATABASES"),
        ("my_show_grants", "SHOW GRANTS"),
        ("my_datadir", "SELECT @@datadir AS a, @@socket AS b, @@hostname AS c"),
        ("my_secure_file_priv", "SELECT @@global.secure_file_priv AS a"),
        ("my_global_vars", "SELECT * FROM information_schema.global_variables"),
        ("my_perf_threads", "SELECT * FROM performance_schema.threads"),
        ("my_sys_processlist", "SELECT * FROM sys.processlist"),
        ("my_plugins", "SELECT * FROM information_schema.plugins"),
        ("my_current_user", "SELECT current_user() AS a, version() AS b"),
    ]:
        add("cat_" + cid, "catalog", "M", sql, cli=cid == "my_user")
    for cid, sql in [
        ("duck_databases", "SELECT * FROM duckdb_databases()"),
        ("duck_settings", "SELECT name, value FROM duckdb_settings()"),
        ("duck_settings_dirs", "SELECT name, value FROM duckdb_settings() WHERE name LIKE '%directory%'"),
        ("duck_extensions", "SELECT * FROM duckdb_extensions()"),
        ("duck_tables", "SELECT * FROM duckdb_tables()"),
        ("duck_views", "SELECT * FROM duckdb_views()"),
        ("duck_secrets", "SELECT * FROM duckdb_secrets()"),
        ("duck_is_schemata", "SELECT * FROM information_schema.schemata"),
        ("duck_current_setting", "SELECT current_setting('home_directory') AS a"),
        ("duck_src", "SELECT * FROM src.singer"),
        ("duck_pragma_version", "SELECT * FROM pragma_version()"),
    ]:
        add("cat_" + cid, "catalog", "D", sql, cli=cid == "duck_databases")
    for cid, sql in [
        ("sqlite_master", "SELECT * FROM sqlite_master"),
        ("sqlite_schema", "SELECT * FROM sqlite_schema"),
        ("sqlite_temp_master", "SELECT * FROM sqlite_temp_master"),
        ("sqlite_main_master", "SELECT * FROM main.sqlite_master"),
        ("pragma_database_list", "SELECT * FROM pragma_database_list"),
        ("pragma_compile_options", "SELECT * FROM pragma_compile_options"),
        ("pragma_function_list", "SELECT * FROM pragma_function_list"),
        ("sqlite_version", "SELECT sqlite_version() AS a"),
        ("pragma_stmt", "PRAGMA database_list"),
    ]:
        add("cat_" + cid, "catalog", "DS", sql, cli=cid == "pragma_database_list")
    # -- writes
    for cid, sql in [
        ("create", "CREATE TABLE hostile_t (a int)"),
        ("insert", "INSERT INTO singer (singer_id, name) VALUES (999, 'hostile')"),
        ("update", "UPDATE singer SET age = 0"),
        ("delete", "DELETE FROM singer"),
        ("drop", "DROP TABLE singer"),
        ("cte_delete", "WITH x AS (SELECT 1) DELETE FROM singer"),
        ("view", "CREATE VIEW hostile_v AS SELECT 1 AS a"),
        ("alter", "ALTER TABLE singer ADD COLUMN hostile int"),
        ("index", "CREATE INDEX hostile_i ON singer (age)"),
        ("insert_returning", "INSERT INTO singer (singer_id, name) VALUES (998, 'hostile') RETURNING *"),
    ]:
        add("wr_" + cid, "write", "*", sql, cli=cid == "delete")
    for cid, sql in [
        ("select_into", "SELECT * INTO hostile_into FROM singer"),
        ("copy_to", "COPY singer TO '<<MARK>>'"),
        ("copy_program", "COPY (SELECT 1) TO PROGRAM 'touch <<MARK>>'"),
        ("cte_delete_returning", "WITH d AS (DELETE FROM singer RETURNING *) SELECT count(*) FROM d"),
        ("lo_from_bytea", "SELECT lo_from_bytea(0, 'x') AS a"),
        ("lo_export", "SELECT lo_export(lo_from_bytea(0, 'x'), '<<MARK>>') AS a"),
        ("alter_system", "ALTER SYSTEM SET work_mem = '5MB'"),
        ("create_db", "CREATE DATABASE hostile_db"),
        ("create_role", "CREATE ROLE hostile_role"),
        ("grant_role", f"GRANT pg_read_server_files TO {RO}"),
        ("do_block", "DO $$BEGIN EXECUTE 'CREATE TABLE hostile_do (a int)'; END$$"),
        ("create_function", "CREATE FUNCTION hostile_f() RETURNS int AS 'SELECT 1' LANGUAGE sql"),
        ("for_update", "SELECT * FROM singer FOR UPDATE"),
        ("terminate_self", "SELECT pg_terminate_backend(pg_backend_pid()) AS a"),
        ("reload_conf", "SELECT pg_reload_conf() AS a"),
        ("set_config_rw", "SELECT set_config('transaction_read_only', 'off', true) AS a, "
         "set_config('default_transaction_read_only', 'off', false) AS b"),
        ("notify", "SELECT pg_notify('hostile_chan', 'x') AS a"),
        ("vacuum", "VACUUM singer"),
        ("truncate", "TRUNCATE singer"),
    ]:
        add("wr_pg_" + cid, "write", "P", sql, cli=cid == "copy_program")
    for cid, sql in [
        ("outfile", "SELECT * FROM singer INTO OUTFILE '<<MARK>>'"),
        ("dumpfile", "SELECT 'x' INTO DUMPFILE '<<MARK>>'"),
        ("outfile_union", "SELECT 1 UNION SELECT 2 INTO OUTFILE '<<MARK>>'"),
        ("temp_table", "CREATE TEMPORARY TABLE hostile_tmp AS SELECT 1 AS a"),
        ("set_global", "SET GLOBAL net_read_timeout = 31"),
        ("create_db", "CREATE DATABASE hostile_db"),
        ("create_user", "CREATE USER 'hostile_user'@'localhost'"),
        ("grant", f"GRANT SELECT ON mysql.* TO '{RO}'@'127.0.0.1'"),
        ("replace", "REPLACE INTO singer (singer_id, name) VALUES (1, 'hostile')"),
        ("lock_tables", "LOCK TABLES singer WRITE"),
        ("rename", "RENAME TABLE singer TO hostile_s"),
        ("truncate", "TRUNCATE singer"),
        ("for_update", "SELECT * FROM singer FOR UPDATE"),
        ("handler", "HANDLER singer OPEN"),
    ]:
        add("wr_my_" + cid, "write", "M", sql, cli=cid == "outfile")
    for cid, sql in [
        ("attach_new", "ATTACH '<<MARK>>' AS m"),
        ("vacuum_into", "VACUUM INTO '<<MARK>>'"),
        ("user_version", "PRAGMA user_version = 7"),
        ("journal_wal", "PRAGMA journal_mode = WAL"),
        ("analyze", "ANALYZE"),
        ("reindex", "REINDEX"),
        ("vacuum", "VACUUM"),
        ("temp_table", "CREATE TEMP TABLE hostile_tmp (a)"),
        ("writable_schema", "PRAGMA writable_schema = ON"),
        ("query_only_off", "PRAGMA query_only = 0"),
    ]:
        add("wr_sqlite_" + cid, "write", "DS", sql, cli=cid == "vacuum_into")
    for cid, sql in [
        ("copy_to", "COPY singer TO '<<MARK>>'"),
        ("copy_query", "COPY (SELECT 1) TO '<<MARK>>' (FORMAT csv)"),
        ("export", "EXPORT DATABASE '<<MARK>>'"),
        ("attach_new", "ATTACH '<<MARK>>' AS m"),
        ("macro", "CREATE MACRO hostile_m(x) AS x"),
        ("install", "INSTALL httpfs"),
        ("load", "LOAD '<<MARK>>'"),
        ("set_external", "SET enable_external_access = true"),
        ("checkpoint", "CHECKPOINT"),
        ("secret", "CREATE SECRET hostile_secret (TYPE s3, KEY_ID 'x', SECRET 'y')"),
        ("persistent_secret", "CREATE PERSISTENT SECRET hostile_secret (TYPE s3, KEY_ID 'x', SECRET 'y')"),
        ("detach", "DETACH src"),
    ]:
        add("wr_duck_" + cid, "write", "D", sql, cli=cid == "copy_to")
    # -- session state (probe = a later query on the same executor)
    sess = [
        ("pg_search_path", "P", "SELECT set_config('search_path', 'pg_catalog, hostile_leak1', false) AS a",
         "SELECT current_setting('search_path') AS a", "hostile_leak1"),
        ("pg_set_search_path", "P", "SET search_path = hostile_leak2",
         "SELECT current_setting('search_path') AS a", "hostile_leak2"),
        ("pg_app_name", "P", "SELECT set_config('application_name', 'hostile_leak3', false) AS a",
         "SELECT current_setting('application_name') AS a", "hostile_leak3"),
        ("pg_custom_guc", "P", "SELECT set_config('hostile.leak', 'hostile_leak4', false) AS a",
         "SELECT current_setting('hostile.leak', true) AS a", "hostile_leak4"),
        ("pg_set_role", "P", "SET ROLE postgres",
         "SELECT current_user || '/' || session_user AS a", f"postgres/{RO}"),
        ("pg_session_auth", "P", "SET SESSION AUTHORIZATION postgres",
         "SELECT current_user || '/' || session_user AS a", "postgres/postgres"),
        ("pg_temp_table", "P", "CREATE TEMP TABLE hostile_tmp AS SELECT 'hostile_leak5' AS x",
         "SELECT x FROM pg_temp.hostile_tmp", "hostile_leak5"),
        ("pg_prepare", "P", "PREPARE hostile_p AS SELECT 'hostile_leak6' AS a", "EXECUTE hostile_p",
         "hostile_leak6"),
        ("pg_listen", "P", "LISTEN hostile_chan", "SELECT * FROM pg_listening_channels()", "hostile_chan"),
        ("my_user_var", "M", "SELECT @hostile := 'hostile_leak7' AS a", "SELECT @hostile AS a", "hostile_leak7"),
        ("my_set_var", "M", "SET @hostile2 = 'hostile_leak8'", "SELECT @hostile2 AS a", "hostile_leak8"),
        ("my_session_var", "M", "SET SESSION group_concat_max_len = 4242424",
         "SELECT @@session.group_concat_max_len AS a", "4242424"),
        ("my_set_names", "M", "SET NAMES latin1", "SELECT @@character_set_client AS a", "latin1"),
        ("my_temp_table", "M", "CREATE TEMPORARY TABLE hostile_tmp2 AS SELECT 'hostile_leak9' AS x",
         "SELECT x FROM hostile_tmp2", "hostile_leak9"),
        ("my_prepare", "M", "PREPARE hostile_s FROM 'SELECT ''hostile_leak10'''", "EXECUTE hostile_s",
         "hostile_leak10"),
        ("duck_memory_limit", "D", "SET memory_limit = '64GB'", "SELECT current_setting('memory_limit') AS a",
         "6[0-9]\\.[0-9]* ?G"),
        ("duck_threads", "D", "SET threads = 61", "SELECT current_setting('threads') AS a", "61"),
        ("duck_variable", "D", "SET VARIABLE hostile = 'hostile_leak11'", "SELECT getvariable('hostile') AS a",
         "hostile_leak11"),
        ("duck_external", "D", "SET enable_external_access = true",
         "SELECT current_setting('enable_external_access') AS a", "true"),
        ("file_temp_table", "DS", "CREATE TEMP TABLE hostile_tmp AS SELECT 'hostile_leak12' AS x",
         "SELECT x FROM hostile_tmp", "hostile_leak12"),
        ("sqlite_case_like", "S", "PRAGMA case_sensitive_like = 1", "SELECT 'a' LIKE 'A' AS a", "^\\[\\[0\\]\\]$"),
        ("sqlite_cache_size", "S", "PRAGMA cache_size = 4242", "PRAGMA cache_size", "4242"),
    ]
    for cid, fams, sql, probe, leak in sess:
        add("ss_" + cid, "session", fams, sql, probe=probe, leak=leak, cli=cid == "my_user_var")
    for i, k in enumerate(PG_LOCK_KEYS):
        fn = ["pg_advisory_lock", "pg_try_advisory_lock", "pg_advisory_lock_shared"][i]
        add(f"ss_pg_{fn}", "session", "P", f"SELECT {fn}({k}) AS a", admin_probe=("pg_lock", k))
    add("ss_pg_xact_lock", "session", "P", "SELECT pg_advisory_xact_lock(424245) AS a")
    add("ss_my_get_lock", "session", "M", f"SELECT GET_LOCK('{MY_LOCKS[0]}', 0) AS a",
        admin_probe=("my_lock", MY_LOCKS[0]))
    add("ss_my_get_lock_from", "session", "M", f"SELECT GET_LOCK('{MY_LOCKS[1]}', 0) AS a FROM singer LIMIT 1",
        admin_probe=("my_lock", MY_LOCKS[1]))
    add("ss_my_get_lock_bt", "session", "M", f"SELECT `get_lock`('{MY_LOCKS[2]}', 0) AS a",
        admin_probe=("my_lock", MY_LOCKS[2]))
    # -- time
    for cid, fams, sql in [
        ("pg_sleep", "P", "SELECT pg_sleep(30) AS a"),
        ("pg_sleep_quoted", "P", "SELECT pg_catalog.\"pg_sleep\"(30) AS a"),
        ("pg_sleep_for", "P", "SELECT pg_sleep_for('30 seconds') AS a"),
        ("pg_generate_series", "P", "SELECT count(*) FROM generate_series(1, 10000000000)"),
        ("pg_catalog_cross", "P", "SELECT count(*) FROM pg_class a, pg_class b, pg_class c, pg_class d"),
        ("my_sleep", "M", "SELECT SLEEP(30) AS a"),
        ("my_sleep_rows", "M", "SELECT SLEEP(5) FROM singer"),
        ("my_benchmark", "M", "SELECT BENCHMARK(1000000000, MD5('x')) AS a"),
        ("my_is_cross", "M", "SELECT count(*) FROM information_schema.columns a, information_schema.columns b, "
         "information_schema.columns c"),
        ("my_regexp", "M", "SELECT repeat('a', 5000) REGEXP '(a+)+b' AS a"),
        ("duck_range", "D", "SELECT count(*) FROM range(1000000000000)"),
        ("duck_hash_range", "D", "SELECT sum(hash(i)) FROM range(100000000000) t(i)"),
        ("like_blowup", "DS", "SELECT (SELECT group_concat(name) FROM singer) || substr(hex(zeroblob(200000)), 1) "
         "LIKE '" + "%a" * 200 + "%b' AS a"),
        ("recursive_count", "*", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
         "SELECT count(*) FROM c"),
        ("cross_join_12", "*", "SELECT count(*) FROM " + ", ".join(f"singer s{i}" for i in range(12))),
    ]:
        add("tm_" + cid, "time", fams, sql, cli=cid == "recursive_count")
    # -- memory
    for cid, fams, sql in [
        ("sqlite_zeroblob", "S", "SELECT length(zeroblob(999999999)) AS a"),
        ("sqlite_zeroblob_cross", "S", "SELECT max(length(hex(zeroblob(100000000)))) FROM singer a, singer b"),
        ("sqlite_printf", "S", "SELECT length(printf('%.*c', 999999999, 'x')) AS a"),
        ("sqlite_printf_agg", "S", "SELECT length(group_concat(printf('%.*c', 100000000, 'x'))) "
         "FROM singer a, singer b, singer c"),
        ("sqlite_sort_blobs", "S", "SELECT count(*) FROM (SELECT randomblob(100000000) AS r FROM singer a, singer b "
         "ORDER BY r)"),
        ("sqlite_rows_out", "S", "SELECT printf('%.*c', 50000000, 'x') AS a FROM singer a, singer b"),
        ("repeat_1e9", "DPM", "SELECT length(repeat('x', 1000000000)) AS a"),
        ("repeat_nested", "DPM", "SELECT length(repeat(repeat('x', 16000000), 60)) AS a"),
        ("repeat_agg", "DPM", "SELECT length(string_agg(repeat('x', 10000000), '')) "
         "FROM singer a, singer b, singer c"),
        ("lpad", "DPM", "SELECT length(lpad('x', 1000000000, 'y')) AS a"),
        ("sort_big_rows", "DPM", "SELECT count(*) FROM (SELECT repeat('x', 16000000) AS r "
         "FROM singer a, singer b ORDER BY r) AS t"),
        ("rows_out", "DPM", "SELECT repeat('x', 50000000) AS a FROM singer a, singer b"),
        ("my_group_concat", "M", "SELECT length(group_concat(repeat('x', 16000000))) FROM singer a, singer b, "
         "singer c"),
        ("pg_array_agg", "P", "SELECT array_length(array_agg(g), 1) FROM generate_series(1, 300000000) AS g"),
        ("duck_list_range", "D", "SELECT length(list(i)) FROM range(1000000000) t(i)"),
        ("duck_list_sort", "D", "SELECT length(list_sort(range(300000000))) AS a"),
        ("recursive_doubling", "*", "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) "
         "SELECT length(max(s)) FROM r"),
    ]:
        add("mem_" + cid, "memory", fams, sql, cli=cid in ("sqlite_printf_agg", "repeat_agg"))
    # -- multiple statements
    for cid, fams, sql in [
        ("drop", "*", "SELECT 1; DROP TABLE singer"),
        ("delete", "*", "SELECT 1; DELETE FROM singer"),
        ("string_semicolon", "*", "SELECT ';'; DELETE FROM singer"),
        ("comment_semicolon", "*", "SELECT 1 /* ; */ ; DELETE FROM singer"),
        ("leading_empty", "*", ";; SELECT 1"),
        ("trailing", "*", "SELECT 1;;"),
        ("commit_drop", "*", "COMMIT; DROP TABLE singer"),
        ("rollback_create", "*", "ROLLBACK; CREATE TABLE hostile_m (a int)"),
        ("pg_read_second", "P", "SELECT 1; SELECT pg_read_file('<<FILE>>')"),
        ("pg_end_rw", "P", "END; SET TRANSACTION READ WRITE; CREATE TABLE hostile_m2 (a int)"),
        ("pg_copy_second", "P", "SELECT 1; COPY singer TO '<<MARK>>'"),
        ("my_load_second", "M", "SELECT 1; SELECT LOAD_FILE(<<FILEHEX>>)"),
        ("my_set_global_second", "M", "SELECT 1; SET GLOBAL net_read_timeout = 32"),
        ("my_canary_second", "M", "SELECT 1; SELECT * FROM sqlarbiter_canary.secret"),
        ("sqlite_attach_second", "S", "SELECT 1; ATTACH '<<MARK>>' AS m"),
        ("duck_copy_second", "D", "SELECT 1; COPY singer TO '<<MARK>>'"),
        ("duck_set_second", "D", "SELECT 1; SET enable_external_access = true; SELECT content FROM "
         "read_text('<<FILE>>')"),
    ]:
        add("ms_" + cid, "multi", fams, sql, cli=cid == "commit_drop")
    return C


# ---------------------------------------------------------------- helpers
def tree_root() -> Path:
    import sqlbox

    return Path(sqlbox.__file__).resolve().parent.parent


def tree_rev(root: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except Exception:  # noqa: BLE001 - the revision is cosmetic: '?' when git cannot say
        return "?"


def spider_cs() -> Path:
    from core.settings import spider_dir

    return spider_dir() / "database" / "concert_singer" / "concert_singer.sqlite"


def chr_concat(s: str) -> str:
    return "||".join(f"chr({ord(c)})" for c in s)


def fill(sql: str, mark: Path, family: str = "") -> str:
    f = MY_CANARY_FILE if family == "mysql" and MY_CANARY_FILE.exists() else CANARY_FILE
    if family == "mysql" and MY_FILES.is_dir():
        mark = MY_FILES / mark.name  # where INTO OUTFILE could write at all
    return (sql.replace("<<FILECHR>>", chr_concat(str(f)))
            .replace("<<FILEHEX>>", "0x" + str(f).encode().hex())
            .replace("<<FILE>>", str(f)).replace("<<SQLITE2>>", str(SQLITE2))
            .replace("<<DUCK2>>", str(DUCK2)).replace("<<MARK>>", str(mark)))


def pg_connect(db: str = "postgres"):
    import psycopg

    c = psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={db} application_name={ADMIN_APP}",
                        autocommit=True, connect_timeout=10)
    c.execute("SET statement_timeout = '30s'")
    return c


def my_connect(db: str | None = None):
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=3306, user="sqlarbiter", database=db, autocommit=True,
                           connect_timeout=10, read_timeout=60)


def my_q(c, sql: str, args=None) -> list:
    with c.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def sha(p: Path) -> str | None:
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


# ---------------------------------------------------------------- setup
class Setup:
    def __init__(self, families: set[str]):
        self.tok = {k: f"zz{k}{secrets.token_hex(6)}" for k in ("canaryfile", "canarydb", "canarysqlite",
                                                                  "canaryduckdb")}
        self.families = families
        self.markers: dict[str, list[str]] = {}  # class -> literals (or re: patterns)
        self.pg = self.my = None
        self.pg_db = self.my_db = None
        self.my_idle = None
        self.file_db: dict[str, Path] = {}

    def files(self) -> None:
        if WORK.exists():
            shutil.rmtree(WORK)
        for d in (WORK, MARKS, CANARY_DIR):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(WORK, 0o755)
        os.chmod(CANARY_DIR, 0o755)
        os.chmod(MARKS, 0o777)  # writable by the server users; no sticky bit, so we can clean up
        CANARY_FILE.write_text(f"{self.tok['canaryfile']}\nsecret line of the canary file\n")
        os.chmod(CANARY_FILE, 0o644)
        if "mysql" in self.families and MY_FILES.is_dir() and os.access(MY_FILES, os.W_OK):
            MY_CANARY_FILE.write_text(CANARY_FILE.read_text())  # LOAD_FILE reads nothing else
            os.chmod(MY_CANARY_FILE, 0o644)
            for f in MY_FILES.glob("*_*_*"):  # markers of an earlier run
                f.unlink(missing_ok=True)
        with sqlite3.connect(SQLITE2) as c:
            c.execute("CREATE TABLE secret (s TEXT)")
            c.execute("INSERT INTO secret VALUES (?)", (self.tok["canarysqlite"],))
        os.chmod(SQLITE2, 0o644)
        import duckdb

        with duckdb.connect(str(DUCK2)) as c:
            c.execute("CREATE TABLE secret (s VARCHAR)")
            c.execute("INSERT INTO secret VALUES (?)", [self.tok["canaryduckdb"]])
        os.chmod(DUCK2, 0o644)
        for fam in ("duckdb", "sqlite"):
            d = WORK / fam
            d.mkdir()
            shutil.copyfile(spider_cs(), d / "concert_singer.sqlite")
            self.file_db[fam] = d / "concert_singer.sqlite"
        (WORK / "pristine.sqlite").write_bytes(spider_cs().read_bytes())

    def postgres(self) -> None:
        from sqlbox.admin import load_spider

        self.pg = pg_connect()
        a = self.pg
        load_spider(spider_cs(), PG_ADMIN + "/postgres", DB, replace=True)
        for role, extra in ((RO, "NOSUPERUSER NOCREATEDB NOCREATEROLE"),
                            (CANARY_USER, "NOSUPERUSER PASSWORD 'canary-password'")):
            if not a.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                a.execute(f"CREATE ROLE {role} LOGIN {extra}")
        self._pg_grants()
        if not a.execute("SELECT 1 FROM pg_database WHERE datname = %s", (CANARY_DB,)).fetchone():
            a.execute(f"CREATE DATABASE {CANARY_DB}")
        with pg_connect(CANARY_DB) as c:
            c.execute("DROP TABLE IF EXISTS secret")
            c.execute("CREATE TABLE secret (s text)")
            c.execute("INSERT INTO secret VALUES (%s)", (self.tok["canarydb"],))
        self.pg_db = pg_connect(DB)
        paths = [r[0] for r in a.execute("SELECT setting FROM pg_settings WHERE name IN ('data_directory', "
                                         "'config_file', 'hba_file', 'ident_file')").fetchall()]
        self.markers.setdefault("server_paths", []).extend(paths + ["/var/lib/postgresql", "/etc/postgresql"])

    def _pg_grants(self) -> None:
        self.pg.execute(f'GRANT CONNECT ON DATABASE "{DB}" TO {RO}')
        with pg_connect(DB) as c:
            c.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO {RO}; "
                      f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {RO}")

    def mysql(self) -> None:
        from sqlbox.admin import load_spider

        self.my = my_connect()
        load_spider(spider_cs(), MY_ADMIN + "/mysql", DB, replace=True)
        self._my_grants()
        my_q(self.my, f"CREATE DATABASE IF NOT EXISTS {CANARY_DB}")
        my_q(self.my, f"DROP TABLE IF EXISTS {CANARY_DB}.secret")
        my_q(self.my, f"CREATE TABLE {CANARY_DB}.secret (s TEXT)")
        my_q(self.my, f"INSERT INTO {CANARY_DB}.secret VALUES (%s)", (self.tok["canarydb"],))
        for host in ("127.0.0.1", "localhost"):
            my_q(self.my, f"CREATE USER IF NOT EXISTS '{RO_MULTI}'@'{host}'")
            my_q(self.my, f"GRANT SELECT ON `{DB}`.* TO '{RO_MULTI}'@'{host}'")
            my_q(self.my, f"GRANT SELECT ON `{CANARY_DB}`.* TO '{RO_MULTI}'@'{host}'")
        my_q(self.my, f"CREATE USER IF NOT EXISTS '{CANARY_USER}'@'localhost' IDENTIFIED BY 'canary-password'")
        self.my_idle = my_connect(CANARY_DB)  # another session, idle in the canary database
        self.my_globals = {k: v for k, v in my_q(self.my, "SELECT variable_name, variable_value FROM "
                                                 "information_schema.global_variables WHERE variable_name IN ("
                                                 + ",".join(f"'{g.upper()}'" for g in MY_GLOBALS) + ")")}
        datadir, sock = my_q(self.my, "SELECT @@datadir, @@socket")[0]
        self.markers.setdefault("server_paths", []).extend([datadir.rstrip("/"), sock, "/var/lib/mysql",
                                                            "/run/mysqld"])

    def _my_grants(self) -> None:
        for host in ("127.0.0.1", "localhost"):
            my_q(self.my, f"CREATE USER IF NOT EXISTS '{RO}'@'{host}'")
            my_q(self.my, f"GRANT SELECT ON `{DB}`.* TO '{RO}'@'{host}'")

    def build_markers(self) -> None:
        m = self.markers
        size = len(CANARY_FILE.read_bytes())  # a BLOB preview shows only its size: the file's exact size
        m["canary_file"] = [self.tok["canaryfile"], self.tok["canaryfile"].encode().hex(), f"<blob {size} bytes>"]
        m["canary_db"] = [self.tok["canarydb"], self.tok["canarydb"].encode().hex()]
        m["canary_sqlite"] = [self.tok["canarysqlite"], self.tok["canarysqlite"].encode().hex()]
        m["canary_duckdb"] = [self.tok["canaryduckdb"], self.tok["canaryduckdb"].encode().hex()]
        m["canary_listing"] = ["canary.txt"]
        m["etc_passwd"] = ["root:x:0:0", "726f6f743a783a303a30", "/usr/sbin/nologin"]
        m["password_hash"] = [r"re:\*[0-9A-F]{40}", r"re:SCRAM-SHA-256\$", r"re:md5[0-9a-f]{32}"]
        m["other_databases"] = [r"re:\bsqlarbiter_canary\b", "template0", "template1", "performance_schema",
                                *(r"re:\b" + d + r"\b" for d in SPIDER_OTHERS)]
        m["accounts"] = [CANARY_USER, "mariadb.sys"]
        m["other_sessions"] = [ADMIN_APP]
        m["settings"] = ["shared_buffers", "max_wal_size", "innodb_buffer_pool_size", "secure_file_priv",
                         "extension_directory", "temp_directory"]
        m["host_paths"] = [str(WORK), os.path.expanduser("~/.duckdb")]
        m.setdefault("server_paths", [])


def disclosures(setup: Setup, sql: str, text: str, family: str) -> list[str]:
    low_sql, low = sql.lower(), text.lower()
    hits = []
    for cls, pats in setup.markers.items():
        if cls == "host_paths" and family in ("postgresql", "mysql"):
            continue
        for p in pats:
            if p.startswith("re:"):
                m = re.search(p[3:], text)
                if m and m.group(0).lower() not in low_sql:
                    hits.append(f"{cls}:{m.group(0)[:40]}")
                    break
            elif p and p.lower() in low and p.lower() not in low_sql:
                hits.append(f"{cls}:{p}")
                break
    return hits


# ---------------------------------------------------------------- state (writes)
def state(setup: Setup, family: str) -> dict:
    my_marks = sorted(f for f in os.listdir(MY_FILES) if f != MY_CANARY_FILE.name) if MY_FILES.is_dir() else []
    s: dict = {"markers": sorted(os.listdir(MARKS)) + my_marks, "canary_file": sha(CANARY_FILE),
               "canary_sqlite": sha(SQLITE2), "canary_duckdb": sha(DUCK2)}
    secret = Path("~/.duckdb/stored_secrets/hostile_secret.duckdb_secret").expanduser()
    s["duckdb_persistent_secret"] = secret.exists()
    if family in ("duckdb", "sqlite"):
        p = setup.file_db[family]
        s["db_file"] = sha(p)
        s["db_dir"] = sorted(os.listdir(p.parent))
        return s
    if family == "postgresql":
        a, d = setup.pg, setup.pg_db
        for schema, t in d.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE "
                                   "table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema "
                                   "NOT LIKE 'pg_temp%'").fetchall():
            q = f'SELECT md5(coalesce(string_agg(x::text, \',\' ORDER BY x::text), \'\')) FROM "{schema}"."{t}" x'
            s[f"table {schema}.{t}"] = d.execute(q).fetchone()[0]
        s["functions"] = sorted(r[0] for r in d.execute("SELECT proname FROM pg_proc p JOIN pg_namespace n ON "
                                                        "n.oid = p.pronamespace WHERE nspname = 'public'"))
        s["databases"] = sorted(r[0] for r in a.execute("SELECT datname FROM pg_database WHERE datname LIKE "
                                                        "'hostile%'"))
        s["roles"] = sorted(r[0] for r in a.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'hostile%'"))
        s["ro_memberships"] = sorted(r[0] for r in a.execute(
            "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles b ON "
            "b.oid = m.roleid WHERE r.rolname = %s", (RO,)))
        s["large_objects"] = d.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
        s["auto_conf"] = sorted(str(r) for r in a.execute("SELECT name, setting FROM pg_file_settings WHERE "
                                                          "sourcefile LIKE '%auto.conf'"))
        return s
    a = setup.my
    for (t,) in my_q(a, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (DB,)):
        s[f"table {t}"] = my_q(a, f"CHECKSUM TABLE `{DB}`.`{t}`")[0][1]
    s["databases"] = sorted(r[0] for r in my_q(a, "SHOW DATABASES LIKE 'hostile%'"))
    s["users"] = sorted(r[0] for r in my_q(a, "SELECT user FROM mysql.user WHERE user LIKE 'hostile%'"))
    grants = []
    for host in ("127.0.0.1", "localhost"):
        grants += [g[0] for g in my_q(a, f"SHOW GRANTS FOR '{RO}'@'{host}'") if "`mysql`" in g[0] or "*.*" in g[0]
                   and "USAGE" not in g[0]]
    s["ro_grants"] = sorted(grants)
    s["globals"] = {k: v for k, v in my_q(a, "SELECT variable_name, variable_value FROM information_schema."
                                          "global_variables WHERE variable_name IN ("
                                          + ",".join(f"'{g.upper()}'" for g in MY_GLOBALS) + ")")}
    return s


def repair(setup: Setup, family: str, before: dict, after: dict) -> None:
    """Put the world back after a detected write, so that the next case starts from the same state."""
    from sqlbox.admin import load_spider

    for f in os.listdir(MARKS):
        p = MARKS / f
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    if MY_FILES.is_dir():
        for f in os.listdir(MY_FILES):
            if f != MY_CANARY_FILE.name:
                with contextlib.suppress(OSError):
                    (MY_FILES / f).unlink()
    Path("~/.duckdb/stored_secrets/hostile_secret.duckdb_secret").expanduser().unlink(missing_ok=True)
    if family in ("duckdb", "sqlite"):
        p = setup.file_db[family]
        for f in set(after.get("db_dir", [])) - set(before.get("db_dir", [])):
            with contextlib.suppress(OSError):
                (p.parent / f).unlink()
        if after.get("db_file") != before.get("db_file"):
            shutil.copyfile(WORK / "pristine.sqlite", p)
        return
    tables_changed = any(k.startswith("table ") and before.get(k) != after.get(k)
                         for k in set(before) | set(after))
    if family == "postgresql":
        a = setup.pg
        for d in after["databases"]:
            a.execute(f'DROP DATABASE IF EXISTS "{d}" WITH (FORCE)')
        for r in after["roles"]:
            a.execute(f'DROP ROLE IF EXISTS "{r}"')
        for r in set(after["ro_memberships"]) - set(before["ro_memberships"]):
            a.execute(f'REVOKE "{r}" FROM {RO}')
        if after["auto_conf"] != before["auto_conf"]:
            a.execute("ALTER SYSTEM RESET ALL")
            a.execute("SELECT pg_reload_conf()")
        d = setup.pg_db
        for f in set(after["functions"]) - set(before["functions"]):
            d.execute(f'DROP FUNCTION IF EXISTS public."{f}"')
        if after["large_objects"] != before["large_objects"]:
            d.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
        if tables_changed:
            setup.pg_db.close()
            load_spider(spider_cs(), PG_ADMIN + "/postgres", DB, replace=True)
            setup._pg_grants()
            setup.pg_db = pg_connect(DB)
        return
    a = setup.my
    for d in after["databases"]:
        my_q(a, f"DROP DATABASE IF EXISTS `{d}`")
    for u in after["users"]:
        for host in ("localhost", "127.0.0.1", "%"):
            my_q(a, f"DROP USER IF EXISTS '{u}'@'{host}'")
    if after["ro_grants"] != before["ro_grants"]:
        for host in ("127.0.0.1", "localhost"):
            with contextlib.suppress(Exception):
                my_q(a, f"REVOKE SELECT ON mysql.* FROM '{RO}'@'{host}'")
    for k, v in setup.my_globals.items():
        if after["globals"].get(k) != v:
            with contextlib.suppress(Exception):
                my_q(a, f"SET GLOBAL {k} = %s", (v,))
    if tables_changed:
        load_spider(spider_cs(), MY_ADMIN + "/mysql", DB, replace=True)
        setup._my_grants()


def admin_probe(setup: Setup, probe) -> str | None:
    kind, key = probe
    if kind == "pg_lock":
        rows = setup.pg.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                                (key,)).fetchall()
        for (pid,) in rows:
            setup.pg.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return f"advisory lock {key} still held by pid {rows[0][0]}" if rows else None
    owner = my_q(setup.my, "SELECT IS_USED_LOCK(%s)", (key,))[0][0]
    if owner:
        with contextlib.suppress(Exception):
            my_q(setup.my, f"KILL {int(owner)}")
        return f"GET_LOCK {key!r} still held by connection {owner}"
    return None


# ---------------------------------------------------------------- RSS
class RssPoller:
    def __init__(self, family: str):
        self.family = family
        self._server: list[psutil.Process] = []
        self._server_at = 0.0

    @staticmethod
    def tree(pid: int) -> tuple[int, int]:
        try:
            p = psutil.Process(pid)
            procs = [p, *p.children(recursive=True)]
        except psutil.Error:
            return 0, 0
        total = 0
        for q in procs:
            with contextlib.suppress(psutil.Error):
                total += q.memory_info().rss
        return total, len(procs)

    def server(self) -> int:
        if self.family not in ("postgresql", "mysql"):
            return 0
        now = time.monotonic()
        if now - self._server_at > 0.5:
            names = ("postgres",) if self.family == "postgresql" else ("mariadbd", "mysqld")
            self._server = [p for p in psutil.process_iter(["name"]) if p.info["name"] in names]
            self._server_at = now
        total = 0
        for p in self._server:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total


# ---------------------------------------------------------------- the child (one executor per engine)
def child_main(spec: dict) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr

    def send(obj):
        proto.write(json.dumps(obj, default=str) + "\n")
        proto.flush()

    from sqlbox.databases import DatabaseRegistry

    reg = DatabaseRegistry()
    err = None
    ex = None
    extra = {}
    if spec.get("optin"):  # a privileged role: does the default configuration refuse it?
        try:
            from sqlbox.executor import Executor

            r0 = DatabaseRegistry()
            r0.register_url(spec["url"], db_id="cs")
            with Executor(r0, engine=spec["engine"], timeout_s=spec["timeout"]) as e0:
                res0 = e0.execute("cs", "SELECT count(*) FROM singer")
            extra["default_check"] = f"control ok={res0.ok} {(res0.error or '')[:200]}"
        except Exception as e:  # noqa: BLE001 - the control check records whatever refused it
            extra["default_check"] = f"refused: {type(e).__name__}: {str(e)[:200]}"
        if hasattr(reg, "privileged"):  # the opt-in by name (privileged_databases) where the tree has one
            reg.privileged.add("cs")
            extra["opted_in"] = True
    try:
        if spec.get("url"):
            reg.register_url(spec["url"], db_id="cs")
        else:
            reg.register("cs", spec["path"])
        from sqlbox.executor import Executor

        ex = Executor(reg, engine=spec["engine"], timeout_s=spec["timeout"])  # as `sqlarbiter check` builds it
        ex.execute("cs", "SELECT count(*) FROM singer")  # warm: workers and connections up
    except Exception as e:  # noqa: BLE001 - e.g. a refused (privileged) role: every case reports it
        err = f"{type(e).__name__}: {str(e)[:300]}"
    send({"ready": True, "error": err, **extra})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("op") == "exit":
            break
        if ex is None:
            send({"verdict": "refused", "error": err, "wall_s": 0.0})  # the executor was not built
            continue
        t0 = time.perf_counter()
        try:
            res = ex.execute("cs", msg["sql"], dialect=msg["dialect"])
            d = res.model_dump(mode="json")
            verdict = "ok" if res.ok else ("rejected" if d.get("error_kind") == "rejected" else "failed")
            out = {"verdict": verdict, "result": d}
        except Exception as e:  # noqa: BLE001 - the executor must not raise for bad SQL: that is a finding
            refused = "Privilege" in type(e).__name__  # the database's role is refused: nothing ran
            out = {"verdict": "refused" if refused else "error", "error": f"{type(e).__name__}: {str(e)[:300]}"}
        out["wall_s"] = time.perf_counter() - t0
        send(out)
    with contextlib.suppress(Exception):
        if ex is not None:
            ex.close()


class Child:
    def __init__(self, spec: dict):
        self.spec = spec
        self.start()

    def start(self) -> None:
        env = dict(os.environ)
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(self.spec)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=env, cwd=os.getcwd())
        self.buf = ""
        ready = self.read(120.0, None)
        self.ready = ready or {}
        self.error = ready.get("error") if ready else "child did not start"

    def read(self, deadline_s: float, poll) -> dict | None:
        end = time.monotonic() + deadline_s
        fd = self.p.stdout.fileno()
        while "\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or self.p.poll() is not None and not select.select([fd], [], [], 0)[0]:
                return None
            r, _, _ = select.select([fd], [], [], min(0.02, left))
            if poll is not None:
                poll()
            if r:
                chunk = os.read(fd, 1 << 20).decode()
                if not chunk:
                    return None
                self.buf += chunk
        line, self.buf = self.buf.split("\n", 1)
        return json.loads(line)

    def ask(self, sql: str, dialect: str, deadline_s: float, poll=None) -> dict | None:
        try:
            self.p.stdin.write(json.dumps({"op": "exec", "sql": sql, "dialect": dialect}) + "\n")
            self.p.stdin.flush()
        except OSError:
            return None
        return self.read(deadline_s, poll)

    def kill(self) -> None:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(self.p.pid)
            for q in [*p.children(recursive=True), p]:
                with contextlib.suppress(psutil.Error):
                    q.kill()
        self.p.wait(10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.p.stdin.write(json.dumps({"op": "exit"}) + "\n")
            self.p.stdin.flush()
            self.p.wait(30)
        if self.p.poll() is None:
            self.kill()


# ---------------------------------------------------------------- running
def target_of(variant: str, setup: Setup) -> dict:
    fam, priv = ENGINES[variant]
    if fam in ("duckdb", "sqlite"):
        return {"engine": fam, "path": str(setup.file_db[fam]), "cli_data": str(setup.file_db[fam]),
                "cli_db": "concert_singer"}
    user = ("postgres" if priv else RO) if fam == "postgresql" else \
        ("sqlarbiter" if priv else RO_MULTI if variant == "mysql-multidb" else RO)
    url = (f"postgresql://{user}@127.0.0.1:5432/{DB}" if fam == "postgresql" else
           f"mysql://{user}@127.0.0.1:3306/{DB}")
    return {"engine": "duckdb", "url": url, "cli_data": url, "cli_db": DB, "optin": priv}


def one_run(setup, variant, fam, case, dialect, timeout, runner, cli=False) -> dict:
    cid, cls, _, sql0, extra = case
    mark = MARKS / f"{variant}_{cid}_{dialect}{'_cli' if cli else ''}"
    sql = fill(sql0, mark, fam)
    before = state(setup, fam)
    poll = RssPoller(fam)
    base_srv = poll.server()
    peak = {"tree": 0, "server": 0, "procs": 0}

    def sample(pid):
        t, n = RssPoller.tree(pid)
        peak["tree"] = max(peak["tree"], t)
        peak["procs"] = max(peak["procs"], n)
        peak["server"] = max(peak["server"], poll.server() - base_srv)

    t0 = time.perf_counter()
    out = runner(sql, dialect, sample)
    wall = time.perf_counter() - t0
    time.sleep(0.05)
    after = state(setup, fam)
    writes = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    rec = {"engine": variant, "case": cid, "class": cls, "dialect": dialect, "via": "cli" if cli else "executor",
           "sql": sql, "verdict": out.get("verdict"), "wall_s": round(out.get("wall_s", wall), 3),
           "harness_wall_s": round(wall, 3), "peak_tree_rss_mb": round(peak["tree"] / 2**20, 1),
           "peak_server_rss_delta_mb": round(peak["server"] / 2**20, 1), "procs": peak["procs"]}
    res = out.get("result") or {}
    rec["error_kind"] = res.get("error_kind")
    rec["error"] = (res.get("error") or out.get("error") or "")[:300] or None
    rec["rows"] = json.dumps(res.get("rows"))[:300] if res.get("rows") else None
    text = json.dumps({"c": res.get("columns"), "r": res.get("rows"), "e": res.get("error") or out.get("error")})
    # a refused executor answers with its own message (it names the role's grants): nothing was run
    rec["disclosures"] = [] if out.get("verdict") == "refused" else disclosures(setup, sql, text, fam)
    rec["writes"] = [f"{k}: {str(before.get(k))[:60]} -> {str(after.get(k))[:60]}" for k in writes]
    if writes:
        repair(setup, fam, before, after)
    rec["past_timeout"] = bool(out.get("hung")) or (not cli and out.get("wall_s", wall) > timeout + 1.0)
    rec["hung"] = bool(out.get("hung"))
    return rec


ENGINE_INFO: dict[str, dict] = {}


def run_engine(setup, variant: str, cases, timeout: float, cli_sample: int, rss_cap_mb: int, log) -> list[dict]:
    fam, priv = ENGINES[variant]
    tgt = target_of(variant, setup)
    spec = {"engine": tgt["engine"], "timeout": timeout, "url": tgt.get("url"), "path": tgt.get("path"),
            "optin": tgt.get("optin", False)}
    child = Child(spec)
    if child.error:
        log(f"  {variant}: executor not built / warm-up failed: {child.error}")
    if child.ready.get("default_check"):
        log(f"  {variant}: without an opt-in: {child.ready['default_check']}; opted in: {child.ready.get('opted_in')}")
    recs = []
    ENGINE_INFO[variant] = {"executor_error": child.error, "default_check": child.ready.get("default_check"),
                            "opted_in": child.ready.get("opted_in", False)}
    deadline = timeout + 30.0

    def executor_runner(sql, dialect, sample):
        nonlocal child
        killed = {"rss": False}

        def poll():
            sample(child.p.pid)
            if RssPoller.tree(child.p.pid)[0] > rss_cap_mb * 2**20:
                killed["rss"] = True
                child.kill()

        t0 = time.perf_counter()
        out = child.ask(sql, dialect, deadline, poll)
        if out is None:  # hung past the deadline, died, or killed for memory: restart
            wall = time.perf_counter() - t0
            child.kill()
            child = Child(spec)
            return {"verdict": "harness-killed (rss cap)" if killed["rss"] else "hung/died", "wall_s": wall,
                    "hung": not killed["rss"], "error": "the executor process was killed by the harness"}
        return out

    for case in cases:
        cid, cls, fams, sql0, extra = case
        if not (fams == "*" or any(FAM[f] == fam for f in fams)):
            continue
        dialects = ["sqlite"] + ([NATIVE[fam]] if NATIVE[fam] else [])
        if cls in ("time", "memory"):  # engine-level limits: one dialect (the engine's own when it has one)
            dialects = dialects[-1:]
        for dialect in extra.get("dialects", dialects):
            rec = one_run(setup, variant, fam, case, dialect, timeout, executor_runner)
            if extra.get("probe") and rec["verdict"] == "ok" or extra.get("probe") and cls == "session":
                probe_hits, verdicts = [], []
                for _ in range(4):
                    pd = NATIVE[fam] or "sqlite"
                    out = child.ask(extra["probe"], pd, deadline) or {}
                    res = out.get("result") or {}
                    verdicts.append(out.get("verdict"))
                    if res.get("ok") and re.search(extra["leak"], json.dumps(res.get("rows"))):
                        probe_hits.append(json.dumps(res.get("rows"))[:80])
                rec["probe_verdicts"] = verdicts
                # a rejected setter ran nothing: what the probe sees then is the session's natural state
                # (e.g. current_user = postgres under the superuser variant), not a leak
                rec["session_leak"] = ([f"probe {extra['probe']!r} -> {probe_hits[0]}"]
                                       if probe_hits and rec["verdict"] != "rejected" else [])
            if extra.get("admin_probe"):
                hit = admin_probe(setup, extra["admin_probe"])
                rec.setdefault("session_leak", [])
                if hit:
                    rec["session_leak"].append(hit)
            rec.setdefault("session_leak", [])
            recs.append(rec)
            flag = " ".join(x for x, on in (("DISCLOSURE", rec["disclosures"]), ("WRITE", rec["writes"]),
                                             ("LEAK", rec["session_leak"]), ("SLOW", rec["past_timeout"])) if on)
            log(f"  {variant:<22} {cid:<32} {dialect:<8} {rec['verdict']:<9} {rec['wall_s']:6.2f}s "
                f"{rec['peak_tree_rss_mb']:7.0f}MB {flag}")
    child.close()
    # the CLI itself, for a sample of cases
    sample_cases = [c for c in cases if c[4].get("cli") and (c[2] == "*" or any(FAM[f] == fam for f in c[2]))]
    cold = None  # the CLI's own start (interpreter, imports, sandbox workers): the control case's wall time
    for case in sample_cases[:cli_sample]:
        recs.append(run_cli(setup, variant, fam, tgt, case, timeout, rss_cap_mb))
        r = recs[-1]
        if case[0] == "control":
            cold = r["harness_wall_s"]
            r["past_timeout"] = r["hung"]
        elif cold is not None:
            # the CLI's own start varies by seconds on a loaded machine: 4 s of slack over the control's
            r["past_timeout"] = r["hung"] or r["harness_wall_s"] - cold > timeout + 5.0
        log(f"  {variant:<22} {case[0]:<32} cli      {r['verdict']:<9} {r['wall_s']:6.2f}s "
            f"{r['peak_tree_rss_mb']:7.0f}MB {'DISCLOSURE' if r['disclosures'] else ''} "
            f"{'WRITE' if r['writes'] else ''}")
    return recs


def run_cli(setup, variant, fam, tgt, case, timeout, rss_cap_mb) -> dict:
    root = tree_root()
    dialect = "sqlite"

    def runner(sql, dialect, sample):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "cli", "check", "--db", tgt["cli_db"], "--data", tgt["cli_data"],
               "--engine", tgt["engine"], "--timeout", str(timeout), "--json", "--dialect", dialect, "--", sql]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        hung = False
        while p.poll() is None:
            sample(p.pid)
            if time.perf_counter() - t0 > timeout + 60 or RssPoller.tree(p.pid)[0] > rss_cap_mb * 2**20:
                hung = True
                with contextlib.suppress(psutil.Error):
                    for q in [*psutil.Process(p.pid).children(recursive=True), psutil.Process(p.pid)]:
                        q.kill()
                break
            time.sleep(0.02)
        stdout, stderr = p.communicate(timeout=30)
        wall = time.perf_counter() - t0
        try:
            d = json.loads(stdout)
            return {"verdict": d.get("verdict"), "result": d, "wall_s": wall, "hung": hung,
                    "elapsed_s": (d.get("elapsed_ms") or 0) / 1000}
        except ValueError:
            refused = "is refused: its role" in (stderr or "")  # sqlbox.privileges: nothing ran
            return {"verdict": "refused" if refused else f"exit {p.returncode}", "error": (stderr or stdout)[-300:],
                    "wall_s": wall,
                    "hung": hung, "elapsed_s": wall if hung else 0.0}

    return one_run(setup, variant, fam, case, dialect, timeout, runner, cli=True)


def summarize(recs: list[dict], variants: list[str]) -> str:
    lines = ["| engine | runs | ok / rejected / failed / other | disclosures | writes | session leaks | "
             "past timeout+1s | max peak RSS tree (MB) | max server RSS delta (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        rs = [r for r in recs if r["engine"] == v]
        if not rs:
            continue
        cnt = Counter(r["verdict"] for r in rs)
        n = cnt.__getitem__
        other = len(rs) - n("ok") - n("rejected") - n("failed")
        label = v + (" (PRIVILEGED role)" if ENGINES[v][1] else " (role reads a 2nd database)"
                     if v == "mysql-multidb" else "")
        lines.append(f"| {label} | {len(rs)} | {n('ok')} / {n('rejected')} / {n('failed')} / {other} | "
                     f"{sum(1 for r in rs if r['disclosures'])} | {sum(1 for r in rs if r['writes'])} | "
                     f"{sum(1 for r in rs if r.get('session_leak'))} | {sum(1 for r in rs if r['past_timeout'])} | "
                     f"{max(r['peak_tree_rss_mb'] for r in rs):.0f} | "
                     f"{max(r['peak_server_rss_delta_mb'] for r in rs):.0f} |")
    out = ["\n".join(lines), ""]
    for v in variants:
        info = ENGINE_INFO.get(v, {})
        if info.get("executor_error") or info.get("default_check"):
            out.append(f"{v}: executor error: {info.get('executor_error')}; privileged role without opt-in: "
                       f"{info.get('default_check')}; opted in by name: {info.get('opted_in')}")
    out.append("")
    for v in variants:
        bad = [r for r in recs if r["engine"] == v and (r["disclosures"] or r["writes"] or r.get("session_leak")
                                                         or r["past_timeout"])]
        if not bad:
            continue
        out.append(f"{v}{' (PRIVILEGED role)' if ENGINES[v][1] else ''}:")
        for r in bad:
            what = []
            if r["disclosures"]:
                what.append("disclosed " + ", ".join(r["disclosures"]))
            if r["writes"]:
                what.append("wrote " + "; ".join(r["writes"]))
            if r.get("session_leak"):
                what.append("leaked " + "; ".join(r["session_leak"]))
            if r["past_timeout"]:
                what.append(f"ran {r['wall_s']:.1f} s ({r['verdict']})")
            out.append(f"  - [{r['class']}] {r['case']} ({r['via']}, dialect {r['dialect']}): {' | '.join(what)}")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help=f"comma-separated, of: {', '.join(ENGINES)} (default: all)")
    ap.add_argument("--timeout", type=float, default=2.0, help="executor timeout per query (s)")
    ap.add_argument("--out", default=None, help="write every run and the summary as JSON here")
    ap.add_argument("--cli-sample", type=int, default=4, help="cases per engine also run through the CLI")
    ap.add_argument("--only", default=None, help="regex over case ids")
    ap.add_argument("--rss-cap-mb", type=int, default=8000, help="kill an executor tree above this (safety)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    variants = [v.strip() for v in args.engines.split(",") if v.strip()]
    bad = [v for v in variants if v not in ENGINES]
    if bad:
        ap.error(f"unknown engine(s) {bad}; choose from {list(ENGINES)}")
    cases = [c for c in corpus() if not args.only or re.search(args.only, c[0]) or c[0] == "control"]
    root = tree_root()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"tree under test: {root} ({tree_rev(root)}); {len(cases)} cases; timeout {args.timeout} s")
    fams = {ENGINES[v][0] for v in variants}
    setup = Setup(fams)
    setup.files()
    if "postgresql" in fams:
        setup.postgres()
    if "mysql" in fams:
        setup.mysql()
    setup.build_markers()
    t0 = time.time()
    recs: list[dict] = []
    for v in variants:
        tv = time.time()
        log(f"== {v}")
        recs += run_engine(setup, v, cases, args.timeout, args.cli_sample, args.rss_cap_mb, log)
        log(f"== {v}: {time.time() - tv:.0f} s")
    summary = summarize(recs, variants)
    print(f"# Hostile corpus: tree {root} ({tree_rev(root)}), timeout {args.timeout} s, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {time.time() - t0:.0f} s\n")
    print(summary)
    if args.out:
        Path(args.out).write_text(json.dumps({"tree": str(root), "rev": tree_rev(root), "timeout_s": args.timeout,
                                              "engines": variants, "engine_info": ENGINE_INFO, "summary": summary,
                                              "runs": recs}, indent=1))
    for c in (setup.pg_db, setup.pg, setup.my, setup.my_idle):
        with contextlib.suppress(Exception):
            if c is not None:
                c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
