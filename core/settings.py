"""Where things live: the shared benchmark data, the user cache and data dirs; and every `SQLARBITER_*`
environment variable (`ENV`, the one table, also in the README).

Every location can be overridden by an environment variable; the defaults work both from a checkout
(`../shared/data` beside the repository) and from the current directory. Code reads a `SQLARBITER_*`
variable only through `env(name)` (a name not in `ENV` is an error), or through the configuration loader
(`planner.config`: the service's settings and `SQLARBITER__SECTION__KEY` overrides).
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every SQLARBITER_* environment variable: name -> what it sets (README "Environment variables").
ENV: dict[str, str] = {
    "SQLARBITER_CONFIG": "the configuration file (default: the built-in one); `planner.config.load_config`",
    "SQLARBITER__SECTION__KEY": "overrides one configuration value, any depth (`SQLARBITER__LIMITS__N_MAX=8`); "
                                "the value is parsed as TOML when it parses",
    "SQLARBITER_STORE_URL": "config `store_url`: the SQLAlchemy URL of the plan store",
    "SQLARBITER_API_KEY": "config `api_key`: turns API-key auth on",
    "SQLARBITER_RUNS_DIR": "config `runs_dir`: the eval runs folder (default `./runs`)",
    "SQLARBITER_DATABASES": "extra database files/folders/server URLs (OS path separator), added to config "
                            "`databases`",
    "SQLARBITER_FEW_SHOT": "a JSONL file of `{db_id, question, sql}` few-shot examples (planner.examples)",
    "SQLARBITER_SYSTEM_COSTS": "the system cost table (TOML) of `route costs` and the routing study "
                               "(default: routing/system_costs.toml)",
    "SQLARBITER_INDEX_CACHE": "`0`: do not read schema-linking indexes from the disk cache (sqlbox.index)",
    "SQLARBITER_EMBED_CACHE": "`0`: do not cache question embeddings on disk (routing.features)",
    "SQLARBITER_EMBEDDER_DIR": "a sentence-transformers directory replacing the shipped all-MiniLM-L6-v2",
    "SQLARBITER_SHARED_DATA": "the public benchmark data folder (default `../shared/data`)",
    "SQLARBITER_CANDIDATES_DIR": "published candidate pools (default `<shared data>/candidates`)",
    "SQLARBITER_CACHE_DIR": "converted checkpoints and other rebuildable files (default: the user cache dir)",
    "SQLARBITER_DATA_DIR": "durable state: the default plan store, the demo database (default: the user data dir)",
    "SQLARBITER_BENCHMARKS_MD": "the file benchmark reports append to (default BENCHMARKS.md)",
    "SQLARBITER_BENCH_NO_APPEND": "`1`: benchmark reports are not appended",
    # read by deploy/haproxy.cfg (the scale-out load balancer), not by Python
    "SQLARBITER_LB_BIND": "deploy/haproxy.cfg: the load balancer's address (`host:port`)",
    "SQLARBITER_LB_STATS": "deploy/haproxy.cfg: its statistics page's address",
    "SQLARBITER_REPLICA_": "deploy/haproxy.cfg: `SQLARBITER_REPLICA_1`, `_2`, ...: the replicas' addresses",
}


def env(name: str, default: str | None = None) -> str | None:
    """The value of the `SQLARBITER_*` variable `name` (`default` when unset or empty); `name` must be in `ENV`."""
    if name not in ENV:
        raise KeyError(f"{name} is not a documented variable (core.settings.ENV)")
    return os.environ.get(name) or default


def env_path(name: str) -> Path | None:
    """`env(name)` as a path (`~` expanded), or None when unset."""
    v = env(name)
    return Path(v).expanduser() if v else None


def env_flag(name: str, default: bool = True) -> bool:
    """A switch variable: False for `0`, True for any other value, `default` when unset."""
    v = env(name)
    return default if v is None else v != "0"


def shared_data_dir() -> Path:
    """Public benchmark data (Spider, BIRD, candidate pools). `SQLARBITER_SHARED_DATA` overrides;
    the default is `../shared/data` beside the repository (or beside the current directory)."""
    p = env_path("SQLARBITER_SHARED_DATA")
    if p is not None:
        return p
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
    return env_path("SQLARBITER_CANDIDATES_DIR") or shared_data_dir() / "candidates"


def cache_dir() -> Path:
    """Converted checkpoints and other rebuildable files. `SQLARBITER_CACHE_DIR` overrides."""
    p = env_path("SQLARBITER_CACHE_DIR") or Path(user_cache_dir("sqlarbiter"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_dir() -> Path:
    """Durable state (the default SQLite store of plans and feedback, the demo database).
    `SQLARBITER_DATA_DIR` overrides."""
    p = env_path("SQLARBITER_DATA_DIR") or Path(user_data_dir("sqlarbiter"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def runs_dir() -> Path:
    """Eval runs (`sqlarbiter eval` writes `<runs>/eval/<run>/`; the playground's eval-runs page lists them).
    `SQLARBITER_RUNS_DIR` overrides; the default is `runs` in the current directory. Not created here."""
    return env_path("SQLARBITER_RUNS_DIR") or Path.cwd() / "runs"
