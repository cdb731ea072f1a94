"""TRIM-style cascade router: run the cheap pair first, escalate only when its answer looks unreliable.

Owns `escalation_signals` (the evidence computed from the candidates pooled so far), `escalate_reason`
(the rule) and the `cascade` router. The offline routing study (`eval.routing.cascade_decisions`) calls the
same two functions on the logged candidates, so what it measures is this rule.

The router lists every configured pair (cheap -> strong, the configuration order, or an explicit `ladder`)
in `RouteDecision.steps`; the pipeline runs steps[0], then calls `should_escalate(plan, 0, steps)` and so
on, pooling all candidates (the cheap step's candidates are never thrown away). The router returns its
signals in the `Escalation`; the pipeline records them. Escalate when:

1. no pooled candidate executes; or
2. the best soft score among executable candidates is below `tau` (skipped when nothing is scored); or
3. the vote margin is below `vote_margin`: the share of executable candidates (weighted by
   max(1, duplicates)) in the largest execution-result cluster minus the share in the second largest
   (`core.clusters.Clustering.margin`, the one clustering rule). One result cluster has margin 1.

Predicted cost of a decision = Σ_k cost(step k)·P(reach step k) with P(reach k) = escalation_rate^k
(`escalation_rate` parameter, default 0.5); a step's cost is `expected_prompt_tokens` /
`expected_completion_tokens` x its generator's and discriminator's configured prices. Predicted quality is
the configured `quality` of the first pair (a dict pair -> EX from offline evaluation), when given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.clusters import cluster
from core.model import Plan, RouteDecision, ScoredCandidate, executable, soft_score
from routing.router import ROUTERS, Escalation, RouteContext


def escalation_signals(cands: Sequence[ScoredCandidate]) -> dict[str, Any]:
    """executes (any candidate ran), n_executable, top_score (None when unscored), margin, n_clusters."""
    ok = [c for c in cands if executable(c)]
    scored = [c for c in ok if c.scores]
    cl = cluster(cands)
    return {"executes": bool(ok), "n_executable": len(ok), "n_candidates": len(cands),
            "top_score": max(soft_score(c) for c in scored) if scored else None,
            "margin": cl.margin, "n_clusters": len(cl)}


def escalate_reason(signals: dict[str, Any], tau: float, vote_margin: float) -> str | None:
    """Why to escalate given the signals, or None to stop."""
    if not signals["executes"]:
        return "no candidate executes"
    if signals["top_score"] is not None and signals["top_score"] < tau:
        return f"top soft score {signals['top_score']:.3f} < tau {tau:g}"
    if signals["margin"] < vote_margin:
        return f"vote margin {signals['margin']:.3f} < {vote_margin:g} ({signals['n_clusters']} result clusters)"
    return None


@ROUTERS.register("cascade", summary="cheap pair first; escalate on low confidence or a split vote", cascades=True)
class CascadeRouter:
    """Params: tau (soft-score threshold), vote_margin, ladder (pair names, cheap -> strong; default: all
    configured pairs in order), max_steps, escalation_rate, quality (pair -> expected EX),
    expected_prompt_tokens, expected_completion_tokens, min_confidence (escalate when the plan's calibrated
    confidence, `Plan.confidence`, is below it; off by default)."""

    name = "cascade"

    def __init__(self, tau: float = 0.5, vote_margin: float = 0.2, ladder: Sequence[str] | None = None,
                 max_steps: int | None = None, escalation_rate: float = 0.5, quality: dict[str, float] | None = None,
                 expected_prompt_tokens: int = 1000, expected_completion_tokens: int = 200,
                 min_confidence: float | None = None):
        if not 0.0 <= tau <= 1.0:
            raise ValueError("tau must be in [0, 1]")
        if not 0.0 <= vote_margin <= 1.0:
            raise ValueError("vote_margin must be in [0, 1]")
        if not 0.0 <= escalation_rate <= 1.0:
            raise ValueError("escalation_rate must be in [0, 1]")
        if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
            raise ValueError("min_confidence must be in [0, 1]")
        self.min_confidence = min_confidence
        self.tau, self.vote_margin = float(tau), float(vote_margin)
        self.ladder = list(ladder) if ladder else None
        self.max_steps = max_steps
        self.escalation_rate = escalation_rate
        self.quality = dict(quality or {})
        self.pt, self.ct = expected_prompt_tokens, expected_completion_tokens
        self._steps: dict[str, int] = {}

    def _step_cost(self, ctx: RouteContext, pair: str) -> float:
        p = ctx.pairs[pair]
        cost = 0.0
        for m in (p.generator, p.discriminator):
            spec = ctx.models.get(m)
            if spec is not None:
                cost += spec.cost(self.pt, self.ct)
        return cost

    def decide(self, ctx: RouteContext) -> RouteDecision:
        steps = self.ladder or list(ctx.pairs)
        unknown = [s for s in steps if s not in ctx.pairs]
        if unknown:
            raise ValueError(f"cascade ladder names unknown pairs {unknown}; configured: {', '.join(ctx.pairs)}")
        if self.max_steps:
            steps = steps[: self.max_steps]
        first = ctx.pairs[steps[0]]
        costs = [self._step_cost(ctx, s) for s in steps]
        expected = sum(c * self.escalation_rate**k for k, c in enumerate(costs))
        return RouteDecision(
            router=self.name, pair=steps[0], generator=first.generator, discriminator=first.discriminator,
            predicted_quality=self.quality.get(steps[0]), predicted_cost=expected, steps=list(steps),
            reason=f"cascade over {len(steps)} pair(s): escalate when nothing executes, top score < {self.tau:g} "
                   f"or vote margin < {self.vote_margin:g}",
            details={"tau": self.tau, "vote_margin": self.vote_margin, "step_costs": dict(zip(steps, costs, strict=True)),
                     "escalation_rate": self.escalation_rate},
        )

    def should_escalate(self, plan: Plan, step: int, steps: Sequence[str]) -> Escalation:
        """Reads the plan (its pooled candidates and confidence), never writes it; the signals go back in the
        `Escalation` for the pipeline to record."""
        if step + 1 >= len(steps):
            return Escalation(False, "last step of the cascade")
        sig = escalation_signals(plan.candidates)
        why = escalate_reason(sig, self.tau, self.vote_margin)
        conf = plan.confidence
        sig["confidence"] = conf
        if why is None and self.min_confidence is not None and conf is not None and conf < self.min_confidence:
            why = f"plan confidence {conf:.3f} < min_confidence {self.min_confidence:g}"
        if why:
            return Escalation(True, why, sig)
        return Escalation(False, "cheap step is confident: executes, score and vote margin above thresholds", sig)

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        return None  # thresholds are set offline (`sqlarbiter eval routing` sweeps them)
