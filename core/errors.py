"""Backend errors shared by generators and discriminators.

The API maps `BackendUnavailable` (and its subclass `BackendTimeout`) to HTTP 503; `CheckpointError`
means a configured checkpoint path does not exist or does not load (a configuration problem).
`PlanRequestError` is the one error a plan request's check raises (HTTP 422).
"""

from __future__ import annotations


class BackendError(RuntimeError):
    """A model backend failed (base class)."""


class BackendUnavailable(BackendError):
    """The backend cannot serve right now (server down, connection refused, retries exhausted on 429/5xx)."""


class BackendTimeout(BackendUnavailable):
    """The backend did not answer within the configured timeout (after retries)."""


class CheckpointError(BackendError):
    """A checkpoint path does not exist, is not a checkpoint, or failed to load."""


class PlanRequestError(ValueError):
    """A plan request breaks a rule of the configuration: a blank or too long question, `n` out of range, an
    unknown policy/pair/router or one the configuration cannot serve, both `pair` and `router`, a deadline
    past `limits.max_deadline_s`. The one request error type: `planner.pipeline.Planner.validate` raises it,
    the API answers it with 422 (`api.errors`), the CLI with exit 2. The message starts with the field."""
