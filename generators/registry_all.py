"""Import this module to register every generator backend in `generators.base.GENERATORS`:
`transformers` (local checkpoint), `embedded` (SmolLM2-135M shipped with the package), `openai`
(OpenAI-compatible HTTP server). Heavy libraries (torch/transformers) load only when a backend is created."""

from __future__ import annotations

import generators.embedded  # registers "embedded"
import generators.hf  # registers "transformers"
import generators.openai  # noqa: F401  registers "openai"
from generators.base import GENERATORS

__all__ = ["GENERATORS"]
