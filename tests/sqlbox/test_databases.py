"""The database registry: registration forms, unknown ids, cached thread-safe schemas."""

import sqlite3
import threading

import pytest

from core.settings import spider_dir
from sqlbox.databases import DatabaseRegistry, UnknownDatabase, registry_for

SPIDER_DB = spider_dir() / "database"
needs_spider = pytest.mark.skipif(not (SPIDER_DB / "concert_singer").is_dir(),
                                  reason=f"Spider databases not found under {SPIDER_DB}")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SQLARBITER_DATABASES", raising=False)


def _make_db(path, rows=3):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"n{i}") for i in range(rows)])
    con.commit()
    con.close()
    return path


def test_register_and_get(tmp_path):
    reg = DatabaseRegistry()
    info = reg.register("a", _make_db(tmp_path / "a.sqlite"))
    assert info.kind == "sqlite" and info.path.is_absolute()
    assert reg.get("a") == info and "a" in reg and "b" not in reg
    assert reg.ids() == ["a"]


def test_unknown_database_lists_known_ids(tmp_path):
    reg = DatabaseRegistry()
    reg.register("alpha", _make_db(tmp_path / "alpha.sqlite"))
    reg.register("beta", _make_db(tmp_path / "beta.db"))
    with pytest.raises(UnknownDatabase) as ei:
        reg.get("gamma")
    assert "gamma" in str(ei.value) and "alpha" in str(ei.value) and "beta" in str(ei.value)
    assert isinstance(ei.value, LookupError)


def test_register_rejects_bad_input(tmp_path):
    reg = DatabaseRegistry()
    with pytest.raises(ValueError, match="not a database file"):
        reg.register("x", tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError):
        reg.register("x", tmp_path / "missing.sqlite")
    with pytest.raises(ValueError):
        reg.register("", _make_db(tmp_path / "y.sqlite"))


def test_register_dir_layouts(tmp_path):
    nested = tmp_path / "nested"
    _make_db(nested / "database" / "one" / "one.sqlite")
    _make_db(nested / "database" / "two" / "two.sqlite")
    (nested / "database" / "empty").mkdir()
    reg = DatabaseRegistry()
    assert reg.register_dir(nested) == ["one", "two"]  # Spider root holding database/
    reg2 = DatabaseRegistry()
    assert reg2.register_dir(nested / "database") == ["one", "two"]
    flat = tmp_path / "flat"
    _make_db(flat / "x.sqlite")
    _make_db(flat / "y.db")
    reg3 = DatabaseRegistry()
    assert reg3.register_dir(flat) == ["x", "y"]
    with pytest.raises(ValueError, match="no databases"):
        DatabaseRegistry().register_dir(tmp_path / "nested" / "database" / "empty")
    with pytest.raises(NotADirectoryError):
        DatabaseRegistry().register_dir(tmp_path / "nope")


def test_schema_is_cached_and_thread_safe(tmp_path):
    reg = DatabaseRegistry()
    reg.register("a", _make_db(tmp_path / "a.sqlite"))
    out = []
    threads = [threading.Thread(target=lambda: out.append(reg.schema("a"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and all(s is out[0] for s in out)
    assert reg.schema("a") is out[0]
    assert out[0].table("T").column("NAME").name == "name"


def test_registry_for_has_demo_and_the_entries(tmp_path):
    reg = registry_for()
    assert reg.ids() == ["demo"]
    assert {t.name for t in reg.schema("demo").tables} == {"singer", "stadium", "concert", "singer_in_concert"}
    _make_db(tmp_path / "more" / "extra.sqlite")
    assert registry_for([tmp_path / "more"]).ids() == ["demo", "extra"]


@needs_spider
def test_register_spider_layout():
    reg = registry_for([SPIDER_DB.parent])
    assert "concert_singer" in reg and "demo" in reg
    assert len(reg.ids()) >= 100
    assert reg.get("concert_singer").path.name == "concert_singer.sqlite"
