"""planner.normalize: the candidate pool's reasons for what it rejects."""

from __future__ import annotations

from generators.base import drop_reason
from planner.normalize import EMPTY_REASON, CandidatePool


def test_dropped_samples_say_why_and_merge_by_reason():
    pool = CandidatePool()
    new = pool.add_many(["SELECT 1", "", "", "", "SELECT 1"], source="g",
                        drops=[None, "time", "loop", "time", None])
    assert new == [0, 1, 2]
    ok, timed, looped = pool.candidates
    assert drop_reason("time").startswith("dropped: ") and "time budget" in drop_reason("time")
    assert ok.rejected is None and ok.duplicates == 2  # samples behind it
    assert timed.rejected == drop_reason("time") and timed.duplicates == 2 and timed.sample_index == 1
    assert looped.rejected == drop_reason("loop") and looped.sample_index == 2
    pool.add_many([""], source="g")  # an empty sample nobody dropped: the model wrote no SQL
    assert pool.candidates[-1].rejected == EMPTY_REASON
    pool.add_many(["SELECT 2"], source="g", drops=[])  # no drops reported (e.g. a server backend): as before
    assert pool.candidates[-1].rejected is None and pool.candidates[-1].sql == "SELECT 2"
