"""Admission control: a bounded worker pool per kind of work, refusing what it cannot start soon with
`Overloaded` -> 429 with Retry-After. POST /plan (and /plan/stream): `limits.concurrency` plans run at once,
`limits.queue_size` more wait. POST /check: `limits.check_concurrency` checks at once (default: one per sandbox
worker), `limits.check_queue_size` more wait (default: `limits.queue_size`), so a burst of runaway SQL is
answered 429 instead of every check queueing behind it."""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Overloaded(Exception):
    def __init__(self, retry_after: int, what: str = "plans"):
        super().__init__(f"too many {what} in flight; retry after {retry_after}s")
        self.retry_after = retry_after
        self.what = what


class Admission:
    """A bounded worker pool: `concurrency` jobs run at once, `queue_size` more wait, the rest are refused.
    `what` names the jobs (plural) in the 429's message and the worker threads."""

    def __init__(self, concurrency: int, queue_size: int, what: str = "plans"):
        self.concurrency = concurrency
        self.capacity = concurrency + queue_size
        self.what = what
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency,
                                                              thread_name_prefix=what.rstrip("s") or "job")
        self._n = 0
        self._lock = threading.Lock()
        self._avg_s: float | None = None  # moving average of plan durations, for Retry-After

    @property
    def in_flight(self) -> int:
        return self._n

    def retry_after(self) -> int:
        avg = self._avg_s if self._avg_s is not None else 1.0
        waiting = max(0, self._n - self.concurrency) + 1
        return max(1, math.ceil(avg * waiting / self.concurrency))

    def submit(self, fn: Callable[[float], T]) -> concurrent.futures.Future[T]:
        """Run fn(admitted_at) on a worker, or raise Overloaded. The slot frees when fn really returns."""
        with self._lock:
            if self._n >= self.capacity:
                raise Overloaded(self.retry_after(), self.what)
            self._n += 1
        admitted = time.monotonic()

        def run() -> T:
            t = time.monotonic()
            try:
                return fn(admitted)
            finally:
                d = time.monotonic() - t
                with self._lock:
                    self._avg_s = d if self._avg_s is None else 0.8 * self._avg_s + 0.2 * d

        try:
            fut = self.executor.submit(run)
        except BaseException:
            self._release(None)
            raise
        fut.add_done_callback(self._release)
        return fut

    def _release(self, _fut: Any) -> None:
        with self._lock:
            self._n -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
