"""`sqlarbiter select fit` then replay with `--ranker` / `--policy ranker --cv`, through the CLI dispatcher."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from core.settings import candidates_dir, spider_dir

POOL = candidates_dir() / "spider_dev_samples" / "qwen2.5-coder-7b-instruct_T0.8_x5_200q.jsonl"
needs_data = pytest.mark.skipif(not POOL.is_file() or not (spider_dir() / "dev.json").is_file(),
                                reason="shared Spider data not available")


def test_fit_usage_errors_exit_2(tmp_path, capsys):
    assert main(["select", "fit", "--out", str(tmp_path / "r.joblib")]) == 2
    assert "give training data" in capsys.readouterr().err
    assert main(["select", "fit", "--replay", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r")]) == 2
    assert main(["select", "fit", "--systems", "NoSuchSystem", "--out", str(tmp_path / "r")]) == 2
    assert "choose from" in capsys.readouterr().err
    assert main(["select", "show", str(tmp_path / "missing.joblib")]) == 2
    assert main(["eval", "spider", "--replay", str(POOL), "--ranker", str(tmp_path / "missing.joblib"),
                 "--out", str(tmp_path / "run")]) == 2


@needs_data
@pytest.mark.slow
def test_fit_then_replay_with_the_artifact_and_cross_fitting(tmp_path, capsys):
    art = tmp_path / "ranker.joblib"
    assert main(["select", "fit", "--replay", str(POOL), "--limit", "40", "--cv", "2", "--out", str(art),
                 "--quiet"]) == 0
    assert "cross-validated" in capsys.readouterr().out
    assert main(["select", "show", str(art)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cv_metrics"]["group"] == "db_id" and len(shown["data_hash"]) == 64
    out = tmp_path / "run"
    assert main(["eval", "spider", "--replay", str(POOL), "--limit", "40", "--ranker", str(art), "--policy", "ranker",
                 "--out", str(out), "--quiet", "--no-plots"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert {"ranker", "vote", "first"} <= set(rep["policies"]) and rep["meta"]["policy"] == "ranker"
    assert set(rep["selective"]["ranker"]["ex_at_coverage"]) == {"100", "90", "80", "50"}
    cv = tmp_path / "cv"
    assert main(["eval", "spider", "--replay", str(POOL), "--limit", "40", "--policy", "ranker", "--cv", "2",
                 "--out", str(cv), "--quiet"]) == 0
    rep = json.loads((cv / "report.json").read_text())
    assert rep["replay"]["ranker"]["cv"] == 2 and (cv / "risk_coverage.png").is_file()
    assert "Plan confidence: selective prediction" in (cv / "report.md").read_text()
