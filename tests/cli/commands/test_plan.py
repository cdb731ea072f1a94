"""`sqlarbiter plan` and `sqlarbiter serve --help` through the real CLI dispatcher and the real embedded model."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from core.model import Plan


@pytest.fixture
def cheap_config(tmp_path):
    p = tmp_path / "cfg.toml"
    p.write_text(f'store_url = "sqlite:///{tmp_path / "store.db"}"\n'
                 "[defaults]\nn = 2\nmax_tokens = 48\nreasoning_budget = 32\n")
    return p


def test_plan_json_and_readable(cheap_config, capsys):
    rc = main(["plan", "How many singers are older than 30?", "--db", "demo", "--config", str(cheap_config),
               "--json", "--execute"])
    out = capsys.readouterr().out
    plan = Plan.model_validate(json.loads(out))
    assert rc == (0 if plan.status == "ok" else 1)
    assert plan.question.db_id == "demo" and plan.candidates
    # the plan was stored
    from planner.plans import PlanStore

    assert PlanStore(f"sqlite:///{cheap_config.parent / 'store.db'}").get(plan.id) == plan

    from cli.commands.plan import format_plan

    text = format_plan(plan)
    for needle in ("Chosen SQL", "Why", "Candidates (", "Timings (ms)", "Total cost", plan.id):
        assert needle in text


def test_plan_bad_usage_exit_2(cheap_config, tmp_path, capsys):
    assert main(["plan", "q?", "--db", "atlantis", "--config", str(cheap_config), "--no-store"]) == 2
    assert "atlantis" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults]\npolicy = 'best'\n")
    assert main(["plan", "q?", "--db", "demo", "--config", str(bad)]) == 2
    assert "defaults.policy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["plan", "q?", "--db", "demo", "--policy", "best"])
    assert e.value.code == 2


def test_help_texts(capsys):
    for cmd in ("serve", "plan"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--port" in out and "--execute" in out and "--policy" in out


def test_plan_policy_choices_come_from_the_registry(capsys):
    from planner.select import policy_names

    with pytest.raises(SystemExit) as e:
        main(["plan", "q?", "--db", "demo", "--policy", "best", "--no-store"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'best'" in err and all(repr(p) in err for p in policy_names())


def _spider_layout(root):
    """A one-database folder in the Spider layout (database/<id>/<id>.sqlite), built with real SQLite."""
    import sqlite3

    f = root / "database" / "tiny_concerts" / "tiny_concerts.sqlite"
    f.parent.mkdir(parents=True)
    con = sqlite3.connect(f)
    con.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
    con.executemany("INSERT INTO singer VALUES (?, ?, ?)", [(1, "Ann", 31), (2, "Bo", 25), (3, "Cy", 40)])
    con.commit()
    con.close()
    return root


def test_plan_data_option_resolves_databases(cheap_config, tmp_path, monkeypatch, capsys):
    """`plan --data DIR` registers the folder's databases for this run (no SQLARBITER_DATABASES needed): an
    unknown id is refused with exit 2 listing them; a missing --data path is exit 2 too."""
    monkeypatch.delenv("SQLARBITER_DATABASES", raising=False)
    data = _spider_layout(tmp_path / "spiderish")
    assert main(["plan", "q?", "--data", str(data), "--db", "atlantis", "--config", str(cheap_config),
                 "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "atlantis" in err and "tiny_concerts" in err and "demo" in err
    assert main(["plan", "q?", "--data", str(tmp_path / "missing"), "--db", "demo", "--config", str(cheap_config),
                 "--no-store"]) == 2
    assert "missing" in capsys.readouterr().err


def test_plan_on_a_data_folder_database(cheap_config, tmp_path, monkeypatch, capsys):
    """A real (tiny-budget) plan on a database that only --data names."""
    monkeypatch.delenv("SQLARBITER_DATABASES", raising=False)
    data = _spider_layout(tmp_path / "spiderish")
    rc = main(["plan", "How many singers are older than 30?", "--data", str(data), "--db", "tiny_concerts",
               "--config", str(cheap_config), "--n", "1", "--no-store", "--json"])
    plan = Plan.model_validate(json.loads(capsys.readouterr().out))
    assert rc == (0 if plan.status == "ok" else 1)
    assert plan.question.db_id == "tiny_concerts" and len(plan.candidates) == 1


SPIDER_DB = __import__("core.settings", fromlist=["spider_dir"]).spider_dir() / "database"


@pytest.mark.slow
@pytest.mark.skipif(not (SPIDER_DB / "concert_singer").is_dir(), reason="Spider databases not available")
def test_plan_spider_concert_singer(cheap_config, monkeypatch, capsys):
    """The README example: `sqlarbiter plan --data <spider database dir> --db concert_singer ...`."""
    monkeypatch.delenv("SQLARBITER_DATABASES", raising=False)
    rc = main(["plan", "How many singers do we have?", "--data", str(SPIDER_DB), "--db", "concert_singer",
               "--config", str(cheap_config), "--n", "1", "--no-store", "--json"])
    plan = Plan.model_validate(json.loads(capsys.readouterr().out))
    assert rc == (0 if plan.status == "ok" else 1)
    assert plan.question.db_id == "concert_singer" and len(plan.candidates) == 1
