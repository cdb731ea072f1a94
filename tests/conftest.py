"""Shared fixtures: the embedded tiny model (SmolLM2-135M), converted once into the user cache and
loaded once per test session.

CPU threads: on a machine whose load already exceeds its core count (a shared developer box), OpenMP's
multi-threaded kernels stall waiting for descheduled threads and model tests run many times slower, so
the session then uses one torch thread (OMP_NUM_THREADS, set before torch is imported, unless already
set). `SQLARBITER_TEST_TORCH_THREADS=N` forces N.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def _test_threads() -> int | None:
    forced = os.environ.get("SQLARBITER_TEST_TORCH_THREADS")
    if forced:
        return int(forced)
    try:
        return 1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else None
    except OSError:
        return None


def pytest_configure(config):
    threads = _test_threads()
    if threads and "torch" not in sys.modules:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.fixture(autouse=True)
def _generation_not_timed(monkeypatch):
    """Tests decode without the CPU's generation time budget (`planner.config.CPU_GENERATE_S`): on a loaded CI
    machine the budget would drop samples a test checks, so what a test asserts would depend on the machine's load.
    Tests of the budget itself set `limits.generate_s` (or the request's budget) explicitly."""
    import planner.config

    monkeypatch.setattr(planner.config, "CPU_GENERATE_S", 600.0)


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """Path of the converted embedded checkpoint directory (converts on first use, ~30 s, then cached)."""
    from core.runtime.embedded import embedded_checkpoint

    return embedded_checkpoint()


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The tiny model loaded once (a core.runtime.checkpoint.LoadedModel: .model, .tokenizer, .device)."""
    import torch

    from core.runtime.checkpoint import load_checkpoint

    threads = _test_threads()
    if threads:
        torch.set_num_threads(threads)
    return load_checkpoint(tiny_checkpoint, name="tiny")


# The shared Spider/BIRD data and published-system candidates (skip when absent): tests/eval and tests/cli.


@pytest.fixture(scope="session")
def spider_root() -> Path:
    from core.settings import spider_dir

    d = spider_dir()
    if not (d / "dev.json").is_file() or not (d / "database").is_dir():
        pytest.skip(f"Spider data not found at {d} (set SPIDER_DIR)")
    return d


@pytest.fixture(scope="session")
def bird_root() -> Path:
    from core.settings import bird_dir

    d = bird_dir()
    if not (d / "dev.json").is_file() or not (d / "dev_databases").is_dir():
        pytest.skip(f"BIRD data not found at {d} (set BIRD_DIR)")
    return d


@pytest.fixture(scope="session")
def systems_root() -> Path:
    from core.settings import candidates_dir

    d = candidates_dir() / "spider_dev"
    if not d.is_dir() or not any(d.glob("*.sql")):
        pytest.skip(f"published system predictions not found at {d}")
    return d


@pytest.fixture(scope="session")
def samples_root() -> Path:
    from core.settings import candidates_dir

    d = candidates_dir() / "spider_dev_samples"
    if not d.is_dir() or not any(d.glob("*.jsonl")):
        pytest.skip(f"sampled candidate pools not found at {d}")
    return d
