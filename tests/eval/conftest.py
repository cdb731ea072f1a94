"""Shared fixtures of the eval tests: the shared Spider/BIRD data (skip when absent) and tiny SQLite dbs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.settings import bird_dir, candidates_dir, spider_dir


@pytest.fixture(scope="session")
def spider_root() -> Path:
    d = spider_dir()
    if not (d / "dev.json").is_file() or not (d / "database").is_dir():
        pytest.skip(f"Spider data not found at {d} (set SPIDER_DIR)")
    return d


@pytest.fixture(scope="session")
def bird_root() -> Path:
    d = bird_dir()
    if not (d / "dev.json").is_file() or not (d / "dev_databases").is_dir():
        pytest.skip(f"BIRD data not found at {d} (set BIRD_DIR)")
    return d


@pytest.fixture(scope="session")
def systems_root() -> Path:
    d = candidates_dir() / "spider_dev"
    if not d.is_dir() or not any(d.glob("*.sql")):
        pytest.skip(f"published system predictions not found at {d}")
    return d


@pytest.fixture(scope="session")
def samples_root() -> Path:
    d = candidates_dir() / "spider_dev_samples"
    if not d.is_dir() or not any(d.glob("*.jsonl")):
        pytest.skip(f"sampled candidate pools not found at {d}")
    return d


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
