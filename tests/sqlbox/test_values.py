"""Canonical result values and fingerprints (sqlbox.values)."""

import datetime as dt
import decimal

from sqlbox.values import canonical_value, fingerprints, json_preview, row_hash


def test_canonical_values():
    assert canonical_value(3.0) == 3 and canonical_value(True) == 1
    assert canonical_value(decimal.Decimal("2.00")) == 2
    assert canonical_value(0.1 + 0.2) == canonical_value(0.3)
    assert canonical_value(b"\x01") == {"b": "01"}
    assert canonical_value(float("nan")) == {"f": "nan"}
    assert fingerprints([(1, "a"), (2, "b")])[0] == fingerprints([(2.0, "b"), (1, "a")])[0]
    assert fingerprints([(1,)])[0] != fingerprints([("1",)])[0]
    assert fingerprints([(1,), (1,)])[0] != fingerprints([(1,)])[0]  # a multiset, not a set


def test_canonical_dates_and_nesting():
    assert canonical_value(dt.datetime(2020, 1, 2, 3, 4, 5)) == "2020-01-02 03:04:05"  # SQLite's text form
    assert canonical_value(dt.date(2020, 1, 2)) == "2020-01-02"
    assert canonical_value(dt.timedelta(seconds=90)) == {"td": 90.0}
    assert canonical_value([1.0, (True, None)]) == [1, [1, None]]
    assert canonical_value(decimal.Decimal("0.5")) == 0.5
    assert row_hash((1, "a")) == row_hash((1.0, "a")) != row_hash(("a", 1))


def test_fingerprints_ordered_and_empty():
    multiset, ordered = fingerprints([(1,), (2,)])
    multiset2, ordered2 = fingerprints([(2,), (1,)])
    assert multiset == multiset2 and ordered != ordered2
    assert fingerprints([]) == fingerprints(iter([]))


def test_json_preview():
    assert json_preview(decimal.Decimal("2.00")) == 2 and json_preview(decimal.Decimal("2.5")) == 2.5
    assert json_preview(float("inf")) == "inf" and json_preview(1.5) == 1.5
    assert json_preview(b"\x00\x01") == "<blob 2 bytes>"
    assert json_preview(dt.datetime(2020, 1, 2, 3, 4)) == "2020-01-02 03:04:00"
    assert json_preview((1, dt.date(2020, 1, 2))) == [1, "2020-01-02"]
    assert json_preview(dt.timedelta(seconds=61)) == "0:01:01"  # anything else: its text
