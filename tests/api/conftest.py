"""Fixtures for the HTTP API tests: a cheap test configuration for the real embedded model and a
TestClient factory over the real ASGI app (each client gets its own store file under tmp_path)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from planner.config import Config, config_from_dict

# Small budgets keep model-backed tests cheap on CPU (n=2, 48 generated tokens, 32 reasoning tokens); the
# deadline is generous because a shared CI machine may be much slower than usual.
CHEAP = {"n": 2, "max_tokens": 48, "reasoning_budget": 32}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    def make(store: Path | str | None = None, **overrides: Any) -> Config:
        data = {"defaults": dict(CHEAP), "limits": {"concurrency": 1, "queue_size": 4, "deadline_s": 900, "max_deadline_s": 900},
                "store_url": str(store) if isinstance(store, str) and "://" in str(store)
                else f"sqlite:///{store or tmp_path / 'store.db'}"}
        return config_from_dict(_merge(data, overrides), env={})

    return make


@pytest.fixture
def make_client(make_config) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(config: Config | None = None, **overrides: Any) -> TestClient:
        c = TestClient(create_app(config or make_config(**overrides)), raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory) -> Iterator[TestClient]:
    """One app (one loaded model) shared by the read-mostly tests of a module."""
    store = tmp_path_factory.mktemp("api") / "store.db"
    cfg = config_from_dict({"defaults": dict(CHEAP), "limits": {"concurrency": 1, "queue_size": 4, "deadline_s": 900,
                                                               "max_deadline_s": 900},
                            "store_url": f"sqlite:///{store}"}, env={})
    with TestClient(create_app(cfg), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def eval_runs(tmp_path: Path) -> Path:
    return write_eval_runs(tmp_path / "runs")


@pytest.fixture(scope="module")
def module_eval_runs(tmp_path_factory) -> Path:
    return write_eval_runs(tmp_path_factory.mktemp("evalruns") / "runs")


def write_eval_runs(root: Path) -> Path:
    """A runs folder with two real eval runs (results.jsonl -> eval.report.write_report: report.json,
    report.md and the PNG plots), laid out as `sqlarbiter eval` writes them (<runs>/eval/<run>/), plus a
    run with results only (no report yet) and a folder that is not a run."""
    import json

    from eval.report import write_report

    levels = ["easy", "medium", "hard", "extra"]
    for name, right in (("spider-replay-a", lambda i: i % 3 != 0), ("spider-replay-b", lambda i: i % 4 != 3)):
        d = root / "eval" / name
        d.mkdir(parents=True)
        lines = [{"index": i, "db_id": "concert_singer", "difficulty": levels[i % 4], "ex": right(i),
                  "pred": "SELECT 1", "gold": "SELECT 1"} for i in range(12)]
        (d / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        write_report(d, {"dataset": "spider", "mode": "replay", "policy": "check-rerank", "n": 12})
    partial = root / "eval" / "unfinished"
    partial.mkdir()
    (partial / "results.jsonl").write_text(json.dumps({"index": 0, "difficulty": "easy", "ex": True}) + "\n")
    (root / "not-a-run").mkdir()
    return root
