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

    from api.cmd_serve import format_plan

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
