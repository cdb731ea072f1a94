"""Checkpoint pool: lazy loading, pinning in-flight requests across a swap, unloading, validation."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest

from core.errors import CheckpointError
from core.registry import UnknownName
from core.specs import ModelSpec
from discriminators.base import DiscriminationRequest
from planner.checkpoints import CheckpointPool

REQ = DiscriminationRequest(question="How many singers are there?", schema="CREATE TABLE singer (id INT, name TEXT);",
                            sqls=["SELECT count(*) FROM singer"])


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    """A distinct checkpoint directory with the same weights (files linked, not copied)."""
    dst.mkdir()
    for f in src.iterdir():
        if not f.name.startswith("."):
            (dst / f.name).symlink_to(f)
    return dst


def _spec(name: str, path: Path, **opts) -> ModelSpec:
    return ModelSpec(name=name, role="discriminator", backend="transformers", path=str(path),
                     cost_per_1k_input=0.1, cost_per_1k_output=0.2, options={"mode": "logit", **opts})


@pytest.fixture
def pool(tiny_checkpoint, tmp_path):
    a = _copy_checkpoint(Path(tiny_checkpoint), tmp_path / "tiny-a")
    b = _copy_checkpoint(Path(tiny_checkpoint), tmp_path / "tiny-b")
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama"}')
    specs = {"tiny-a": _spec("tiny-a", a), "tiny-b": _spec("tiny-b", b),
             "missing": _spec("missing", tmp_path / "nope"), "empty": _spec("empty", tmp_path / "empty"),
             "broken": _spec("broken", bad)}
    p = CheckpointPool("discriminator", specs, active="tiny-a")
    yield p
    p.close()


def test_lazy_load_and_list(pool):
    assert [i.loaded for i in pool.list()] == [False] * 5
    with pool.acquire() as (name, backend):
        assert name == "tiny-a"
        assert backend.score(REQ)[0].checkpoint == "tiny-a"
        info = {i.name: i for i in pool.list()}
        assert info["tiny-a"].loaded and info["tiny-a"].active and info["tiny-a"].in_flight == 1
        assert info["tiny-a"].cost_per_1k_output == 0.2 and not info["tiny-b"].loaded


def test_twenty_in_flight_requests_and_one_swap(pool):
    """10 requests start on tiny-a, the pool swaps to tiny-b while they are in flight, 10 more start; every
    request finishes on the checkpoint it started with and tiny-a is unloaded after the last one ends."""
    results: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []
    arrived = threading.Semaphore(0)
    go = threading.Event()
    refs = []

    def request(i: int, wait: bool) -> None:
        try:
            with pool.acquire() as (name, backend):
                if wait:
                    refs.append(weakref.ref(backend.loaded.model))
                    arrived.release()
                    assert go.wait(60)
                results[i] = (name, backend.score(REQ)[0].checkpoint)
        except BaseException as e:  # reported below
            errors.append(e)

    first = [threading.Thread(target=request, args=(i, True)) for i in range(10)]
    for t in first:
        t.start()
    for _ in range(10):
        assert arrived.acquire(timeout=120)
    pool.switch("tiny-b")
    assert pool.active == "tiny-b"
    assert pool.is_loaded("tiny-a"), "in-flight requests pin the old checkpoint"
    second = [threading.Thread(target=request, args=(i, False)) for i in range(10, 20)]
    for t in second:
        t.start()
    go.set()
    for t in first + second:
        t.join(120)
    assert not errors, errors
    assert len(results) == 20
    assert all(results[i] == ("tiny-a", "tiny-a") for i in range(10))
    assert all(results[i] == ("tiny-b", "tiny-b") for i in range(10, 20))
    assert not pool.is_loaded("tiny-a") and pool.is_loaded("tiny-b")
    gc.collect()
    assert all(r() is None for r in refs), "the old model was freed"


@pytest.mark.parametrize(("name", "match"), [("missing", "does not exist"), ("empty", "config.json"),
                                             ("broken", "failed to load")])
def test_switch_to_broken_checkpoint_fails_and_keeps_the_old(pool, name, match):
    with pool.acquire():
        pass
    with pytest.raises(CheckpointError, match=match):
        pool.switch(name)
    assert pool.active == "tiny-a" and pool.is_loaded("tiny-a") and not pool.is_loaded(name)
    with pool.acquire() as (n, _):
        assert n == "tiny-a"


def test_unknown_names_and_roles(pool, tiny_checkpoint):
    with pytest.raises(UnknownName, match="tiny-a"):
        pool.switch("nope")
    with pytest.raises(ValueError, match="role"):
        CheckpointPool("generator", {"d": _spec("d", Path(tiny_checkpoint))}, active="d")
    with pytest.raises(UnknownName):
        CheckpointPool("discriminator", {"d": _spec("d", Path(tiny_checkpoint))}, active="x")


def test_idle_old_checkpoint_unloads_on_switch(pool):
    with pool.acquire():
        pass
    pool.switch("tiny-b", load=False)
    assert pool.active == "tiny-b" and not pool.is_loaded("tiny-a") and not pool.is_loaded("tiny-b")
    with pool.acquire() as (name, backend):
        assert name == "tiny-b" and backend.name == "tiny-b"
