"""benchmarks.plan_latency's question sets and the EX it reports for the Spider questions (real Spider data)."""

from __future__ import annotations

import pytest

from benchmarks.plan_latency import DEMO_QUESTIONS, SPIDER_DEV, spider_ex, varied_questions
from core.settings import spider_dir

needs_spider = pytest.mark.skipif(not (spider_dir() / "dev.json").is_file(),
                                  reason="the shared Spider data (../shared/data/spider) is absent")


@needs_spider
def test_question_sets():
    qs = varied_questions()
    assert [q["question"] for q in qs[:10]] == DEMO_QUESTIONS and len(qs) == 10 + len(SPIDER_DEV)
    assert [q["set"] for q in qs[10:]] == [f"spider:{i}" for i in SPIDER_DEV] and all(q["gold"] for q in qs[10:])
    more = varied_questions(50, demo=False)
    assert len(more) == 50 and all(q["set"].startswith("spider:") for q in more)
    assert len({q["set"] for q in more}) == 50


@needs_spider
def test_spider_ex_scores_the_chosen_sql_against_the_gold():
    qs = varied_questions(3, demo=False)
    right = [{**q, "chosen_sql": q["gold"]} for q in qs]
    assert spider_ex(right) == {"questions": 3, "ex": 3, "ex_pct": 100.0}
    wrong = [{**qs[0], "chosen_sql": None}, {**qs[1], "chosen_sql": "SELECT 1"}, {**qs[2], "chosen_sql": qs[2]["gold"]}]
    assert spider_ex(wrong)["ex"] == 1
    assert spider_ex([{"question": "x", "db_id": "demo", "chosen_sql": "SELECT 1"}]) is None
