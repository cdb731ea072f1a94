"""Where things live: the shared benchmark data, the user cache and data dirs.

Every location can be overridden by an environment variable; the defaults work both from a checkout
(`../shared/data` beside the repository) and from the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Public benchmark data (Spider, BIRD, candidate pools). `SQLARBITER_SHARED_DATA` overrides;
    the default is `../shared/data` beside the repository (or beside the current directory)."""
    env = os.environ.get("SQLARBITER_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    for base in (REPO_ROOT, Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return REPO_ROOT.parent / "shared" / "data"


def spider_dir() -> Path:
    """Spider 1.0 layout (dev.json, tables.json, database/<db_id>/<db_id>.sqlite). `SPIDER_DIR` overrides."""
    env = os.environ.get("SPIDER_DIR")
    return Path(env).expanduser() if env else shared_data_dir() / "spider"


def bird_dir() -> Path:
    """BIRD layout (dev.json, dev_databases/). `BIRD_DIR` overrides."""
    env = os.environ.get("BIRD_DIR")
    return Path(env).expanduser() if env else shared_data_dir() / "bird"


def dataset_dir(name: str) -> Path:
    """The default folder of a registered dataset (`eval.datasets`): the `<NAME>_DIR` environment variable
    (upper case, `-` as `_`: `SPIDER_SYN_DIR`, `SPIDER_DK_DIR`, ...), else `<shared data>/<name>`."""
    env = os.environ.get(name.upper().replace("-", "_") + "_DIR")
    return Path(env).expanduser() if env else shared_data_dir() / name


def candidates_dir() -> Path:
    """Published candidate pools. `SQLARBITER_CANDIDATES_DIR` overrides."""
    env = os.environ.get("SQLARBITER_CANDIDATES_DIR")
    return Path(env).expanduser() if env else shared_data_dir() / "candidates"


def cache_dir() -> Path:
    """Converted checkpoints and other rebuildable files. `SQLARBITER_CACHE_DIR` overrides."""
    env = os.environ.get("SQLARBITER_CACHE_DIR")
    p = Path(env).expanduser() if env else Path(user_cache_dir("sqlarbiter"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_dir() -> Path:
    """Durable state (the default SQLite store of plans and feedback, the demo database).
    `SQLARBITER_DATA_DIR` overrides."""
    env = os.environ.get("SQLARBITER_DATA_DIR")
    p = Path(env).expanduser() if env else Path(user_data_dir("sqlarbiter"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def runs_dir() -> Path:
    """Eval runs (`sqlarbiter eval` writes `<runs>/eval/<run>/`; the playground's eval-runs page lists them).
    `SQLARBITER_RUNS_DIR` overrides; the default is `runs` in the current directory. Not created here."""
    env = os.environ.get("SQLARBITER_RUNS_DIR")
    return Path(env).expanduser() if env else Path.cwd() / "runs"
