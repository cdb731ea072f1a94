"""The "check" mode: a wrapper that gives non-executable candidates the worst score (-1.0) without
running the model and lets the inner discriminator score the rest. -1.0 is strictly below every model score:
verdicts score in [0, 1] (a confident false is exactly 0.0 in fp32) and "no verdict" gets the fallback (-0.5),
as in the paper's scale (1 invalid, 0.5 evaluator failed, -p valid; lower is better there).

A candidate is non-executable when `request.executions[i]` is given and `.ok` is False; candidates
with no execution result (None, or no `executions` at all) are scored by the inner discriminator.
"""

from __future__ import annotations

from typing import Any

from core.model import Score
from core.specs import options_of
from discriminators.base import DiscriminationRequest, LocalOptions

WORST = -1.0


class CheckDiscriminator:
    """Wraps any discriminator. `score_many` is forwarded in one call when the inner one has it."""

    mode = "check"

    def __init__(self, inner: Any, *, worst: float = WORST, name: str | None = None):
        self.inner = inner
        self.worst = float(worst)
        fb = getattr(inner, "fallback", None)
        if self.worst >= min(0.0, fb if fb is not None else 0.0):
            raise ValueError(f"the check mode's worst score ({self.worst}) must be below every model score "
                             f"(0.0 and the fallback {fb})")
        self.name = name or getattr(inner, "name", "check")

    def _split(self, request: DiscriminationRequest) -> tuple[list[int], DiscriminationRequest]:
        ex = request.executions
        if ex is not None and len(ex) != len(request.sqls):
            raise ValueError(f"executions has {len(ex)} entries for {len(request.sqls)} candidates")
        keep = [i for i in range(len(request.sqls)) if ex is None or ex[i] is None or ex[i].ok]
        sub = DiscriminationRequest(
            question=request.question, schema=request.schema, sqls=[request.sqls[i] for i in keep],
            evidence=request.evidence, executions=None if ex is None else [ex[i] for i in keep], extra=request.extra,
        )
        return keep, sub

    def _merge(self, request: DiscriminationRequest, keep: list[int], inner_scores: list[Score]) -> list[Score]:
        out: list[Score | None] = [None] * len(request.sqls)
        for i, s in zip(keep, inner_scores, strict=True):
            out[i] = s
        for i, s in enumerate(out):
            if s is None:
                e = request.executions[i]  # type: ignore[index]
                why = f"{e.error_kind}: {e.error}" if e.error_kind else (e.error or "failed")
                out[i] = Score(score=self.worst, verdict=False, reasoning=f"not executable ({why}); not scored by the model",
                               discriminator=self.name, checkpoint=None, mode=self.mode, verdict_kind="not_executable")
        return out  # type: ignore[return-value]

    def score(self, request: DiscriminationRequest) -> list[Score]:
        keep, sub = self._split(request)
        return self._merge(request, keep, self.inner.score(sub) if keep else [])

    def score_many(self, requests: list[DiscriminationRequest]) -> list[list[Score]]:
        splits = [self._split(r) for r in requests]
        if hasattr(self.inner, "score_many"):
            inner = self.inner.score_many([sub for _, sub in splits])
        else:
            inner = [self.inner.score(sub) if sub.sqls else [] for _, sub in splits]
        return [self._merge(r, k, s) for r, (k, _), s in zip(requests, splits, inner, strict=True)]

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


def wrap_check(spec: Any, disc: Any) -> Any:
    """`disc` wrapped in the check mode when the spec says `options.check: true`."""
    if options_of(LocalOptions, spec).check:
        return CheckDiscriminator(disc)
    return disc
