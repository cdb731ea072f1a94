"""eval.report's Markdown: the discriminator metrics under both conventions, the paper's as the headline."""

from __future__ import annotations

from eval.metrics import discriminator_metrics
from eval.report import build_report, to_markdown


def test_markdown_leads_with_the_paper_convention_and_counts_verdicts():
    groups = [[(0.5, True), (0.2, False)], [(0.9, False), (0.9, True)], [(0.1, False)]]
    dm = discriminator_metrics(groups, sqls=[["b", "a"], ["z", "a"], ["x"]])
    dm["verdicts"] = {"natural": 3, "forced": 1, "missing": 1}
    results = [{"index": i, "difficulty": "easy", "ex": True} for i in range(3)]
    md = to_markdown(build_report(results, {"dataset": "spider", "mode": "replay"},
                                  replay_summary={"discriminator_metrics": dm}))
    sec = md[md.index("## Discriminator metrics"):]
    assert sec.index("Paper convention") < sec.index("Project convention")
    paper, project = sec.split("Project convention", 1)
    assert f"| hit_at_1 | {dm['paper']['hit_at_1']:.4f} |" in paper and "| hit_at_1_e2e | 0.6667 |" in paper
    assert f"| macro_f1 | {dm['macro_f1']:.4f} |" in project and "| n_mixed | 2 |" in project
    assert "Verdicts: natural 3, forced 1, missing 1" in sec
