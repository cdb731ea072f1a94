"""The one admitted-plan runner: what `POST /plan` and `POST /plan/stream` both run for a request that passed
`Planner.validate` (checked in the endpoint, before admission: 422/404 never take a queue slot).

`submit(state, request, progress=None)` admits the plan on the plan pool (`api.admission`; `Overloaded` ->
429 before anything runs) and returns its future. The deadline counts from admission: the worker plans with
what is left of it after the queue (`DeadlineExceeded("queue")` when nothing is), and the plan is stored
before the future resolves, so the client never hears of a plan that `GET /plans/{id}` does not know.
`wait_s(request)` is how long an endpoint waits for the future: the deadline plus a small grace.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from api.state import AppState
from core.model import Plan
from planner.pipeline import DeadlineExceeded
from planner.request import ValidatedRequest


def submit(state: AppState, request: ValidatedRequest,
           progress: Callable[[dict[str, Any]], None] | None = None) -> Future[Plan]:
    """Admit `request` and plan it on the plan pool (see the module docstring)."""
    planner, store = state.planner, state.store
    deadline = request.deadline_s

    def work(admitted: float) -> Plan:
        left = deadline - (time.monotonic() - admitted)
        if left <= 0:
            raise DeadlineExceeded("queue", time.monotonic() - admitted, deadline)
        p = planner.run(dataclasses.replace(request, deadline_s=left), progress=progress)
        store.save(p)  # committed before the client hears of it
        return p

    fut = state.admission.submit(work)
    state.metrics.inflight.set(state.admission.in_flight)
    return fut


def wait_s(request: ValidatedRequest) -> float:
    """How long an endpoint waits for the plan: its deadline plus a grace of 5 % (at least 1 s)."""
    return request.deadline_s + max(1.0, 0.05 * request.deadline_s)
