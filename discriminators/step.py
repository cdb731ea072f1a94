"""The step discriminator of the process reward (issue 28, `planner.prm`): the SAME discriminator as a pair's (same
backend, checkpoint or server, options), with the step prompt (`STEP_PROMPTS`: `step-logit-v1` | `step-cot-v1`)
asking whether the query SO FAR -- a partial chain of CTE steps ending at the step under review -- is a correct
start toward answering the question. The cot prompt ends with the same `{"correct": true|false}` verdict, so the
token-probability soft score (and verdict forcing) apply unchanged.

    spec = planner.discriminators.spec_of(pair.discriminator)      # the pair's discriminator spec
    disc = step_discriminator(spec, mode="logit")                   # or mode="cot", budget=32

A local checkpoint is loaded once: `core.runtime.checkpoint.load_checkpoint` returns the live copy the pair's
discriminator already holds (same path, device and dtype).
"""

from __future__ import annotations

from typing import Any

from core.specs import ModelSpec
from discriminators.base import MODES
from discriminators.prompts import STEP_PROMPTS_BY_KIND

# backends whose name fixes the scoring mode: the step discriminator swaps in the name of the other mode
_MODE_BY_NAME = {"cot": "{mode}", "logit": "{mode}", "openai-cot": "openai-{mode}", "openai-logit": "openai-{mode}"}


def step_spec(spec: ModelSpec, *, mode: str = "logit", budget: int | None = None, kind: str = "cte") -> ModelSpec:
    """The pair's discriminator spec turned into the step discriminator's: scoring mode `mode` (through
    `options.mode`, or the backend name for backends named by mode), the step prompt of step kind `kind` ("cte":
    the query so far; "prose": the reasoning so far), and the reasoning budget `budget` when given (cot only; None
    keeps the spec's)."""
    mode = (mode or "").lower()
    if mode not in MODES:
        raise ValueError(f"step discriminator: mode must be one of {MODES}, not {mode!r}")
    if kind not in STEP_PROMPTS_BY_KIND:
        raise ValueError(f"step discriminator: kind must be one of {tuple(STEP_PROMPTS_BY_KIND)}, not {kind!r}")
    options = {**spec.options, "mode": mode, "prompt": STEP_PROMPTS_BY_KIND[kind][mode]}
    if budget is not None:
        if budget < 1:
            raise ValueError("step discriminator: the reasoning budget must be >= 1 token")
        options.pop("max_new_tokens", None)
        options["budget"] = int(budget)
    backend = _MODE_BY_NAME.get(spec.backend, spec.backend).format(mode=mode)
    return spec.model_copy(update={"backend": backend, "options": options})


def step_discriminator(spec: ModelSpec, *, mode: str = "logit", budget: int | None = None, kind: str = "cte",
                       registry: Any = None, **overrides: Any) -> Any:
    """A discriminator for the process reward built from the pair's discriminator `spec` (see `step_spec`), through
    the discriminator registry (`registry`: default every registered backend; a test may pass its own).
    `overrides` go to the backend's factory (e.g. `loaded=` a LoadedModel, `client=` an HTTP client)."""
    if registry is None:
        from discriminators.registry_all import DISCRIMINATORS

        registry = DISCRIMINATORS
    s = step_spec(spec, mode=mode, budget=budget, kind=kind)
    return registry.create(s.backend, s, prompt=s.options["prompt"], **overrides)
