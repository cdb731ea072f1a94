"""Service metrics in the Prometheus text exposition format (version 0.0.4), hand-written and thread-safe.

What it owns: `Counter`, `Gauge`, `Histogram` (labelled), a `MetricsRegistry` that renders them, and
`ServiceMetrics`, the set the service records: requests by endpoint/method/status, request latency,
per-stage plan latency, plans by status/policy, tokens and cost per model, overload rejections, in-flight plans.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

from core.model import Plan

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _labels(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(f'{extra[0]}="{extra[1]}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.label_names)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        super().__init__(name, help, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        k = self._key(labels)
        with self._lock:
            self._values[k] = self._values.get(k, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        k = self._key(labels)
        with self._lock:
            self._values[k] = self._values.get(k, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def set(self, value: float, **labels: str) -> None:
        k = self._key(labels)
        with self._lock:
            self._values[k] = float(value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Sequence[str] = (), buckets: Iterable[float] = DEFAULT_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._data: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # key -> (bucket counts, [sum, count])

    def observe(self, value: float, **labels: str) -> None:
        k = self._key(labels)
        with self._lock:
            counts, sc = self._data.setdefault(k, ([0] * len(self.buckets), [0.0, 0.0]))
            for i, b in enumerate(self.buckets):
                if value <= b:
                    counts[i] += 1
            sc[0] += value
            sc[1] += 1

    def count(self, **labels: str) -> int:
        with self._lock:
            d = self._data.get(self._key(labels))
            return int(d[1][1]) if d else 0

    def render(self) -> list[str]:
        out = self.header()
        with self._lock:
            items = sorted((k, (list(c), list(sc))) for k, (c, sc) in self._data.items())
        for k, (counts, (total, n)) in items:
            for b, c in zip(self.buckets, counts, strict=True):
                out.append(f"{self.name}_bucket{_labels(self.label_names, k, ('le', _fmt(b)))} {c}")
            out.append(f"{self.name}_bucket{_labels(self.label_names, k, ('le', '+Inf'))} {_fmt(n)}")
            out.append(f"{self.name}_sum{_labels(self.label_names, k)} {_fmt(total)}")
            out.append(f"{self.name}_count{_labels(self.label_names, k)} {_fmt(n)}")
        return out


class MetricsRegistry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics:
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    """Everything the service exports at GET /metrics."""

    def __init__(self) -> None:
        r = self.registry = MetricsRegistry()
        self.requests = r.add(Counter("sqlarbiter_http_requests_total", "HTTP requests by endpoint, method and status",
                                      ("endpoint", "method", "status")))
        self.request_seconds = r.add(Histogram("sqlarbiter_http_request_duration_seconds",
                                               "HTTP request latency by endpoint", ("endpoint",)))
        self.stage_seconds = r.add(Histogram("sqlarbiter_plan_stage_duration_seconds",
                                             "Plan pipeline stage latency (route, generate, normalize, execute, "
                                             "discriminate, select, total)", ("stage",)))
        self.plans = r.add(Counter("sqlarbiter_plans_total", "Plans computed, by status and policy", ("status", "policy")))
        self.candidates = r.add(Counter("sqlarbiter_candidates_total", "Candidates by execution outcome", ("outcome",)))
        self.tokens = r.add(Counter("sqlarbiter_tokens_total", "Model tokens by model, role and kind (prompt|completion)",
                                    ("model", "role", "kind")))
        self.cost = r.add(Counter("sqlarbiter_cost_total", "Model cost (configured units) by model and role",
                                  ("model", "role")))
        self.overload = r.add(Counter("sqlarbiter_overload_rejections_total", "Plans refused with 429 (queue full)"))
        self.inflight = r.add(Gauge("sqlarbiter_plans_in_flight", "Plans admitted (running or queued)"))
        self.feedback = r.add(Counter("sqlarbiter_feedback_total", "Feedback received, by label", ("label",)))

    def observe_plan(self, plan: Plan) -> None:
        self.plans.inc(status=plan.status, policy=plan.policy)
        for stage, ms in plan.timings_ms.items():
            self.stage_seconds.observe(ms / 1000.0, stage=stage)
        for sc in plan.candidates:
            if sc.candidate.rejected:
                outcome = "rejected"
            elif sc.execution is None:
                outcome = "not_executed"
            elif sc.execution.ok:
                outcome = "ok"
            else:
                outcome = str(sc.execution.error_kind or "error")
            self.candidates.inc(outcome=outcome)
        for u in plan.usage:
            self.tokens.inc(u.prompt_tokens, model=u.model, role=u.role, kind="prompt")
            self.tokens.inc(u.completion_tokens, model=u.model, role=u.role, kind="completion")
            self.cost.inc(u.cost, model=u.model, role=u.role)

    def render(self) -> str:
        return self.registry.render()
