"""The router protocol and registry: choose the generator/discriminator pair for a question.

A router returns a RouteDecision (recorded on every Plan). Cascading routers list several pairs in
`decision.steps` (cheap first); the pipeline runs them in order and, after each step, asks
`should_escalate(plan_so_far, step, steps)` whether to run the next one, pooling all candidates. A router
reads the plan and returns an `Escalation` (its decision, reason and the signals it decided on); it never
writes the plan: the pipeline records the signals in `plan.route.details["signals"]`.
Routers that learn online implement `update` (fed by POST /feedback and eval runs).

Each router registers with a `RouterInfo` (`ROUTERS.info(name)`). Its parameters (`[router] params` for the
configured one, `[routers.<name>]` for one a request may name) are its factory's keyword parameters, less the
ones the pipeline passes itself (`INJECTED`); `check_router_params` names an unknown one, which the config
loader reports as a config error (a typo in `[routers.cascade]` is never silently ignored).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class Escalation:
    """A router's answer after a step: run the next step or not, why, and the evidence (None: none recorded)."""

    escalate: bool
    reason: str = ""
    signals: dict[str, Any] | None = None


@runtime_checkable
class Router(Protocol):
    name: str

    def decide(self, ctx: RouteContext) -> RouteDecision: ...

    def should_escalate(self, plan: Plan, step: int, steps: Sequence[str]) -> Escalation:
        """After running steps[step] of the planned ladder `steps`: escalate to steps[step + 1]?
        Non-cascading routers: Escalation(False)."""
        ...

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        """Learn from one observed outcome (no-op for static routers)."""
        ...


@dataclass(frozen=True)
class RouterInfo:
    """What the code needs to know about a router, declared with its registry entry."""

    summary: str = ""
    learns: bool = False  # update() learns from feedback (POST /feedback, eval runs)
    cascades: bool = False  # a decision may list several steps, run while should_escalate says so
    stepwise: bool = False  # routes within the query, step by step (`planner.stepwise` runs its loop)


ROUTERS: Registry[Router, RouterInfo] = Registry("router", RouterInfo)
INJECTED = ("engine", "pairs", "models")  # passed by the pipeline to a router factory that declares them


def router_parameters(name: str) -> list[str]:
    """The parameters a configuration may set for router `name` (its factory's keyword parameters, less
    `INJECTED`); raises UnknownName for an unknown router."""
    sig = inspect.signature(ROUTERS.get(name))
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in INJECTED]


def check_router_params(name: str, params: Mapping[str, Any], where: str) -> list[str]:
    """One line per parameter in `params` that router `name` does not take, naming `where.<param>`."""
    known = router_parameters(name)
    return [f"{where}.{k}: unknown parameter of router {name!r}; known: {', '.join(known) or '(none)'}"
            for k in params if k not in known]


@ROUTERS.register("fixed", summary="always one pair (default: the first configured pair)")
class FixedRouter:
    """Always the configured pair (default: the first pair)."""

    name = "fixed"

    def __init__(self, pair: str | None = None):
        self.pair = pair

    def decide(self, ctx: RouteContext) -> RouteDecision:
        name = self.pair or next(iter(ctx.pairs))
        p = ctx.pairs[name]
        return RouteDecision(router="fixed", pair=name, generator=p.generator, discriminator=p.discriminator,
                             steps=[name], reason="fixed pair")

    def should_escalate(self, plan: Plan, step: int, steps: Sequence[str]) -> Escalation:
        return Escalation(False)

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        return None
