"""The router protocol and registry: choose the generator/discriminator pair for a question.

A router returns a RouteDecision (recorded on every Plan). Cascading routers list several pairs in
`decision.steps` (cheap first); the pipeline runs them in order and, after each step, asks
`should_escalate(plan_so_far, step)` whether to run the next one, pooling all candidates.
Routers that learn online implement `update` (fed by POST /feedback and eval runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from core.model import Plan, Question, RouteDecision
from core.registry import Registry
from core.specs import ModelSpec, PairSpec


@dataclass
class RouteContext:
    question: Question
    pairs: dict[str, PairSpec]  # in configured order (cheap -> strong)
    models: dict[str, ModelSpec]  # generator and discriminator specs by name (for costs)
    schema_features: dict[str, Any] = field(default_factory=dict)  # e.g. n_tables, n_columns, n_fks
    schema_text: str | None = None


@runtime_checkable
class Router(Protocol):
    name: str

    def decide(self, ctx: RouteContext) -> RouteDecision: ...

    def should_escalate(self, plan: Plan, step: int) -> tuple[bool, str]:
        """After running decision.steps[step]: escalate to steps[step + 1]? Non-cascading routers: (False, "")."""
        ...

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        """Learn from one observed outcome (no-op for static routers)."""
        ...


ROUTERS: Registry[Router] = Registry("router")


@ROUTERS.register("fixed")
class FixedRouter:
    """Always the configured pair (default: the first pair)."""

    name = "fixed"

    def __init__(self, pair: str | None = None, **_: Any):
        self.pair = pair

    def decide(self, ctx: RouteContext) -> RouteDecision:
        name = self.pair or next(iter(ctx.pairs))
        p = ctx.pairs[name]
        return RouteDecision(router="fixed", pair=name, generator=p.generator, discriminator=p.discriminator,
                             steps=[name], reason="fixed pair")

    def should_escalate(self, plan: Plan, step: int) -> tuple[bool, str]:
        return False, ""

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        return None
