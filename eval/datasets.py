"""Benchmark datasets: Spider and BIRD examples read from their published local layouts.

Owns the `Example` record and the loaders with their filters (db ids, difficulty, index list, limit,
seeded random subset). Files are read locally with the `datasets` library (`Dataset.from_list`), never
from a hub (`HF_DATASETS_OFFLINE=1` is set before it is imported).

Layouts:
  Spider: `<dir>/dev.json` (or `train_spider.json`), `dev_gold.sql` (the gold the official evaluator
          reads; used when present and aligned), `database/<db_id>/<db_id>.sqlite`.
  BIRD:   `<dir>/dev.json` with `evidence` and `difficulty`, `dev_databases/<db>/<db>.sqlite`; the
          `mini_dev/mini_dev_sqlite.json` variant uses the same databases.
`Example.index` is always the 0-based position in the dataset file, the index prediction files and
`results.jsonl` refer to.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from core.settings import bird_dir, spider_dir

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

log = logging.getLogger(__name__)

SPIDER_DIFFICULTIES = ("easy", "medium", "hard", "extra")
BIRD_DIFFICULTIES = ("simple", "moderate", "challenging")


class DatasetError(ValueError):
    """The dataset directory or file is missing or malformed."""


@dataclass(frozen=True)
class Example:
    index: int  # 0-based position in the dataset file
    db_id: str
    question: str
    gold_sql: str
    evidence: str | None
    difficulty: str | None
    db_path: Path
    question_id: int | None = None  # BIRD's own id (differs from `index` in subsets such as mini-dev)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["db_path"] = str(self.db_path)
        return d


def _read_json(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of examples")
    return data


def _gold_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.rstrip("\n").split("\t")[0].strip() for line in path.read_text().splitlines() if line.strip()]


def _filter(
    records: list[dict],
    *,
    db_ids=None,
    difficulty=None,
    indices=None,
    limit: int | None = None,
    seed: int | None = None,
) -> list[dict]:
    """Apply the filters with `datasets` (filter, shuffle, select); returns records sorted by index."""
    import datasets  # heavy import, only when loading
    from datasets import Dataset

    datasets.disable_progress_bars()  # filters over ~1k in-memory rows: bars would only add noise
    if not records:
        return []
    ds = Dataset.from_list(records)
    if indices is not None:
        wanted = {int(i) for i in indices}
        ds = ds.filter(lambda r: r["index"] in wanted)
    if db_ids:
        dbs = set(db_ids)
        ds = ds.filter(lambda r: r["db_id"] in dbs)
    if difficulty:
        levels = {difficulty} if isinstance(difficulty, str) else set(difficulty)
        ds = ds.filter(lambda r: r["difficulty"] in levels)
    if seed is not None:
        ds = ds.shuffle(seed=seed)
    if limit is not None:
        ds = ds.select(range(min(int(limit), len(ds))))
    return sorted(ds.to_list(), key=lambda r: r["index"])


def _to_examples(records: list[dict]) -> list[Example]:
    return [
        Example(
            index=r["index"],
            db_id=r["db_id"],
            question=r["question"],
            gold_sql=r["gold_sql"],
            evidence=r.get("evidence"),
            difficulty=r.get("difficulty"),
            db_path=Path(r["db_path"]),
            question_id=r.get("question_id"),
        )
        for r in records
    ]


def _drop_missing_dbs(records: list[dict], require_db: bool) -> list[dict]:
    missing = sorted({r["db_id"] for r in records if not Path(r["db_path"]).is_file()})
    if not missing:
        return records
    n = sum(1 for r in records if r["db_id"] in missing)
    if require_db:
        log.warning("skipping %d examples whose database is missing: %s", n, ", ".join(missing))
        return [r for r in records if r["db_id"] not in missing]
    return records


def load_spider(
    data_dir: str | os.PathLike | None = None,
    *,
    split: str = "dev",
    db_ids=None,
    difficulty=None,
    indices=None,
    limit: int | None = None,
    seed: int | None = None,
    require_db: bool = True,
    with_difficulty: bool = True,
) -> list[Example]:
    """Spider examples. `difficulty` is Spider's hardness of the gold SQL (eval.hardness)."""
    root = Path(data_dir) if data_dir else spider_dir()
    fname = {"dev": "dev.json", "train": "train_spider.json"}.get(split, f"{split}.json")
    data = _read_json(root / fname)
    gold = _gold_lines(root / f"{split}_gold.sql")
    if gold is not None and len(gold) != len(data):
        gold = None  # e.g. train_gold.sql also holds train_others: fall back to the json queries
    if with_difficulty:
        from eval.hardness import spider_hardness
    records = []
    for i, ex in enumerate(data):
        try:
            g = gold[i] if gold is not None else ex["query"].strip()
            db = ex["db_id"]
            q = ex["question"]
        except KeyError as e:
            raise DatasetError(f"{root / fname}: example {i} lacks {e}") from None
        records.append(
            {
                "index": i,
                "db_id": db,
                "question": q,
                "gold_sql": g,
                "evidence": None,
                "difficulty": spider_hardness(g) if with_difficulty else None,
                "db_path": str(root / "database" / db / f"{db}.sqlite"),
                "question_id": None,
            }
        )
    records = _drop_missing_dbs(records, require_db)
    return _to_examples(_filter(records, db_ids=db_ids, difficulty=difficulty, indices=indices, limit=limit, seed=seed))


