"""PNG plots of eval reports (matplotlib, Agg backend): EX by difficulty per policy, the reliability diagram of a
discriminator's soft scores, and the risk-coverage curve and reliability diagram of plan confidence."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from eval.metrics import order_levels


def plot_ex_by_difficulty(table: dict[str, dict], path: str | os.PathLike, title: str = "EX by difficulty") -> Path:
    """`table`: series name (policy) -> {difficulty: {"n", "ex"}}. Grouped bars, one group per difficulty."""
    levels = order_levels({lv for v in table.values() for lv in v})
    series = list(table)
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(levels) * max(1, len(series)) ** 0.5), 4))
    for k, name in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(levels))]
        ys = [(table[name].get(lv) or {}).get("ex") or 0.0 for lv in levels]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels([f"{lv}\n(n={next((table[s][lv]['n'] for s in series if lv in table[s]), 0)})" for lv in levels])
    ax.set_ylabel("EX (%)")
    ax.set_ylim(0, 115)  # headroom for the legend above the 100% line
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(len(series), 6), loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_reliability(bins: list[dict], path: str | os.PathLike, title: str | None = None) -> Path:
    """Reliability diagram: accuracy per score bin against the diagonal, bin counts underneath."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"] if bins else 0.1
    acc = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    ax.bar(centres, acc, width * 0.9, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_ylabel("fraction correct")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability of soft scores" + (f" ({title})" if title else ""))
    ax.legend(fontsize=8)
    ax2.bar(centres, [b["count"] for b in bins], width * 0.9, color="gray")
    ax2.set_xlabel("soft score")
    ax2.set_ylabel("candidates")
    return save_figure(fig, path)


def plot_risk_coverage(sel: dict, path: str | os.PathLike) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for p, m in sel.items():
        if m["curve"]:
            xs, ys = zip(*m["curve"], strict=True)
            ax.plot(xs, [100 * v for v in ys], label=f"{p} (AURC {m['aurc']:.3f})")
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("risk (% wrong among answered)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Risk-coverage of plan confidence")
    return save_figure(fig, path)


def plot_confidence_reliability(sel: dict, path: str | os.PathLike) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for p, m in sel.items():
        pts = [(b["mean_score"], b["accuracy"]) for b in m["reliability"] if b["count"]]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-", label=f"{p} (ECE {m['ece']:.3f})")
    ax.set_xlabel("plan confidence")
    ax.set_ylabel("EX among plans in the bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Reliability of plan confidence")
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out, write the PNG (110 dpi, its folder created) and close the figure; every eval plot ends here."""
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
