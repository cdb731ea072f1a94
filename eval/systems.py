"""Published systems' Spider dev predictions and their per-question correctness (cached).

`candidates/spider_dev/<name>.sql` holds one predicted SQL per line aligned with `spider/dev.json`
(optionally `\\t<db_id>`), `systems.json` describes each system. `system_correctness` computes Spider EX
per question per system with `eval.exec_match` (each gold runs once per question for all systems) and
caches the verdicts under `core.settings.cache_dir()/eval/systems/`, keyed by a hash of the
prediction file, the gold file and the evaluator version, so reruns are free and any change recomputes.
The routing study reads these as logged outcomes (`load_systems`, `system_correctness`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from core.settings import cache_dir, candidates_dir, spider_dir
from eval.datasets import Example, load_spider
from eval.exec_match import EVALUATOR_VERSION, MatchTask, match_tasks


def systems_dir(path: str | os.PathLike | None = None) -> Path:
    """The directory of `<name>.sql` files: `path` itself, or its `spider_dev/` child."""
    p = Path(path) if path else candidates_dir()
    if (p / "spider_dev").is_dir() and not any(p.glob("*.sql")):
        p = p / "spider_dev"
    if not p.is_dir():
        raise FileNotFoundError(f"no systems directory at {p}")
    return p


def read_predictions(path: str | os.PathLike) -> list[str]:
    """One SQL per line; a trailing `\\t<db_id>` is dropped (the official evaluator's format)."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.split("\t")[0].strip() for line in lines]


def system_names(candidates: str | os.PathLike | None = None) -> list[str]:
    return sorted(p.stem for p in systems_dir(candidates).glob("*.sql"))


def load_systems(
    candidates: str | os.PathLike | None = None, names: list[str] | None = None, expected: int | None = 1034
) -> dict[str, list[str]]:
    """name -> predictions (aligned with dev.json). Raises if a file's line count is not `expected`."""
    d = systems_dir(candidates)
    out = {}
    for name in names or system_names(d):
        f = d / f"{name}.sql"
        if not f.is_file():
            raise FileNotFoundError(f"unknown system {name!r}: {f} does not exist")
        preds = read_predictions(f)
        if expected is not None and len(preds) != expected:
            raise ValueError(f"{f}: {len(preds)} lines, expected {expected} (one per dev question)")
        out[name] = preds
    return out


def system_info(candidates: str | os.PathLike | None = None) -> dict[str, dict]:
    """name -> the systems.json entry (system, model, family, repo, commit, path)."""
    f = systems_dir(candidates) / "systems.json"
    if not f.is_file():
        return {}
    return {e["name"]: e for e in json.loads(f.read_text())}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_file(name: str, key: str) -> Path:
    d = cache_dir() / "eval" / "systems"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}-{key[:16]}.json"


def system_verdicts(
    names: list[str] | None = None,
    *,
    workers: int = 2,
    cache: bool = True,
    candidates: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """name -> one verdict dict per dev question (ex, error_kind, error, pred_ms)."""
    sdir = systems_dir(candidates)
    names = names or system_names(sdir)
    sp = Path(data_dir) if data_dir else spider_dir()
    gold_file = sp / "dev_gold.sql" if (sp / "dev_gold.sql").is_file() else sp / "dev.json"
    base = hashlib.sha256(f"{EVALUATOR_VERSION}|{_sha(gold_file)}|{timeout}".encode()).hexdigest()
    out: dict[str, list[dict]] = {}
    todo: list[str] = []
    keys: dict[str, str] = {}
    for n in names:
        f = sdir / f"{n}.sql"
        if not f.is_file():
            raise FileNotFoundError(f"unknown system {n!r}: {f} does not exist")
        keys[n] = hashlib.sha256(f"{base}|{_sha(f)}".encode()).hexdigest()
        cf = _cache_file(n, keys[n])
        if cache and cf.is_file():
            out[n] = json.loads(cf.read_text())
        else:
            todo.append(n)
    if todo:
        examples: list[Example] = load_spider(sp, with_difficulty=False, require_db=False)
        preds = load_systems(sdir, todo, expected=len(examples))
        tasks = [MatchTask(str(e.db_path), e.gold_sql, [preds[n][e.index] for n in todo]) for e in examples]
        results = match_tasks(
            tasks, "spider", workers=workers, timeout=timeout, progress=progress, desc=f"EX x{len(todo)} systems"
        )
        for k, n in enumerate(todo):
            verdicts = [r[k] for r in results]
            out[n] = verdicts
            if cache:
                tmp = _cache_file(n, keys[n]).with_suffix(".tmp")
                tmp.write_text(json.dumps(verdicts))
                tmp.replace(_cache_file(n, keys[n]))
    return {n: out[n] for n in names}


def system_correctness(
    names: list[str] | None = None,
    workers: int = 2,
    cache: bool = True,
    *,
    candidates: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, list[bool]]:
    """name -> Spider EX (bool) per dev question, aligned with dev.json."""
    v = system_verdicts(names, workers=workers, cache=cache, candidates=candidates, data_dir=data_dir, progress=progress)
    return {n: [bool(x["ex"]) for x in vs] for n, vs in v.items()}
