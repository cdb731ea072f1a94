"""`sqlarbiter eval ...` (cli/commands/eval.py) through the real CLI entry point: modes, selection and usage
errors on the shared Spider data and candidate pools (the runner itself: tests/eval/test_runner.py; `eval
linking` end to end: tests/eval/test_linking.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from cli.commands.eval import add_routing_parser
from cli.main import main
from eval.runner import RESULTS, read_results


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_predictions_cli_writes_all_outputs(spider_root, tmp_path):
    gold = (spider_root / "dev_gold.sql").read_text().splitlines()
    preds = list(gold)
    preds[1] = "SELECT 1\tconcert_singer"  # wrong
    preds[2] = "SELECT nope FROM singer"  # error
    pf = tmp_path / "pred.sql"
    pf.write_text("\n".join(preds) + "\n")
    out = tmp_path / "run"
    rc = main(["eval", "spider", "--predictions", str(pf), "--limit", "12", "--out", str(out), "--quiet", "--workers", "2"])
    assert rc == 0
    for f in (RESULTS, "report.json", "report.md", "ex_by_difficulty.png"):
        assert (out / f).is_file(), f
    raw = _lines(out / RESULTS)  # appended in completion order
    assert sorted(r["index"] for r in raw) == list(range(12))
    lines = read_results(out)
    assert all({"index", "db_id", "ex"} <= set(r) for r in lines)
    assert [r["ex"] for r in lines[:3]] == [True, False, False] and lines[2]["error_kind"] == "pred_error"
    rep = json.loads((out / "report.json").read_text())
    assert rep["n"] == 12 and rep["n_correct"] == 10 and rep["by_difficulty"]["all"]["n"] == 12
    assert "EX" in (out / "report.md").read_text()


def test_systems_replay_cli(spider_root, systems_root, tmp_path):
    out = tmp_path / "rp"
    rc = main(["eval", "spider", "--systems", "CodeS-15b_SFT,C3SQL_ChatGPT,GAP_MetaSQL-base", "--limit", "25",
               "--out", str(out), "--quiet", "--workers", "1"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["policies"]) == {"first", "vote", "hybrid", "ranker"}
    assert rep["replay"]["best_source"]["name"] in ("CodeS-15b_SFT", "C3SQL_ChatGPT", "GAP_MetaSQL-base")
    assert rep["oracle"]["ex"] >= rep["policies"]["vote"]["ex"]


def test_bad_usage_exit_codes(tmp_path):
    assert main(["eval", "spider", "--data", str(tmp_path), "--predictions", "x.sql"]) == 2
    assert main(["eval", "spider", "--predictions", str(tmp_path / "nope.sql"), "--limit", "2", "--out", str(tmp_path / "o")]) == 2


def test_replay_cli_limit_picks_pool_questions(spider_root, samples_root, tmp_path):
    out = tmp_path / "rq"
    pool = samples_root / "qwen2.5-coder-7b-instruct_T0.4_x5_200q.jsonl"
    assert main(["eval", "spider", "--replay", str(pool), "--limit", "7", "--out", str(out), "--quiet", "--workers", "1"]) == 0
    rows = read_results(out)
    first7 = [json.loads(x)["idx"] for x in pool.read_text().splitlines()[:7]]
    assert [r["index"] for r in rows] == sorted(first7)
    rep = json.loads((out / "report.json").read_text())
    assert rep["n"] == 7 and rep["meta"]["policy"] == "vote" and len(rep["replay"]["sources"]) == 5


@pytest.mark.parametrize("extra, needle", [
    (["--policy", "best"], "unknown policy 'best'; choose one of: first, vote, hybrid, rerank, check-rerank"),
    (["--policy", "rerank"], "needs a discriminator's scores and none was given; give a discriminator or "
                             "choose one of: first, vote"),
    (["--policy", "hybrid"], "choose one of: first, vote"),
])
def test_replay_cli_policy_usage_errors(spider_root, samples_root, tmp_path, capsys, extra, needle):
    """An unknown policy, or one that ranks by scores with no --discriminator, is bad usage (exit 2, nothing
    written), not a run reporting "EX 0.0%"."""
    out = tmp_path / "bad"
    pool = samples_root / "qwen2.5-coder-7b-instruct_T0.4_x5_200q.jsonl"
    rc = main(["eval", "spider", "--replay", str(pool), "--limit", "2", "--out", str(out), "--quiet", *extra])
    assert rc == 2 and needle in capsys.readouterr().err
    assert not out.exists()


def test_replay_cli_first_policy(spider_root, samples_root, tmp_path):
    out = tmp_path / "first"
    pool = samples_root / "qwen2.5-coder-7b-instruct_T0.4_x5_200q.jsonl"
    assert main(["eval", "spider", "--replay", str(pool), "--limit", "4", "--policy", "first", "--out", str(out),
                 "--quiet", "--workers", "1"]) == 0
    rows = read_results(out)
    assert rows and all(r["policy"] == "first" and r["chosen"] == 0 and r["ex"] == r["labels"][0] for r in rows)


def test_routing_parses_and_rejects_bad_usage():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_routing_parser(sub)
    args = parser.parse_args(["routing", "--folds", "3", "--lambdas", "0,0.5", "--estimators", "knn"])
    assert args.folds == 3 and args.lambdas == [0.0, 0.5]
    bad = parser.parse_args(["routing", "--estimators", "svm"])
    assert bad.func(bad) == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["routing", "--lambdas", "a,b"])
