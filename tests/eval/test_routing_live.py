"""eval.routing_live: the live study's metrics (CPT(95 %), dIBC, sample size) and its question sample."""

from __future__ import annotations

import pytest

from eval.routing_live import Outcome, cpt, delta_ibc, sample_questions, sample_size, summarize


def _o(policy: str, ex: bool, strong: int, key: str = "q") -> Outcome:
    return Outcome(key=key, policy=policy, ex=ex, executable=ex, strong_tokens=strong, cheap_tokens=10,
                   discarded_tokens=0, prompt_tokens={}, prm_calls=1, handoffs=int(strong > 0), steps=1, fallback=None,
                   text="SELECT 1" if ex else None)


def _table():
    rows = []
    for i in range(10):  # cheap 20 %, strong 60 % at 100 tokens, trim k=0.5 55 % at 40 tokens, k=0.3 40 % at 20
        rows += [_o("cheap only", i < 2, 0, str(i)), _o("strong only", i < 6, 100, str(i)),
                 _o("trim k=0.5", i < 5 or i == 9, 40 if i < 5 else 40, str(i)), _o("trim k=0.3", i < 4, 20, str(i))]
    return summarize(rows)


def test_summary_shares_are_relative_to_strong_only():
    t = _table()
    assert t["cheap only"]["ex"] == 20.0 and t["strong only"]["ex"] == 60.0
    assert t["trim k=0.5"]["strong_share"] == pytest.approx(0.4) and t["strong only"]["strong_share"] == 1.0


def test_cpt_interpolates_the_envelope_and_is_none_without_a_gap():
    t = _table()
    # goal: 20 + 0.95 * 40 = 58 %; the envelope reaches 60 % at share 0.4 (trim k=0.5), from 40 % at 0.2
    assert cpt(t) == pytest.approx(0.2 + (58 - 40) * (0.4 - 0.2) / (60 - 40))
    t["strong only"]["ex"] = 20.0
    assert cpt(t) is None


def test_delta_ibc_is_gain_per_strong_cost_relative_to_strong_only():
    d = delta_ibc(_table())
    assert d["strong only"] == pytest.approx(0.0)
    assert d["trim k=0.5"] == pytest.approx(((60 - 20) / 0.4) / 40 - 1)  # 2.5x strong only's gain per unit cost
    assert d["cheap only"] is None  # no strong cost


def test_sample_size_grows_as_the_gap_shrinks():
    assert sample_size(0.05, 0.09) > sample_size(0.05, 0.20) > 0
    assert sample_size(0.1, 0.1) is None


def test_sample_questions_is_a_fixed_seed_sample_and_leaves_out_databases(spider_root):
    a = sample_questions("dev", 20, 0, data=spider_root)
    assert a == sample_questions("dev", 20, 0, data=spider_root) and len(a) == 20
    assert a[0].hardness in ("easy", "medium", "hard", "extra")
    b = sample_questions("train", 10, 0, data=spider_root, exclude_dbs={q.db_id for q in a})
    assert not {q.db_id for q in b} & {q.db_id for q in a}
