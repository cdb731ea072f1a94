"""The local-checkpoint backends that pick their scoring mode from the spec: `transformers` (a checkpoint
directory or .gguf at `spec.path`) and `embedded` (the embedded SmolLM2-135M default), each `cot` or `logit`
by `options.mode` (default cot)."""

from __future__ import annotations

from typing import Any

from core.runtime.embedded import EMBEDDED_NAME, embedded_checkpoint, embedded_dtype
from discriminators.base import DISCRIMINATORS, LocalOptions, spec_mode
from discriminators.cot import cot
from discriminators.logit import logit


@DISCRIMINATORS.register("transformers", summary="`cot` or `logit` (options.mode) on a local checkpoint",
                         options=LocalOptions)
def transformers_backend(spec: Any = None, **kw: Any) -> Any:
    """`cot` or `logit` on a local checkpoint, by `options.mode`."""
    return (cot if spec_mode(spec) == "cot" else logit)(spec, **kw)


@DISCRIMINATORS.register("embedded", summary="`cot` or `logit` (options.mode) on the embedded SmolLM2-135M",
                         options=LocalOptions)
def embedded(spec: Any = None, **kw: Any) -> Any:
    """`cot` (or `logit` by `options.mode`) on the embedded SmolLM2-135M, in `embedded_dtype`."""
    kw.setdefault("path", str(embedded_checkpoint()))
    kw.setdefault("dtype", embedded_dtype(getattr(spec, "options", None)))
    if spec is None:
        kw.setdefault("name", EMBEDDED_NAME)
    return transformers_backend(spec, **kw)
