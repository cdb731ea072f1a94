"""Benchmark datasets: one registry (`DATASETS`) of the question sets the eval reads, each declared once.

Each entry is a loader registered with its metadata (`DatasetSpec`): which official EX rule applies
(`ex_rule`: Spider's or BIRD's semantics, `eval.exec_match`), the dataset file per split, the question /
gold SQL / evidence field names, where the databases are, where the difficulty comes from, and the
Spider-dev-only extras (the wta_1 index list, the published systems). Code elsewhere asks the registry
(`dataset_spec(name)`, `ex_rule(name)`) instead of testing dataset names.

Entries and their published layouts (`<dir>` is `--data`; a dataset file may also be given directly):
  spider            `<dir>/dev.json` (or `train_spider.json`), `dev_gold.sql` (the gold the official
                    evaluator reads; used when present and aligned), `database/<db_id>/<db_id>.sqlite`.
  spider-syn        Spider-Syn (Gan et al., ACL 2021, github ygan/Spider-Syn): the `Spider-Syn/` folder,
                    `dev.json` / `train_spider.json` with `SpiderSynQuestion` (evaluated), `SpiderQuestion`,
                    `query`, `db_id`; Spider's databases.
  spider-realistic  Spider-Realistic (Deng et al., NAACL 2021, zenodo 5205322): `spider-realistic.json`
                    with `question`, `query`, `db_id`; Spider's databases.
  spider-dk         Spider-DK (Gan et al., EMNLP 2021, github ygan/Spider-DK): `Spider-DK.json` with
                    `question`, `query`, `db_id` (and `type`), `tables.json`, and `database/` holding its
                    three modified databases (new_concert_singer, new_orchestra, new_pets_1); every other
                    db_id is Spider's.
  bird              BIRD: `<dir>/dev.json` with `evidence` and `difficulty`, `dev_databases/<db>/<db>.sqlite`;
                    the `mini_dev/mini_dev_sqlite.json` variant uses the same databases.
  jsonl             your own questions: a JSONL file of `{"db_id", "question", "sql"}` lines (optional
                    `evidence`, `difficulty`), databases `<db-dir>/<db_id>/<db_id>.sqlite` (default: the
                    file's folder or its `database/`).
Databases are looked up in `--db-dir` (when given), then the dataset's own folders, then (Spider
variants) Spider's `database/` (`SPIDER_DIR`). Spider-family difficulty is Spider's hardness of the gold
SQL (eval.hardness); BIRD's is its `difficulty` field; jsonl uses `difficulty` when a line has it.
`eval spider --data DIR` detects a Spider variant from the folder's files (`detect_dataset`).

Owns the `Example` record and the loaders with their filters (db ids, difficulty, index list, limit,
seeded random subset). Files are read locally with the `datasets` library (`Dataset.from_list`), never
from a hub (`HF_DATASETS_OFFLINE=1` is set before it is imported). `Example.index` is always the 0-based
position in the dataset file, the index prediction files and `results.jsonl` refer to.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

from core.registry import Registry, UnknownName
from core.settings import dataset_dir, spider_dir

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
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path}: expected a JSON list of example objects")
    return data


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    with path.open() as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{ln}: not valid JSON: {e}") from None
            if not isinstance(r, dict):
                raise DatasetError(f"{path}:{ln}: expected a JSON object per line")
            out.append(r)
    return out


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


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------

HARDNESS = "spider-hardness"  # difficulty = Spider's hardness of the gold SQL (eval.hardness)
FIELD = "field"  # difficulty = the record's own `difficulty` field
FIELD_OR_HARDNESS = "field-or-hardness"


@dataclass(frozen=True)
class DatasetSpec:
    """What the code needs to know about a dataset, declared once with its registry entry."""

    name: str
    title: str
    ex_rule: str  # "spider" | "bird": the official EX semantics that apply (eval.exec_match)
    files: dict[str, str]  # split -> dataset file in the data folder; the first split is the default
    question_field: str  # the question to evaluate
    sql_fields: tuple[str, ...]  # gold SQL: the first of these fields a record has
    evidence_field: str | None = None
    difficulty: str = HARDNESS  # HARDNESS | FIELD | FIELD_OR_HARDNESS
    levels: tuple[str, ...] = SPIDER_DIFFICULTIES  # the difficulty levels, in order (help text, reports)
    db_dirs: tuple[str, ...] = ("database",)  # folders under the data folder holding <db_id>/<db_id>.sqlite
    spider_databases: bool = False  # db ids not found in db_dirs come from Spider's database/ (SPIDER_DIR)
    gold_file: str | None = None  # e.g. "{split}_gold.sql": the official gold lines, used when aligned
    variant_of: str | None = None  # `eval <variant_of> --data DIR` detects this dataset from DIR's files
    spider_dev_aligned: bool = False  # the dev file is Spider dev question by question (wta_1 index list)
    published_systems: bool = False  # candidates/spider_dev predictions are aligned with its dev file
    file_only: bool = False  # --data must be a file (no default folder)

    @property
    def default_split(self) -> str:
        return next(iter(self.files))


DATASETS: Registry[Callable[..., list[Example]], DatasetSpec] = Registry("dataset", DatasetSpec)


def register_dataset(spec: DatasetSpec, loader: Callable[..., list[Example]]) -> None:
    """Register `loader(data_dir=None, **filters) -> list[Example]` under `spec.name` with `spec` as metadata."""
    DATASETS.register(spec.name, **{f.name: getattr(spec, f.name) for f in fields(spec)})(loader)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset (DatasetError naming the choices for an unknown name)."""
    try:
        return DATASETS.info(name)
    except UnknownName as e:
        raise DatasetError(str(e)) from None


