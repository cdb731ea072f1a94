"""Backend errors shared by generators and discriminators.

The API maps `BackendUnavailable` (and its subclass `BackendTimeout`) to HTTP 503; `CheckpointError`
means a configured checkpoint path does not exist or does not load (a configuration problem).
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
