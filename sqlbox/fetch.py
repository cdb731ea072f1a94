"""Bounded results: how every engine (`sqlbox.engines`) and server (`sqlbox.servers.execute`) reads a result off
its cursor, at most max_rows + 1 rows fetched one at a time and at most `MAX_RESULT_BYTES` of values in all; a
bigger result raises `ResultTooLarge` (ErrorKind.TOO_LARGE)."""

from __future__ import annotations

from typing import Any

MAX_RESULT_BYTES = 64 * 2**20  # the values of one result, in all (text: characters; blobs: bytes)


class ResultTooLarge(RuntimeError):
    """A result (or, on the sqlite engine, a query's working memory) over the sandbox's size limits;
    every engine's `classify` reports it as ErrorKind.TOO_LARGE."""


def _nbytes(v: Any) -> int:
    """About how much memory one result value holds (text: characters; blobs: bytes; numbers: 8)."""
    if isinstance(v, str | bytes | bytearray):
        return len(v)
    if isinstance(v, list | tuple):
        return 8 * len(v) + sum(map(_nbytes, v))
    if isinstance(v, dict):
        return sum(_nbytes(k) + _nbytes(x) for k, x in v.items())
    if isinstance(v, memoryview):
        return v.nbytes
    return 8


def fetch_capped(cur, max_rows: int, max_bytes: int | None = None) -> tuple[list[str], list[tuple]]:
    """Column names and at most max_rows + 1 rows (the extra row tells the caller the cap was hit); a statement
    without a result set gives ([], []). Every engine's cursor (DB-API) goes through it. Rows are fetched one
    at a time (`fetchone`; as cheap as `fetchmany` on these drivers), so a result of huge rows is stopped
    at the first row past `max_bytes` (default `MAX_RESULT_BYTES`) of values: `ResultTooLarge`."""
    if not cur.description:
        return [], []
    cap = MAX_RESULT_BYTES if max_bytes is None else int(max_bytes)
    cols = [d[0] for d in cur.description]
    rows: list[tuple] = []
    total = 0
    fetch, add = cur.fetchone, rows.append
    while len(rows) <= max_rows:
        row = fetch()
        if row is None:
            break
        total += 8 * len(row) + sum(map(_nbytes, row))
        if total > cap:
            raise ResultTooLarge(f"the result is larger than the sandbox's {cap / 2**20:.3g} MB limit at row "
                                 f"{len(rows) + 1}: select fewer or smaller values")
        add(row)
    return cols, rows