def dataset_names() -> list[str]:
    return DATASETS.names()


def ex_rule(name: str) -> str:
    """The official EX rule ("spider" or "bird") that applies to dataset `name`."""
    return dataset_spec(name).ex_rule


def default_data_dir(name: str) -> Path | None:
    """Where `name` is read from without --data (`core.settings.dataset_dir`); None for file-only sets."""
    spec = dataset_spec(name)
    return None if spec.file_only else dataset_dir(name)


def dataset_file(name: str, data_dir: str | os.PathLike | None = None, split: str | None = None) -> Path:
    """The dataset file of `split`: `data_dir` itself when it is a file, else `<data_dir>/<files[split]>`."""
    spec = dataset_spec(name)
    if data_dir is None:
        root = default_data_dir(name)
        if root is None:
            raise DatasetError(f"dataset {name!r} needs --data FILE (a {spec.title} file)")
    else:
        root = Path(data_dir).expanduser()
    if root.is_file():
        return root
    if split is None:  # the default split's file, else the first split file the folder holds
        split = next((k for k, f in spec.files.items() if (root / f).is_file()), spec.default_split)
        if (root / spec.files[spec.default_split]).is_file():
            split = spec.default_split
    if split not in spec.files:
        raise DatasetError(f"{spec.title} has no split {split!r}; choose one of: {', '.join(spec.files)}")
    return root / spec.files[split]


def dataset_size(name: str, data_dir=None, split: str | None = None) -> int:
    """How many questions the whole dataset file holds (prediction files are aligned with it)."""
    return len(load_examples(name, data_dir, split=split, require_db=False, with_difficulty=False))


def _first_record(path: Path) -> dict | None:
    try:
        recs = _read_json(path)
    except DatasetError:
        return None
    return recs[0] if recs else None


def detect_dataset(base: str, data_dir: str | os.PathLike | None) -> str:
    """The dataset a `--data` path holds, among `base` and its registered variants (`variant_of`): those
    whose default dataset file is the path (or is in the folder) and whose records carry the entry's
    question field. `base` wins when it matches (a Spider folder may hold variant files beside dev.json);
    otherwise exactly one variant must match."""
    if data_dir is None:
        return base
    p = Path(data_dir).expanduser()
    family = [base] + [n for n in dataset_names() if DATASETS.info(n).variant_of == base]
    matches = []
    for name in family:
        spec = dataset_spec(name)
        f = spec.files[spec.default_split]
        path = p if p.is_file() and p.name == f else (p / f if p.is_dir() else None)
        if path is None or not path.is_file():
            continue
        rec = _first_record(path)
        if rec is not None and spec.question_field in rec:
            matches.append(name)
    if base in matches or not matches:
        return base  # the base loader reports a missing or malformed file itself
    if len(matches) > 1:
        raise DatasetError(f"{p} holds several datasets ({', '.join(matches)}); name one: sqlarbiter eval NAME --data ...")
    return matches[0]


