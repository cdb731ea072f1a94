"""Shared fixtures of the eval tests: tiny SQLite dbs (the shared Spider/BIRD data fixtures are in tests/conftest.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest


def make_db(path: Path, script: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def db_factory():
    """make_db(path, script) -> path."""
    return make_db


@pytest.fixture
def tiny_db(tmp_path) -> Path:
    """db/tiny/tiny.sqlite: people(id, name, age, score, team) with duplicates, NULLs and floats."""
    return make_db(
        tmp_path / "db" / "tiny" / "tiny.sqlite",
        """
        CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT, age INTEGER, score REAL, team TEXT);
        INSERT INTO people VALUES (1, 'ann', 30, 1.0, 'red');
        INSERT INTO people VALUES (2, 'bob', 25, 0.1, 'red');
        INSERT INTO people VALUES (3, 'cat', 35, 0.2, NULL);
        INSERT INTO people VALUES (4, 'dan', 30, 1.5, 'blue');
        INSERT INTO people VALUES (5, 'ann', 41, 0.3, 'blue');
        CREATE TABLE nums(a INTEGER, b REAL);
        INSERT INTO nums VALUES (1, 1.5);
        """,
    )
