"""The demo database: built from sqlbox/demo.sql, atomically, once, rebuilt when the script changes."""

import sqlite3

import pytest

from sqlbox import demo


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_DATA_DIR", str(tmp_path / "data"))


def test_build_creates_database_with_expected_content():
    path = demo.build_demo()
    assert path == demo.demo_path() and path.is_file()
    con = sqlite3.connect(path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"singer", "stadium", "concert", "singer_in_concert"}
        assert con.execute("SELECT count(*) FROM singer WHERE age > 30").fetchone()[0] == 9
        for t in tables:
            n = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            assert 10 <= n <= 40
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        con.close()


def test_build_is_idempotent_and_leaves_no_temp_files():
    p1 = demo.build_demo()
    mtime = p1.stat().st_mtime_ns
    p2 = demo.build_demo()
    assert p2 == p1 and p2.stat().st_mtime_ns == mtime
    assert [f.name for f in p1.parent.iterdir() if f.name.startswith(".demo-")] == []


def test_stale_or_corrupt_file_is_rebuilt():
    path = demo.demo_path()
    path.write_bytes(b"not a database")
    demo.build_demo()
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT count(*) FROM concert").fetchone()[0] == 12
    finally:
        con.close()


def test_build_to_explicit_path(tmp_path):
    p = demo.build_demo(tmp_path / "x" / "d.sqlite", force=True)
    assert p.is_file() and p.parent.name == "x"
