"""Canonical result values and result fingerprints: what makes two engines' results comparable.

Every value is canonicalized, then each row is hashed; `fingerprint` hashes the sorted row hashes
(order-insensitive multiset), `ordered_fingerprint` the row hashes in order. Canonical values:
NULL; bool -> int; floats (and Decimals) that are integral and below 2**53 -> int, other floats rounded to
12 significant digits (so SQLite's and DuckDB's sums/averages agree); NaN/inf tagged; text as is (case
and whitespace matter); bytes -> hex; dates/times -> their ISO text with a space separator (what SQLite
stores). Values keep a type tag, so 1 and '1' differ. Column names do not enter the fingerprint.
`json_preview` is the JSON-friendly form of a value for the row preview of an `ExecutionResult`.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any


def canonical_value(v: Any) -> Any:
    """The engine-independent form of one result value (see the module docstring)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, decimal.Decimal):
        if v.is_nan() or v.is_infinite():
            return {"f": str(v)}
        if v == v.to_integral_value() and abs(v) < 2**53:
            return int(v)
        v = float(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return {"f": repr(v)}
        if v.is_integer() and abs(v) < 2**53:
            return int(v)
        return float(f"{v:.12g}")
    if isinstance(v, bytes | bytearray | memoryview):
        return {"b": bytes(v).hex()}
    if isinstance(v, _dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return {"td": v.total_seconds()}
    if isinstance(v, list | tuple):
        return [canonical_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): canonical_value(x) for k, x in v.items()}
    return {"o": str(v)}


def json_preview(v: Any) -> Any:
    """A JSON-friendly preview value (Plans round-trip through JSON)."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() and v.is_finite() else float(v)
    if isinstance(v, bytes | bytearray | memoryview):
        b = bytes(v)
        return f"<blob {len(b)} bytes>"
    if isinstance(v, _dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return [json_preview(x) for x in v]
    return str(v)


def row_hash(row: Sequence[Any]) -> str:
    data = json.dumps([canonical_value(v) for v in row], ensure_ascii=False, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprints(rows: Iterable[Sequence[Any]]) -> tuple[str, str]:
    """(order-insensitive multiset fingerprint, order-sensitive fingerprint) of a result."""
    hashes = [row_hash(r) for r in rows]
    ordered = hashlib.sha256(("\n".join(hashes)).encode()).hexdigest()
    multiset = hashlib.sha256(("\n".join(sorted(hashes))).encode()).hexdigest()
    return multiset, ordered
