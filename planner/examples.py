"""Few-shot examples: (question, SQL) pairs on the same database, shown to the generator before the question.

Small models write far more executable SQL when they see a few worked examples on the schema at hand. The demo
database ships its own; others can be added with a JSONL file of {"db_id", "question", "sql"} lines named by
`SQLARBITER_FEW_SHOT` (or `few_shot_file` in code). Examples are never taken from an evaluation split.

This module is the one home of that file: `examples_file` says which file applies and `load_file` parses it
(cached per path and modification time); the same-database lookup here and the similarity retrieval of
`planner.fewshot` both read it through them.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from core.settings import env
from sqlbox.demo import DEMO_DB_ID, DEMO_EXAMPLES


def examples_file(few_shot_file: str | Path | None = None) -> str | None:
    """The few-shot file that applies: `few_shot_file` when given, else `SQLARBITER_FEW_SHOT`, else None."""
    path = few_shot_file or env("SQLARBITER_FEW_SHOT")
    return str(path) if path else None


def load_file(path: str | Path) -> tuple[tuple[str, str, str], ...]:
    """The file's (db_id, question, sql) rows in file order; a malformed line is a ValueError naming it."""
    p = str(path)
    return _parse(p, os.path.getmtime(p))


@lru_cache(maxsize=8)
def _parse(path: str, mtime: float) -> tuple[tuple[str, str, str], ...]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append((row["db_id"], row["question"], row["sql"]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: few-shot lines need db_id, question and sql ({e})") from None
    return tuple(rows)


def few_shot_examples(db_id: str, k: int, *, few_shot_file: str | Path | None = None) -> list[tuple[str, str]]:
    """Up to `k` examples for `db_id`: the demo database's shipped ones, then the file's."""
    if k <= 0:
        return []
    found: list[tuple[str, str]] = list(DEMO_EXAMPLES) if db_id == DEMO_DB_ID else []
    path = examples_file(few_shot_file)
    if path:
        found += [(q, s) for db, q, s in load_file(path) if db == db_id]
    return found[:k]
