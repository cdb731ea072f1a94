"""The eval runner: prediction files, resumable results, reports, compare (the `sqlarbiter eval` command's own
tests are in tests/cli/commands/test_eval.py)."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from core.model import Candidate, Plan, Question, Score, ScoredCandidate
from eval.datasets import load_spider
from eval.report import compare
from eval.runner import RESULTS, read_prediction_file, read_results, run_end_to_end, run_predictions


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_prediction_file_alignment_and_db_check(spider_root, tmp_path):
    ex = load_spider(spider_root, indices=[3, 7])
    f = tmp_path / "p.sql"
    f.write_text("SELECT 3\nSELECT 7\n")  # one line per selected question
    assert read_prediction_file(f, ex, 1034) == ["SELECT 3", "SELECT 7"]
    f.write_text("SELECT 3\twrong_db\nSELECT 7\n")
    with pytest.raises(ValueError, match="names db"):
        read_prediction_file(f, ex, 1034)
    f.write_text("SELECT 1\n")
    with pytest.raises(ValueError, match="lines"):
        read_prediction_file(f, ex, 1034)


def test_resume_skips_done_indices(spider_root, tmp_path):
    ex = load_spider(spider_root, limit=6)
    out = tmp_path / "run"
    run_predictions(ex[:3], [e.gold_sql for e in ex[:3]], out, workers=1, progress=False)
    with (out / RESULTS).open("a") as f:
        f.write('{"index": 99, "db_')  # a torn line from a crash
    rows = run_predictions(ex, ["SELECT 0"] * 6, out, workers=1, progress=False)
    assert [r["index"] for r in rows] == list(range(6))
    assert [r["ex"] for r in rows] == [True] * 3 + [False] * 3  # the first three were not recomputed


def test_compare_cli(spider_root, tmp_path, capsys):
    ex = load_spider(spider_root, limit=8)
    a, b = tmp_path / "a", tmp_path / "b"
    run_predictions(ex, [e.gold_sql for e in ex], a, workers=1, progress=False)
    run_predictions(ex, [e.gold_sql if e.index % 2 else "SELECT 0" for e in ex], b, workers=1, progress=False)
    c = compare(a, b)
    assert c["n_common"] == 8 and c["flipped"]["broken_in_b"] == [0, 2, 4, 6] and c["flipped"]["fixed_in_b"] == []
    assert c["by_difficulty"]["all"]["delta"] == pytest.approx(-50.0)
    assert main(["eval", "compare", str(a), str(b)]) == 0
    assert "broken in B" in capsys.readouterr().out
    assert main(["eval", "compare", str(a), str(tmp_path / "missing")]) == 2


def test_bird_predictions_gold_is_100(bird_root, tmp_path):
    from eval.datasets import load_bird

    ex = load_bird(bird_root, limit=15)
    f = tmp_path / "p.sql"
    f.write_text("\n".join(e.gold_sql.replace("\n", " ") for e in ex) + "\n")
    out = tmp_path / "bird"
    assert main(["eval", "bird", "--predictions", str(f), "--limit", "15", "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n"] == 15 and rep["ex"] == 100.0
    assert set(rep["by_difficulty"]) - {"all"} <= {"simple", "moderate", "challenging"}


class SystemPlanner:
    """Plans by replaying published systems' predictions through the real sandboxed executor (a stand-in
    for the generator, so the runner's bookkeeping is tested without a model)."""

    def __init__(self, registry, systems):
        from sqlbox.executor import Executor

        self.executor = Executor(registry, engine="sqlite")
        self.systems = systems
        self.calls = 0

    def plan(self, q: Question, n=None, policy=None) -> Plan:
        from planner.select import select

        self.calls += 1
        i = int(q.id)
        cands = [ScoredCandidate(candidate=Candidate(sql=s[i], source=name), execution=self.executor.execute(q.db_id, s[i]),
                                 scores=[Score(score=0.7 if k == 0 else 0.4)])
                 for k, (name, s) in enumerate(self.systems.items())]
        sel = select(policy or "vote", cands)
        idx, reason = sel.index, sel.reason
        return Plan(question=q, chosen=idx, chosen_sql=None if idx is None else cands[idx].candidate.sql,
                    policy=policy or "vote", candidates=cands, reason=reason, total_cost=0.001 * len(cands))


def test_end_to_end_runner_records_and_resumes(spider_root, systems_root, tmp_path):
    from eval.systems import load_systems
    from sqlbox.databases import DatabaseRegistry

    ex = load_spider(spider_root, limit=6)
    reg = DatabaseRegistry()
    reg.register_dir(spider_root)
    planner = SystemPlanner(reg, load_systems(systems_root, ["GAP_MetaSQL-base", "CodeS-15b_SFT", "C3SQL_ChatGPT"]))
    out = tmp_path / "e2e"
    run_end_to_end(ex[:4], planner, out, progress=False)
    rows = run_end_to_end(ex, planner, out, progress=False)
    assert planner.calls == 6 and [r["index"] for r in rows] == list(range(6))
    for r in rows:
        assert {"ex", "cost", "latency_ms", "ex_by_policy", "labels", "oracle"} <= set(r)
        assert r["ex"] == r["ex_by_policy"]["vote"]
        assert r["oracle"] == any(r["labels"])
        assert set(r["ex_by_policy"]) == {"first", "rerank", "check-rerank", "vote", "hybrid", "ranker"}  # every registered policy
        assert r["ex_by_policy"]["first"] == r["labels"][0]
    from eval.report import write_report

    rep = write_report(out, {"dataset": "spider", "mode": "end-to-end"})
    assert rep["cost"]["total"] == pytest.approx(0.018) and (out / "reliability.png").is_file()


@pytest.mark.slow
def test_end_to_end_on_the_embedded_model(spider_root, tmp_path):
    out = tmp_path / "e2e"
    rc = main(["eval", "spider", "--limit", "3", "--n", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    rows = read_results(out)
    assert len(rows) == 3 and all("latency_ms" in r for r in rows)
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