def _bird_db_root(root: Path) -> Path:
    for cand in (root / "dev_databases", root.parent / "dev_databases", root / "databases"):
        if cand.is_dir():
            return cand
    return root / "dev_databases"


def load_bird(
    data_dir: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    db_ids=None,
    difficulty=None,
    indices=None,
    limit: int | None = None,
    seed: int | None = None,
    require_db: bool = True,
) -> list[Example]:
    """BIRD examples (`variant`: "dev" or "mini_dev"; guessed from the directory when None). Examples
    whose database is not present are skipped with a warning unless `require_db=False`."""
    root = Path(data_dir) if data_dir else bird_dir()
    if variant is None:
        variant = "mini_dev" if (root / "mini_dev_sqlite.json").is_file() else "dev"
    if variant == "mini_dev":
        if (root / "mini_dev" / "mini_dev_sqlite.json").is_file():
            root = root / "mini_dev"
        path = root / "mini_dev_sqlite.json"
    elif variant == "dev":
        path = root / "dev.json"
    else:
        raise DatasetError(f"unknown BIRD variant {variant!r}; choose dev or mini_dev")
    data = _read_json(path)
    db_root = _bird_db_root(root)
    records = []
    for i, ex in enumerate(data):
        try:
            db = ex["db_id"]
            records.append(
                {
                    "index": i,
                    "db_id": db,
                    "question": ex["question"],
                    "gold_sql": (ex.get("SQL") or ex["query"]).strip(),
                    "evidence": ex.get("evidence") or None,
                    "difficulty": ex.get("difficulty"),
                    "db_path": str(db_root / db / f"{db}.sqlite"),
                    "question_id": ex.get("question_id", i),
                }
            )
        except KeyError as e:
            raise DatasetError(f"{path}: example {i} lacks {e}") from None
    records = _drop_missing_dbs(records, require_db)
    return _to_examples(_filter(records, db_ids=db_ids, difficulty=difficulty, indices=indices, limit=limit, seed=seed))


def load_examples(dataset: str, data_dir=None, **filters) -> list[Example]:
    """`load_spider` or `load_bird` by name."""
    if dataset == "spider":
        return load_spider(data_dir, **filters)
    if dataset == "bird":
        return load_bird(data_dir, **filters)
    raise DatasetError(f"unknown dataset {dataset!r}; choose spider or bird")


def read_index_file(path: str | os.PathLike) -> list[int]:
    """0-based indices, one per line (e.g. spider/dev_indices_needing_wta1_rankings.txt)."""
    return [int(x) for x in Path(path).read_text().split() if x.strip()]
