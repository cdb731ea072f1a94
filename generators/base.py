"""The generator protocol and registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from core.registry import Registry
from core.specs import BackendInfo


@dataclass
class SamplingParams:
    n: int = 5
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = 0


@dataclass
class GenerationRequest:
    """Everything a generator needs to write SQL for one question."""

    question: str
    schema: str  # serialized schema (CREATE TABLE style), already within its token budget
    evidence: str | None = None
    few_shot: list[tuple[str, str]] = field(default_factory=list)  # (question, sql) examples
    dialect: str = "sqlite"
    params: SamplingParams = field(default_factory=SamplingParams)
    grammar: str | None = None  # EBNF of the answer (generators.grammar.sql_grammar, wrap="fence"); used by
    # generators whose `constrained` setting is on, ignored by the others


@dataclass
class GenerationResult:
    """N raw completions, the SQL extracted from each, and the token usage."""

    sqls: list[str]  # extracted SQL, one per sample ("" when nothing could be extracted)
    raw: list[str]  # raw completions
    model: str  # checkpoint / model name that produced them
    prompt_tokens: int = 0
    completion_tokens: int = 0
    constrained: bool = False  # sampled under the request's grammar
    notes: list[str] = field(default_factory=list)  # e.g. a server refused the grammar: sampled unconstrained
    # per sample: the sequence log-probability (sum of token logprobs) and its token count; None where the
    # backend gave none (an OpenAI-compatible server that returns no logprobs: `logprobs_missing` is then True)
    logprobs: list[float | None] = field(default_factory=list)
    logprob_tokens: list[int | None] = field(default_factory=list)
    logprobs_missing: bool = False


def sequence_logprob(token_logprobs) -> tuple[float | None, int | None]:
    """(sum, count) of a sample's token logprobs; (None, None) when there are none (None entries are skipped:
    a server may report null for a token it could not score)."""
    vals = [float(x) for x in (token_logprobs or []) if x is not None]
    if not vals:
        return None, None
    return sum(vals), len(vals)


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> GenerationResult: ...


GENERATORS: Registry[Generator, BackendInfo] = Registry("generator", BackendInfo)
