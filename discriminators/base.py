"""The discriminator protocol and registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from core.model import ExecutionResult, Score
from core.registry import Registry
from core.runtime.openai_http import HTTPOptions
from core.specs import BackendInfo, options_of


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
    # the time budget: a `time.monotonic()` instant where reasoning stops and the verdict is forced (None: only the
    # token budget bounds it); the pipeline derives it from the plan's deadline and `limits.discriminate_s`
    deadline: float | None = None


@runtime_checkable
class Discriminator(Protocol):
    name: str

    def score(self, request: DiscriminationRequest) -> list[Score]:
        """One Score per SQL, same order."""
        ...


DISCRIMINATORS: Registry[Discriminator, BackendInfo] = Registry("discriminator", BackendInfo)


@dataclass(frozen=True)
class ScoringOptions:
    """The scoring `options` every discriminator backend shares, local or over HTTP. Unset (None): the backend's or
    the scoring profile's default (`discriminators.cot.PROFILES`)."""

    mode: Literal["cot", "logit"] | None = None  # which scorer
    check: bool = False  # wrap in the check mode (non-executable candidates get the worst score)
    profile: str | None = None  # "default" | "paper"
    budget: int | None = None  # reasoning tokens (alias max_new_tokens)
    max_new_tokens: int | None = None
    fallback: float | None = None
    prompt: str | None = None
    chat_template: bool | None = None
    force: bool | None = None
    early_stop: bool | None = None
    scoring: Literal["full", "normalized"] | None = None
    ignore_eos: bool | None = None


@dataclass(frozen=True)
class LocalOptions(ScoringOptions):
    """`options` of the local-checkpoint discriminators (`cot`, `logit`, `transformers`, `embedded`): the shared
    scoring options plus the local runtime's."""

    batch_size: int | None = None
    kv_cache: str | None = None
    device: str | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class HTTPDiscriminatorOptions(ScoringOptions, HTTPOptions):
    """`options` of the discriminators over an OpenAI-compatible server (`openai`, `openai-cot`, `openai-logit`): the
    client's, the shared scoring options, and the endpoint's."""

    endpoint: Literal["chat", "completions"] = "chat"
    tokenizer: str | None = None  # completions endpoint: the model's chat template from this tokenizer
    top_logprobs: int | None = None
    seed: int | None = None


MODES = ("cot", "logit")


def spec_mode(spec: Any, default: str = "cot") -> str:
    """The scoring mode a spec asks for (`options.mode`: cot | logit)."""
    mode = (options_of(LocalOptions, spec).mode or default).lower()
    if mode not in MODES:
        raise ValueError(f"discriminator {getattr(spec, 'name', '?')!r}: options.mode must be one of {MODES}, not {mode!r}")
    return mode
