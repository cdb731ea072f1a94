"""A tiny name -> factory registry, shared by every extension point (generators, discriminators,
routers, selection policies, datasets). Each registry declares the type of what it knows about an entry (a
frozen dataclass: `Registry("router", RouterInfo)`), and each entry declares it with itself
(`register(name, summary=..., ...)` builds the dataclass: an unknown or missing field is an error at
registration, not a silent `.get(..., default)` later); `info(name)` returns it, typed.

`check_options(cls, options, where)` validates a free-form table (a model's `options`) against a dataclass
of the options a backend reads: an unknown name or a value of the wrong type is an error naming the field."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")
M = TypeVar("M")


class UnknownName(KeyError):
    """Raised when a registry is asked for a name it does not hold; the message lists the choices."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class NoInfo:
    """The metadata of a registry that declares none."""


class Registry(Generic[T, M]):
    """Maps names to factories, each with its typed metadata. `register` works as a decorator::

        GENERATORS = Registry("generator", BackendInfo)

        @GENERATORS.register("transformers", summary="a local checkpoint", options=TransformersOptions)
        class TransformersGenerator: ...
    """

    def __init__(self, kind: str, info: type[M] = NoInfo):  # type: ignore[assignment]
        self.kind = kind
        self.info_type = info
        self._items: dict[str, Callable[..., T]] = {}
        self._info: dict[str, M] = {}

    def register(self, name: str, /, **fields: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering `factory` under `name`; `fields` build its metadata (`info(name)`)."""
        try:
            info = self.info_type(**fields)
        except TypeError as e:
            raise TypeError(f"{self.kind} {name!r}: {e}") from None

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items and self._items[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = factory
            self._info[name] = info
            return factory

        return deco

    def info(self, name: str) -> M:
        """The metadata `name` was registered with (raises UnknownName for an unknown name)."""
        self.get(name)
        return self._info[name]

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


# ---------------------------------------------------------------------------------------------- options


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is not None:
        tp = origin
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def check_options(cls: type, options: Mapping[str, Any], where: str = "options") -> list[str]:
    """The problems of `options` against the dataclass `cls` (one line each, naming `where.<name>`): an option
    `cls` does not declare, or a value not of its declared type (None is always allowed: the default)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    out = []
    for key, value in options.items():
        if key not in hints:
            out.append(f"{where}.{key}: unknown option; known: {', '.join(known) or '(none)'}")
        elif value is not None and not _type_ok(value, hints[key]):
            out.append(f"{where}.{key}: expected {_type_name(hints[key])}, got {value!r}")
    return out
