"""sqlbox.merged: the merged database keeps every table (renamed), its rows, keys and indexes; SQL
rewritten to the merged names returns what the original returns on its own database."""

from __future__ import annotations

import sqlite3

import pytest

from sqlbox.merged import RewriteError, build_merged, merged_name, rewrite_sql, split_name, table_map


def _db(path, ddl, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(ddl)
    for sql, vals in rows:
        con.executemany(sql, vals)
    con.commit()
    con.close()


@pytest.fixture()
def spider_layout(tmp_path):
    root = tmp_path / "database"
    _db(root / "music" / "music.sqlite",
        'CREATE TABLE "singer" (id INTEGER PRIMARY KEY, name TEXT, age INT);\n'
        "CREATE TABLE song (sid INT, singer_id INT REFERENCES singer(id), title TEXT);\n"
        "CREATE INDEX song_by_singer ON song(singer_id);",
        [("INSERT INTO singer VALUES (?,?,?)", [(1, "Ann", 31), (2, "Bob", 25)]),
         ("INSERT INTO song VALUES (?,?,?)", [(1, 1, "Hello"), (2, 1, "World"), (3, 2, "Hey")])])
    _db(root / "shop" / "shop.sqlite",
        "CREATE TABLE singer (id INTEGER, note TEXT);\nCREATE TABLE [order] (oid INT, price REAL);",
        [("INSERT INTO singer VALUES (?,?)", [(7, "x")]),
         ("INSERT INTO \"order\" VALUES (?,?)", [(1, 2.5), (2, "12abc")])])
    return root


def test_build_keeps_tables_rows_keys_and_is_cached(spider_layout, tmp_path):
    out = tmp_path / "m.sqlite"
    p = build_merged(spider_layout, out)
    con = sqlite3.connect(p)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == {"music__singer", "music__song", "shop__singer", "shop__order"}
    assert con.execute('SELECT * FROM "music__song" ORDER BY rowid').fetchall() == [(1, 1, "Hello"), (2, 1, "World"), (3, 2, "Hey")]
    assert con.execute('SELECT price, typeof(price) FROM "shop__order"').fetchall() == [(2.5, "real"), ("12abc", "text")]
    fk = con.execute('PRAGMA foreign_key_list("music__song")').fetchall()
    assert fk[0][2] == "music__singer"
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE type='index' AND name='music__song_by_singer'").fetchone()[0] == 1
    con.close()
    mtime = p.stat().st_mtime_ns
    assert build_merged(spider_layout, out) == p and p.stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_rewrite_matches_original_results(spider_layout, tmp_path):
    merged = build_merged(spider_layout, tmp_path / "m.sqlite")
    tables = table_map(spider_layout)
    queries = [
        "SELECT singer.name FROM singer JOIN song ON singer.id = song.singer_id WHERE song.title = 'Hey'",
        "SELECT T1.name, count(*) FROM singer AS T1 JOIN song AS T2 ON T1.id = T2.singer_id GROUP BY T1.id",
        "WITH singer AS (SELECT 1 AS n) SELECT n FROM singer",  # a CTE shadows the table name
        "SELECT name FROM singer WHERE id NOT IN (SELECT singer_id FROM song WHERE sid > 2)",
    ]
    orig = sqlite3.connect(spider_layout / "music" / "music.sqlite")
    m = sqlite3.connect(merged)
    for sql in queries:
        new = rewrite_sql(sql, "music", tables["music"])
        assert sorted(m.execute(new).fetchall()) == sorted(orig.execute(sql).fetchall()), new
    assert '"music__singer"' in rewrite_sql(queries[0], "music", tables["music"])
    assert "music__" not in rewrite_sql(queries[2], "music", tables["music"])
    with pytest.raises(RewriteError):
        rewrite_sql("SELECT 1; SELECT 2", "music", tables["music"])


def test_names():
    assert merged_name("db", "t") == "db__t"
    assert split_name("db__t_x") == ("db", "t_x") and split_name("plain") == (None, "plain")
