"""Checkpoint pools: the configured checkpoints of one role, one of them active, swappable at run time.

`CheckpointPool(role, specs, active)` creates a backend (`GENERATORS.create(spec.backend, spec)` or
`DISCRIMINATORS.create(spec.backend, spec)`) lazily on first use. `acquire()` pins the active checkpoint for
the duration of a request, so a request finishes on the model it started with even if `switch(name)` changes
the active one meanwhile; the old model is unloaded (backend closed, references dropped, `gc.collect()`,
`torch.cuda.empty_cache()` on GPU) once its last in-flight user releases it. `switch` validates first: it
loads the new checkpoint (`load=True`, default) or checks its path (`load=False`), and on failure raises
and leaves the old one active. Thread-safe.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import CheckpointError
from core.registry import UnknownName
from core.specs import ModelSpec

ROLES = ("generator", "discriminator")


def default_factory(role: str) -> Callable[[ModelSpec], Any]:
    """spec -> backend through the role's registry (imports every backend)."""
    if role == "generator":
        import generators.registry_all  # noqa: F401
        from generators.base import GENERATORS

        return lambda spec: GENERATORS.create(spec.backend, spec)
    import discriminators.registry_all  # noqa: F401
    from discriminators.base import DISCRIMINATORS

    return lambda spec: DISCRIMINATORS.create(spec.backend, spec)


def validate_spec(spec: ModelSpec) -> None:
    """Cheap checks that need no loading: a local checkpoint path exists and looks like one; an HTTP
    backend has a URL. Raises CheckpointError."""
    if spec.backend == "transformers" or (spec.backend in ("cot", "logit")):
        from core.runtime.checkpoint import validate_checkpoint_path

        if not spec.path:
            raise CheckpointError(f"model {spec.name!r}: backend {spec.backend!r} needs `path`")
        validate_checkpoint_path(Path(spec.path))
    elif spec.backend.startswith("openai") and not spec.url:
        raise CheckpointError(f"model {spec.name!r}: backend {spec.backend!r} needs `url`")


@dataclass
class CheckpointInfo:
    name: str
    backend: str
    loaded: bool
    active: bool
    in_flight: int
    cost_per_1k_input: float
    cost_per_1k_output: float
    path: str | None = None
    url: str | None = None


class _Entry:
    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.backend: Any = None
        self.in_flight = 0
        self.load_lock = threading.Lock()


class CheckpointPool:
    """The checkpoints of one role. See the module docstring."""

    def __init__(self, role: str, specs: dict[str, ModelSpec], active: str,
                 factory: Callable[[ModelSpec], Any] | None = None):
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if not specs:
            raise ValueError(f"no {role} checkpoints configured")
        for name, spec in specs.items():
            if spec.role != role:
                raise ValueError(f"model {name!r} has role {spec.role!r}, not {role!r}")
        self.role = role
        self._entries = {name: _Entry(spec) for name, spec in specs.items()}
        self._factory = factory or default_factory(role)
        self._lock = threading.RLock()
        self._active = self._entry_name(active)

    # ---- queries ------------------------------------------------------------------------------------
    @property
    def active(self) -> str:
        return self._active

    def names(self) -> list[str]:
        return list(self._entries)

    def spec(self, name: str) -> ModelSpec:
        return self._entries[self._entry_name(name)].spec

    def is_loaded(self, name: str) -> bool:
        return self._entries[self._entry_name(name)].backend is not None

    def list(self) -> list[CheckpointInfo]:
        with self._lock:
            return [CheckpointInfo(name=n, backend=e.spec.backend, loaded=e.backend is not None, active=n == self._active,
                                   in_flight=e.in_flight, cost_per_1k_input=e.spec.cost_per_1k_input,
                                   cost_per_1k_output=e.spec.cost_per_1k_output, path=e.spec.path, url=e.spec.url)
                    for n, e in self._entries.items()]

    # ---- use ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def acquire(self) -> Iterator[tuple[str, Any]]:
        """(name, backend) of the active checkpoint, pinned until the block exits."""
        with self._lock:
            name = self._active
            entry = self._entries[name]
            entry.in_flight += 1  # pinned before loading: a concurrent switch cannot unload it
        try:
            backend = self._ensure_loaded(entry)
        except BaseException:
            self._release(name)
            raise
        try:
            yield name, backend
        finally:
            self._release(name)

    def switch(self, name: str, *, load: bool = True) -> None:
        """Make `name` the active checkpoint. Validates (and with load=True loads) it first; on failure the
        old one stays active. The old one is unloaded now if idle, else when its last request ends."""
        entry = self._entries[self._entry_name(name)]
        validate_spec(entry.spec)
        if load:
            self._ensure_loaded(entry)
        with self._lock:
            old = self._active
            self._active = name
            if old != name:
                self._maybe_unload(old)

    def load(self, name: str | None = None) -> Any:
        """Load a checkpoint now (default: the active one); returns its backend."""
        return self._ensure_loaded(self._entries[self._entry_name(name or self._active)])

    def unload(self, name: str) -> None:
        """Unload an idle, inactive checkpoint (no-op if in use; the active one is unloaded on close())."""
        with self._lock:
            self._maybe_unload(self._entry_name(name), force=name != self._active)

    def close(self) -> None:
        """Unload every idle checkpoint, the active one included."""
        with self._lock:
            for n in self._entries:
                self._maybe_unload(n, force=True)

    # ---- internals ----------------------------------------------------------------------------------
    def _entry_name(self, name: str) -> str:
        if name not in self._entries:
            raise UnknownName(f"unknown {self.role} checkpoint {name!r}; configured: {', '.join(self._entries)}")
        return name

    def _ensure_loaded(self, entry: _Entry) -> Any:
        if entry.backend is not None:
            return entry.backend
        with entry.load_lock:  # one loader per checkpoint; others wait for it
            if entry.backend is None:
                try:
                    backend = self._factory(entry.spec)
                except CheckpointError:
                    raise
                except (OSError, ValueError) as e:
                    raise CheckpointError(f"{self.role} checkpoint {entry.spec.name!r} failed to load: {e}") from e
                with self._lock:
                    entry.backend = backend
            return entry.backend

    def _release(self, name: str) -> None:
        with self._lock:
            self._entries[name].in_flight -= 1
            if name != self._active:
                self._maybe_unload(name)

    def _maybe_unload(self, name: str, force: bool = False) -> None:
        entry = self._entries[name]
        if entry.backend is None or entry.in_flight > 0 or (name == self._active and not force):
            return
        backend, entry.backend = entry.backend, None
        close = getattr(backend, "close", None)
        if callable(close):
            close()
        del backend
        from core.runtime.checkpoint import release_memory

        release_memory()