def known_gap_indices(name: str, data_dir=None, split: str | None = None) -> list[int] | None:
    """Spider dev questions whose gold needs the empty wta_1 `rankings` table (shared data README), for
    datasets whose dev file is Spider dev question by question; None when the list does not apply."""
    spec = dataset_spec(name)
    if not spec.spider_dev_aligned or (split or spec.default_split) != "dev":
        return None
    if spec.variant_of is None:  # the list ships in the dataset's own folder
        folder = Path(data_dir).expanduser() if data_dir else default_data_dir(name)
    else:  # a variant aligned with Spider dev: Spider's list
        folder = dataset_dir(spec.variant_of)
    f = folder / "dev_indices_needing_wta1_rankings.txt" if folder is not None else None
    return read_index_file(f) if f is not None and f.is_file() else None


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def _db_roots(spec: DatasetSpec, root: Path, db_dir) -> list[Path]:
    roots = [Path(db_dir).expanduser()] if db_dir else []
    for sub in spec.db_dirs:
        roots.append(root / sub if sub != "." else root)
    if spec.spider_databases:
        roots.append(spider_dir() / "database")
    return roots


def _db_path(roots: list[Path], db: str) -> Path:
    """`<root>/<db>/<db>.sqlite` in the first root that has it (a root may also be the folder of
    `database/`); else the first candidate, which the missing-database check reports."""
    cands = []
    for r in roots:
        cands += [r / db / f"{db}.sqlite", r / "database" / db / f"{db}.sqlite"]
    return next((c for c in cands if c.is_file()), cands[0])


def _gold_sql(spec: DatasetSpec, ex: dict) -> str:
    for f in spec.sql_fields:
        if ex.get(f):
            return str(ex[f]).strip()
    raise KeyError("/".join(spec.sql_fields))


def _load_json_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    db_dir: str | os.PathLike | None = None,
    db_ids=None,
    difficulty=None,
    indices=None,
    limit: int | None = None,
    seed: int | None = None,
    require_db: bool = True,
    with_difficulty: bool = True,
) -> list[Example]:
    """Examples of a JSON-list or JSONL dataset described by its spec (the Spider family and jsonl)."""
    spec = dataset_spec(name)
    path = dataset_file(name, data_dir, split)
    split = split or next((k for k, f in spec.files.items() if f == path.name), spec.default_split)
    data = _read_json(path)
    gold = None
    if spec.gold_file:
        gold = _gold_lines(path.parent / spec.gold_file.format(split=split))
        if gold is not None and len(gold) != len(data):
            gold = None  # e.g. train_gold.sql also holds train_others: fall back to the json queries
    if with_difficulty and spec.difficulty != FIELD:
        from eval.hardness import spider_hardness
    roots = _db_roots(spec, path.parent, db_dir)
    records = []
    for i, ex in enumerate(data):
        try:
            g = gold[i] if gold is not None else _gold_sql(spec, ex)
            db = ex["db_id"]
            q = ex[spec.question_field]
        except KeyError as e:
            raise DatasetError(f"{path}: example {i} lacks {e.args[0]!r}") from None
        level = None
        if with_difficulty:
            if spec.difficulty in (FIELD, FIELD_OR_HARDNESS):
                level = ex.get("difficulty")
            if level is None and spec.difficulty in (HARDNESS, FIELD_OR_HARDNESS):
                level = spider_hardness(g)
        records.append(
            {
                "index": i,
                "db_id": db,
                "question": q,
                "gold_sql": g,
                "evidence": (ex.get(spec.evidence_field) or None) if spec.evidence_field else None,
                "difficulty": level,
                "db_path": str(_db_path(roots, db)),
                "question_id": None,
            }
        )
    if records and require_db and not any(Path(r["db_path"]).is_file() for r in records):
        raise DatasetError(
            f"{path}: none of its databases found under {', '.join(str(r) for r in roots)} "
            f"(expected <db_id>/<db_id>.sqlite; pass --db-dir)"
        )
    records = _drop_missing_dbs(records, require_db)
    return _to_examples(_filter(records, db_ids=db_ids, difficulty=difficulty, indices=indices, limit=limit, seed=seed))


def load_spider(data_dir: str | os.PathLike | None = None, *, split: str = "dev", **filters) -> list[Example]:
    """Spider examples. `difficulty` is Spider's hardness of the gold SQL (eval.hardness)."""
    return _load_json_dataset("spider", data_dir, split=split, **filters)


def _bird_file(root: Path, variant: str | None) -> tuple[Path, Path]:
    """(dataset file, folder) of a BIRD variant ("dev" or "mini_dev"; guessed from the folder when None)."""
    if root.is_file():
        return root, root.parent
    if variant is None:
        mini = (root / "mini_dev_sqlite.json").is_file() or (
            not (root / "dev.json").is_file() and (root / "mini_dev" / "mini_dev_sqlite.json").is_file()
        )
        variant = "mini_dev" if mini else "dev"
    if variant == "mini_dev":
        if (root / "mini_dev" / "mini_dev_sqlite.json").is_file() and not (root / "mini_dev_sqlite.json").is_file():
            root = root / "mini_dev"
        return root / "mini_dev_sqlite.json", root
    if variant == "dev":
        return root / "dev.json", root
    raise DatasetError(f"unknown BIRD variant {variant!r}; choose dev or mini_dev")


