"""`sqlarbiter check` through the real CLI entry point (with `databases` where both must see the same set)."""

import json

import pytest

from cli.main import main
from core.settings import spider_dir

SPIDER = spider_dir()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SQLARBITER_DATABASES", raising=False)


def test_check_ok_prints_rows(capsys):
    rc = main(["check", "--db", "demo", "SELECT name, age FROM singer WHERE age > 44 ORDER BY age DESC"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("ok: 3 row(s), 2 column(s)")
    assert "Elena Sorrento" in out and "name" in out.splitlines()[1]


@pytest.mark.parametrize("engine", ["duckdb", "sqlite"])
def test_check_json(capsys, engine):
    rc = main(["check", "--db", "demo", "--engine", engine, "--json", "SELECT count(*) FROM singer WHERE age > 30"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["verdict"] == "ok" and data["rows"] == [[9]] and data["engine"] == engine
    assert data["fingerprint"] and data["db"] == "demo"


def test_check_rejected_and_failed(capsys):
    assert main(["check", "--db", "demo", "DROP TABLE singer"]) == 1
    assert capsys.readouterr().out.startswith("rejected: DROP")
    assert main(["check", "--db", "demo", "SELECT nope FROM singer"]) == 1
    assert capsys.readouterr().out.startswith("failed (binder)")
    assert main(["check", "--db", "demo", "--json", "SELECT * FROM read_csv('/etc/passwd')"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "rejected"
    assert main(["check", "--db", "demo", "--timeout", "0.5",
                 "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"]) == 1
    assert "timeout" in capsys.readouterr().out


def test_check_bad_usage(capsys, tmp_path):
    assert main(["check", "--db", "nope", "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert "unknown database 'nope'" in err and "demo" in err
    assert main(["check", "--db", "demo", "--data", str(tmp_path / "missing"), "SELECT 1"]) == 2
    assert main(["check", "--db", "demo", "--timeout", "0", "SELECT 1"]) == 2
    with pytest.raises(SystemExit) as ei:
        main(["check", "SELECT 1"])  # --db is required
    assert ei.value.code == 2


@pytest.mark.skipif(not (SPIDER / "database" / "concert_singer").is_dir(), reason="Spider databases not available")
def test_spider_data_dir(capsys, monkeypatch):
    assert main(["check", "--db", "concert_singer", "--data", str(SPIDER), "SELECT count(*) FROM singer"]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 row(s)")
    monkeypatch.setenv("SQLARBITER_DATABASES", str(SPIDER / "database"))
    assert main(["databases", "--json"]) == 0
    ids = [i["db_id"] for i in json.loads(capsys.readouterr().out)]
    assert "demo" in ids and "concert_singer" in ids and len(ids) > 100


def test_data_repeatable_files_and_config_databases(capsys, tmp_path):
    """--data takes files and folders, repeatable; the config's `databases` count too (same set as `plan`)."""
    import sqlite3

    def db(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE t (x INTEGER)")
        con.execute("INSERT INTO t VALUES (7)")
        con.commit()
        con.close()
        return path

    one = db(tmp_path / "files" / "one.sqlite")
    db(tmp_path / "folder" / "two" / "two.sqlite")
    cfg_db = db(tmp_path / "cfg" / "three.db")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'databases = ["{cfg_db}"]\n')
    assert main(["databases", "--json", "--data", str(one), "--data", str(tmp_path / "folder"),
                 "--config", str(cfg)]) == 0
    assert [i["db_id"] for i in json.loads(capsys.readouterr().out)] == ["demo", "one", "three", "two"]
    assert main(["check", "--db", "three", "--config", str(cfg), "--json", "SELECT x FROM t"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [[7]]
    bad = tmp_path / "bad.toml"
    bad.write_text("databases = 3\n")
    assert main(["check", "--db", "demo", "--config", str(bad), "SELECT 1"]) == 2
    assert "databases" in capsys.readouterr().err
