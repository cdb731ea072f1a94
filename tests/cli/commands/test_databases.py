"""`sqlarbiter databases` through the real CLI entry point (listing; load-spider's usage errors, which need no
server; the PostgreSQL/MariaDB paths are in tests/sqlbox)."""

import json

import pytest

from cli.main import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SQLARBITER_DATABASES", raising=False)


def test_databases_lists_demo(capsys):
    assert main(["databases"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "sqlite" in out
    assert main(["databases", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert items == [{"db_id": "demo", "kind": "sqlite", "dialect": "sqlite", "path": items[0]["path"], "n_tables": 4}]


def test_load_spider_reads_the_spider_folder_from_data(tmp_path, capsys):
    """`--data DIR` names the Spider folder, as in `eval`; the old `--spider` still works (hidden)."""
    url = "postgresql://nobody@127.0.0.1:1"  # never reached: the folder is checked first
    assert main(["databases", "load-spider", "--to", url, "--data", str(tmp_path)]) == 2
    assert f"no Spider database/ folder under {tmp_path} (give --data DIR)" in capsys.readouterr().err
    assert main(["databases", "load-spider", "--to", url, "--spider", str(tmp_path)]) == 2
    assert f"under {tmp_path}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["databases", "load-spider", "--help"])
    out = capsys.readouterr().out
    assert "--data DIR" in out and "--spider" not in out