def _bird_db_root(root: Path, db_dir=None) -> Path:
    cands = ([Path(db_dir).expanduser()] if db_dir else []) + [root / "dev_databases", root.parent / "dev_databases",
                                                               root / "databases"]
    return next((c for c in cands if c.is_dir()), cands[0])


def load_bird(
    data_dir: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    split: str | None = None,
    db_dir: str | os.PathLike | None = None,
    db_ids=None,
    difficulty=None,
    indices=None,
    limit: int | None = None,
    seed: int | None = None,
    require_db: bool = True,
    with_difficulty: bool = True,
) -> list[Example]:
    """BIRD examples (`variant`, or `split`: "dev" or "mini_dev"; guessed from the directory when None).
    Examples whose database is not present are skipped with a warning unless `require_db=False`."""
    spec = dataset_spec("bird")
    path, root = _bird_file(Path(data_dir).expanduser() if data_dir else default_data_dir("bird"), variant or split)
    data = _read_json(path)
    db_root = _bird_db_root(root, db_dir)
    records = []
    for i, ex in enumerate(data):
        try:
            db = ex["db_id"]
            records.append(
                {
                    "index": i,
                    "db_id": db,
                    "question": ex[spec.question_field],
                    "gold_sql": _gold_sql(spec, ex),
                    "evidence": ex.get(spec.evidence_field) or None,
                    "difficulty": ex.get("difficulty") if with_difficulty else None,
                    "db_path": str(db_root / db / f"{db}.sqlite"),
                    "question_id": ex.get("question_id", i),
                }
            )
        except KeyError as e:
            raise DatasetError(f"{path}: example {i} lacks {e.args[0]!r}") from None
    records = _drop_missing_dbs(records, require_db)
    return _to_examples(_filter(records, db_ids=db_ids, difficulty=difficulty, indices=indices, limit=limit, seed=seed))


def load_examples(dataset: str, data_dir=None, **filters) -> list[Example]:
    """The examples of a registered dataset (`DATASETS`), with the loader's filters."""
    dataset_spec(dataset)  # DatasetError naming the choices for an unknown name
    return DATASETS.get(dataset)(data_dir, **filters)


_SPIDER_FILES = {"dev": "dev.json", "train": "train_spider.json"}
_SPIDER_SQL = ("query",)

register_dataset(
    DatasetSpec("spider", "Spider", "spider", _SPIDER_FILES, "question", _SPIDER_SQL, gold_file="{split}_gold.sql",
                spider_dev_aligned=True, published_systems=True),
    load_spider,
)
register_dataset(
    DatasetSpec("spider-syn", "Spider-Syn", "spider", _SPIDER_FILES, "SpiderSynQuestion", _SPIDER_SQL,
                spider_databases=True, variant_of="spider", spider_dev_aligned=True),
    partial(_load_json_dataset, "spider-syn"),
)
register_dataset(
    DatasetSpec("spider-realistic", "Spider-Realistic", "spider", {"dev": "spider-realistic.json"}, "question",
                _SPIDER_SQL, spider_databases=True, variant_of="spider"),
    partial(_load_json_dataset, "spider-realistic"),
)
register_dataset(
    DatasetSpec("spider-dk", "Spider-DK", "spider", {"dev": "Spider-DK.json"}, "question", _SPIDER_SQL,
                spider_databases=True, variant_of="spider"),
    partial(_load_json_dataset, "spider-dk"),
)
register_dataset(
    DatasetSpec("bird", "BIRD", "bird", {"dev": "dev.json", "mini_dev": "mini_dev_sqlite.json"}, "question",
                ("SQL", "query"), evidence_field="evidence", difficulty=FIELD, levels=BIRD_DIFFICULTIES,
                db_dirs=("dev_databases",)),
    load_bird,
)
register_dataset(
    DatasetSpec("jsonl", "JSONL questions", "spider", {"dev": "questions.jsonl"}, "question", ("sql", "SQL", "query"),
                evidence_field="evidence", difficulty=FIELD_OR_HARDNESS, levels=(), db_dirs=("database", "."),
                file_only=True),
    partial(_load_json_dataset, "jsonl"),
)


def read_index_file(path: str | os.PathLike) -> list[int]:
    """0-based indices, one per line (e.g. spider/dev_indices_needing_wta1_rankings.txt)."""
    return [int(x) for x in Path(path).read_text().split() if x.strip()]
