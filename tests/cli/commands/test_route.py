"""`sqlarbiter route ...` usage through the real CLI entry point (`route fit` end to end: tests/routing/test_carrot.py)."""

import json

import pytest

from cli.main import main


def test_costs_reads_another_cost_file_from_costs(tmp_path, capsys):
    assert main(["route", "costs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    bad = tmp_path / "costs.toml"
    bad.write_text("not [ toml\n")
    assert main(["route", "costs", "--costs", str(bad)]) == 1
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # --config names the configuration on every command, not a cost file
        main(["route", "costs", "--config", str(bad)])
    assert e.value.code == 2
