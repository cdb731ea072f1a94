"""The discriminator protocol and registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from core.model import ExecutionResult, Score
from core.registry import Registry


@dataclass
class DiscriminationRequest:
    """One question and its candidates. `executions` (same order as `sqls`), when given, lets the
    "check" mode give non-executable candidates the worst score without running the model."""

    question: str
    schema: str
    sqls: list[str]
    evidence: str | None = None
    executions: list[ExecutionResult | None] | None = None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Discriminator(Protocol):
    name: str

    def score(self, request: DiscriminationRequest) -> list[Score]:
        """One Score per SQL, same order."""
        ...


DISCRIMINATORS: Registry[Discriminator] = Registry("discriminator")


MODES = ("cot", "logit")


def spec_mode(spec: Any, default: str = "cot") -> str:
    """The scoring mode a spec asks for (`options.mode`: cot | logit)."""
    mode = ((getattr(spec, "options", None) or {}).get("mode") or default).lower()
    if mode not in MODES:
        raise ValueError(f"discriminator {getattr(spec, 'name', '?')!r}: options.mode must be one of {MODES}, not {mode!r}")
    return mode


def wrap_check(spec: Any, disc: Any) -> Any:
    """`disc` wrapped in the check mode when the spec says `options.check: true`."""
    if (getattr(spec, "options", None) or {}).get("check"):
        from discriminators.check import CheckDiscriminator

        return CheckDiscriminator(disc)
    return disc
