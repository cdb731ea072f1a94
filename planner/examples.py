"""Few-shot examples: (question, SQL) pairs on the same database, shown to the generator before the question.

Small models write far more executable SQL when they see a few worked examples on the schema at hand. The demo
database ships its own; others can be added with a JSONL file of {"db_id", "question", "sql"} lines named by
`SQLARBITER_FEW_SHOT` (or `few_shot_file` in code). Examples are never taken from an evaluation split.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from sqlbox.demo import DEMO_DB_ID, DEMO_EXAMPLES


@lru_cache(maxsize=8)
def _load_file(path: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.setdefault(row["db_id"], []).append((row["question"], row["sql"]))
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}:{lineno}: few-shot lines need db_id, question and sql ({e})") from None
    return out


def few_shot_examples(db_id: str, k: int, *, few_shot_file: str | Path | None = None) -> list[tuple[str, str]]:
    """Up to `k` examples for `db_id`: the demo database's shipped ones, then the file's."""
    if k <= 0:
        return []
    found: list[tuple[str, str]] = list(DEMO_EXAMPLES) if db_id == DEMO_DB_ID else []
    path = few_shot_file or os.environ.get("SQLARBITER_FEW_SHOT")
    if path:
        found += _load_file(str(path)).get(db_id, [])
    return found[:k]
