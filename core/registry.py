"""A tiny name -> factory registry, shared by every extension point (generators, discriminators,
routers, selection policies, datasets). An entry may carry metadata (`register(name, **meta)`), so what
other layers need to know about an entry (e.g. whether a policy needs scores) is declared once, with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """Raised when a registry is asked for a name it does not hold; the message lists the choices."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to factories. `register` works as a decorator::

        GENERATORS = Registry("generator")

        @GENERATORS.register("transformers")
        class TransformersGenerator: ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering `factory` under `name`, with optional metadata (`meta(name)` returns it)."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items and self._items[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = factory
            self._meta[name] = dict(meta)
            return factory

        return deco

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata `name` was registered with (raises UnknownName for an unknown name)."""
        self.get(name)
        return dict(self._meta.get(name, {}))

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items)) or '(none)'}"
            ) from None

    def create(self, name: str, /, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self, *, sort: bool = True) -> list[str]:
        """The registered names: sorted, or (`sort=False`) in registration order."""
        return sorted(self._items) if sort else list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
