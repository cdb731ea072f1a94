"""Import this module to register every discriminator backend in `discriminators.base.DISCRIMINATORS`.
Each backend module registers its own names, as the generator backends do:

| name            | module                     | what                                                       |
|-----------------|----------------------------|------------------------------------------------------------|
| `cot`           | `discriminators.cot`       | CoT soft score on a local checkpoint (`spec.path`)         |
| `logit`         | `discriminators.logit`     | Yes/No logit score on a local checkpoint (`spec.path`)     |
| `openai-cot`    | `discriminators.openai`    | CoT soft score over an OpenAI-compatible server            |
| `openai-logit`  | `discriminators.openai`    | Yes/No score over an OpenAI-compatible server              |
| `openai`        | `discriminators.openai`    | `openai-cot` or `openai-logit` by `options.mode`           |
| `transformers`  | `discriminators.local`     | `cot` or `logit` by `options.mode` (default cot)           |
| `embedded`      | `discriminators.local`     | `cot` (or `logit`) on the embedded SmolLM2-135M            |

Every factory takes a `core.specs.ModelSpec` (`DISCRIMINATORS.create(name, spec, **overrides)`).
`options.check: true` wraps the result in the check mode (`discriminators.check`: non-executable candidates
get the worst score without running the model). Other options: budget, fallback, prompt, ignore_eos,
batch_size, device, dtype (local); endpoint, timeout, max_retries, concurrency (HTTP). Heavy libraries
(torch/transformers) load only when a backend is created.
"""

from __future__ import annotations

import discriminators.cot  # registers "cot"
import discriminators.local  # registers "transformers", "embedded"
import discriminators.logit  # registers "logit"
import discriminators.openai  # noqa: F401  registers "openai-cot", "openai-logit", "openai"
from discriminators.base import DISCRIMINATORS, MODES

__all__ = ["DISCRIMINATORS", "MODES"]
