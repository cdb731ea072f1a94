"""Imported once by the sandbox workers' fork server (`sqlbox.isolation`), never by the service itself:
loads DuckDB, sqlglot and the executor and warms sqlglot's SQLite and DuckDB dialects, so every worker
forked from it starts warm in milliseconds. Opens no database (forking after DuckDB starts threads would
not be safe).

It also points the fork server's stdout and stderr (inherited by every worker) at /dev/null, unless
SQLBOX_WORKER_DEBUG is set: a worker or the fork server that loses its caller mid-way (the caller exits
while a killed worker is being replaced) would otherwise print multiprocessing's traceback, with host paths,
into the caller's terminal or log after its last line."""

from __future__ import annotations

import contextlib
import os

import duckdb  # noqa: F401 - preloaded for the workers

with contextlib.suppress(ImportError):  # DuckDB's client imports these lazily on a query's first fetch
    import numpy  # noqa: F401
    import pandas  # noqa: F401

from sqlbox import executor  # noqa: F401 - preloaded for the workers
from sqlbox.dialect import sqlite_to_duckdb
from sqlbox.guard import analyze, guard
from sqlbox.schema import Schema


def _quiet() -> None:
    if os.environ.get("SQLBOX_WORKER_DEBUG"):
        return
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def _warm() -> None:
    for dialect in ("sqlite", "duckdb"):
        analyze("SELECT a, count(*) FROM t WHERE b LIKE 'x%' GROUP BY a ORDER BY 2 DESC LIMIT 1", dialect)
    sqlite_to_duckdb(guard("SELECT a FROM t WHERE b LIKE 'x' GROUP BY a", "sqlite"), Schema("warm"))


_quiet()
_warm()
