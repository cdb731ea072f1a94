"""Selective prediction metrics of plan confidence: risk-coverage, AURC, ECE, EX at fixed coverage.

Input per question: the confidence of a policy's chosen plan (None = nothing chosen: ranked last, counted
with confidence 0) and whether it was correct (EX). Sorting by confidence (highest first; ties keep the
question order), answering the top `c` share and abstaining on the rest gives
- the risk-coverage curve: risk (1 - EX of the answered) at every coverage k/n;
- AURC: the mean risk over the n coverage points (lower is better);
- EX at 100 / 90 / 80 / 50 % coverage (the top ceil(c*n) questions);
- ECE: 10 equal-width confidence bins, |accuracy - mean confidence| weighted by bin size, and the
  reliability table (`eval.metrics.reliability`);
- the ECE noise floor (`ece_noise_floor`): the mean ECE of a perfectly calibrated predictor with the same
  confidences (labels drawn as Bernoulli(confidence)), i.e. what sampling noise alone gives at this n. On a
  200-question pool it is about 0.03-0.04, so an ECE there is only resolved to a few hundredths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from eval.metrics import reliability

COVERAGES = (1.0, 0.9, 0.8, 0.5)


def ece_noise_floor(conf: Sequence[float], bins: int = 10, sims: int = 200, seed: int = 0) -> float | None:
    """Mean ECE (equal-width `bins`, as `eval.metrics.reliability`) over `sims` label draws y ~ Bernoulli(conf)."""
    import numpy as np

    c = np.clip(np.asarray(conf, dtype=float), 0.0, 1.0)
    if c.size == 0:
        return None
    b = np.minimum((c * bins).astype(int), bins - 1)
    y = np.random.default_rng(seed).random((sims, c.size)) < c
    ece = np.zeros(sims)
    for k in range(bins):
        m = b == k
        if m.any():
            ece += m.sum() / c.size * np.abs(y[:, m].mean(axis=1) - c[m].mean())
    return float(ece.mean())


def selective_metrics(conf: Sequence[float | None], correct: Sequence[bool]) -> dict:
    n = len(conf)
    if n == 0:
        return {"n": 0, "aurc": None, "ece": None, "ece_floor": None, "ex_at_coverage": {}, "curve": [],
                "reliability": []}
    c = [0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x) for x in conf]
    y = [bool(v) for v in correct]
    order = sorted(range(n), key=lambda i: (-c[i], i))
    curve = []
    hits = 0
    for k, i in enumerate(order, start=1):
        hits += y[i]
        curve.append((k / n, 1.0 - hits / k))
    ex_at = {}
    for cov in COVERAGES:
        k = max(1, math.ceil(cov * n - 1e-9))
        ex_at[f"{int(round(cov * 100))}"] = 100.0 * sum(y[i] for i in order[:k]) / k
    rel = reliability(c, y)
    return {"n": n, "aurc": sum(r for _, r in curve) / n, "ece": rel["ece"], "ece_floor": ece_noise_floor(c),
            "ex_at_coverage": ex_at,
            "mean_confidence": sum(c) / n, "curve": curve, "reliability": rel["bins"]}


def selective_report(results: Sequence[dict]) -> dict:
    """Per policy (from `confidence_by_policy` and `ex_by_policy` of results lines), the metrics above."""
    pols: list[str] = []
    for r in results:
        for p in r.get("confidence_by_policy") or {}:
            if p not in pols:
                pols.append(p)
    out = {}
    for p in pols:
        rows = [r for r in results if p in (r.get("confidence_by_policy") or {}) and p in (r.get("ex_by_policy") or {})]
        out[p] = selective_metrics([r["confidence_by_policy"][p] for r in rows], [r["ex_by_policy"][p] for r in rows])
    return out


def to_markdown(sel: dict) -> list[str]:
    if not sel:
        return []
    lines = ["", "## Plan confidence: selective prediction", "",
             "| policy | n | AURC | ECE | ECE noise floor | EX@100% | EX@90% | EX@80% | EX@50% |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p, m in sel.items():
        e = m["ex_at_coverage"]
        f = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
        lines.append(f"| {p} | {m['n']} | {f(m['aurc'])} | {f(m['ece'])} | {f(m.get('ece_floor'))} | " + " | ".join(
            "-" if e.get(k) is None else f"{e[k]:.1f}" for k in ("100", "90", "80", "50")) + " |")
    lines += ["", "ECE noise floor: the mean ECE of a perfectly calibrated predictor with the same confidences "
              "(labels drawn from them); an ECE near it is within sampling noise."]
    lines += ["", "![risk_coverage.png](risk_coverage.png)", "", "![confidence_reliability.png](confidence_reliability.png)"]
    return lines
