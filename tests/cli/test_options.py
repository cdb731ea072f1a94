"""The shared database/config options: the same flags and help everywhere, and one resolution order
(demo, config `databases`, $SQLARBITER_DATABASES, every --data)."""

from __future__ import annotations

import argparse
import sqlite3

import pytest

from cli.options import DATA_HELP, add_database_options, cli_registry, load_cli_config
from planner.config import ConfigError


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SQLARBITER_DATABASES", raising=False)
    monkeypatch.delenv("SQLARBITER_CONFIG", raising=False)


def _db(path, table="t"):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    con.commit()
    con.close()
    return path


def _parse(argv, **kw):
    p = argparse.ArgumentParser()
    add_database_options(p, **kw)
    return p.parse_args(argv)


def test_options_and_defaults():
    a = _parse(["--db", "x", "--data", "a", "--data", "b", "--config", "c.toml"])
    assert (a.db, a.data, a.config) == ("x", ["a", "b"], "c.toml")
    a = _parse([], db="optional")
    assert (a.db, a.data, a.config) == (None, None, None)
    with pytest.raises(SystemExit):
        _parse([])  # --db required by default
    assert not hasattr(_parse([], db=None), "db")
    assert not hasattr(_parse(["--db", "x"], config=False), "config")


def test_resolution_order_config_env_then_data(tmp_path, monkeypatch):
    cfg_db = _db(tmp_path / "cfg" / "shop.sqlite")
    env_db = _db(tmp_path / "env" / "zoo.sqlite")
    spider = tmp_path / "spider"
    _db(spider / "database" / "concert" / "concert.sqlite")
    _db(spider / "database" / "pets" / "pets.sqlite")
    flat = _db(tmp_path / "flat" / "shop.sqlite", table="other")  # same id as the config's: --data wins
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'databases = ["{cfg_db}"]\n')
    monkeypatch.setenv("SQLARBITER_DATABASES", str(env_db))
    args = _parse(["--db", "shop", "--config", str(cfg), "--data", str(spider), "--data", str(flat)])
    assert load_cli_config(args).databases == [str(cfg_db), str(env_db), str(spider), str(flat)]
    reg = cli_registry(args)
    assert reg.ids() == ["concert", "demo", "pets", "shop", "zoo"]
    assert reg.get("shop").path == flat.resolve()
    assert reg.schema("shop").tables[0].name == "other"


def test_bad_entries_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a database URL, a database file nor a directory"):
        cli_registry(_parse(["--db", "x", "--data", str(tmp_path / "missing")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no databases found"):
        cli_registry(_parse(["--db", "x", "--data", str(tmp_path / "empty")]))
    with pytest.raises(ConfigError):
        load_cli_config(_parse(["--db", "x", "--config", str(tmp_path / "nope.toml")]))


def test_every_database_command_shares_the_options():
    """plan, check, databases, serve take --data/--config (and --db where they act on one database) with the
    same help; route fit/warm-start take --data; models list and eval take the shared --config."""
    from cli.main import build_parser

    root = build_parser()

    def sub(parser, *names):
        for n in names:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[n]
        return {opt: a for a in parser._actions for opt in a.option_strings}

    helps = {}
    for cmd, has_db in ((("plan",), True), (("check",), True), (("databases",), False), (("serve",), False)):
        opts = sub(root, *cmd)
        assert opts["--data"].help == DATA_HELP and opts["--data"].metavar == "DIR_OR_FILE"
        assert opts["--data"].default is None and isinstance(opts["--data"], argparse._AppendAction)
        assert ("--db" in opts) == has_db
        if has_db:
            assert opts["--db"].required and opts["--db"].metavar == "ID"
            helps.setdefault("--db", set()).add(opts["--db"].help)
        helps.setdefault("--config", set()).add(opts["--config"].help)
    for cmd in (("route", "fit"), ("route", "warm-start")):  # --data for the schema features; no --db/--config
        opts = sub(root, *cmd)
        assert opts["--data"].help == DATA_HELP and "--db" not in opts and "--config" not in opts
    for cmd in (("models", "list"), ("eval", "spider"), ("eval", "bird")):
        helps["--config"].add(sub(root, *cmd)["--config"].help)
    assert all(len(h) == 1 for h in helps.values()), helps
