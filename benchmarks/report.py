"""Benchmark reporting: machine description, tables, and machine-tagged sections appended to BENCHMARKS.md.

Owns the format every benchmark of this package writes: a `## title` section with the date, the machine (CPU model
and cores, RAM, GPU or "no GPU", torch/transformers versions, load average at the end of the run: other work on a
shared machine skews timings), the exact command, a markdown table and notes. Sections are appended with ONE
append-mode write, never rewriting what others wrote. `SQLARBITER_BENCHMARKS_MD` overrides the file (tests point it
at a temp file); `SQLARBITER_BENCH_NO_APPEND=1` disables appending.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from core.settings import REPO_ROOT, env, env_path


def benchmarks_md() -> Path:
    return env_path("SQLARBITER_BENCHMARKS_MD") or REPO_ROOT / "BENCHMARKS.md"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """What ran the benchmark: CPU, cores, RAM, GPU, library versions, load average."""
    info: dict = {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "mem_gb": _mem_gb(),
        "gpu": None,
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_mem_gb"] = torch.cuda.get_device_properties(0).total_memory / 1024**3
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    return info


def machine_line(info: dict | None = None) -> str:
    i = info or machine_info()
    arch = {"x86_64": "x86-64", "aarch64": "arm64"}.get(i["arch"], i["arch"])
    mem = f"{i['mem_gb']:.0f} GB" if i.get("mem_gb") else "? GB"
    gpu = f"GPU {i['gpu']} ({i.get('gpu_mem_gb', 0):.0f} GiB, CUDA {i.get('cuda')})" if i.get("gpu") else "no GPU"
    parts = [f"{i['cores']}-core {arch} CPU ({i['cpu']})", mem, gpu]
    libs = ", ".join(f"{k} {i[k]}" for k in ("torch", "transformers") if i.get(k))
    if i.get("torch_threads"):
        libs += f", {i['torch_threads']} torch thread(s)"
    if libs:
        parts.append(libs)
    if i.get("loadavg"):
        parts.append("load avg {:.1f}/{:.1f}/{:.1f} (1/5/15 min) at the end of the run".format(*i["loadavg"]))
    return ", ".join(parts)


def fmt(x, digits: int = 3) -> str:
    """A number with `digits` significant digits (no scientific notation for ordinary magnitudes)."""
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    if x != x:  # nan
        return "nan"
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 10 ** digits:
        return f"{x:,.0f}"
    if ax < 1e-3:
        return f"{x:.2e}"
    import math

    decimals = max(0, digits - 1 - int(math.floor(math.log10(ax))))
    return f"{x:.{decimals}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[str(c) for c in headers]] + [[fmt(c) if not isinstance(c, str) else c for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def format_section(title: str, command: str, body: str, *, notes: Sequence[str] = (), info: dict | None = None,
                   date: str | None = None) -> str:
    date = date or _dt.date.today().isoformat()
    out = [f"\n## {title}\n", f"- date: {date}", f"- machine: {machine_line(info)}", f"- command: `{command}`"]
    out += [f"- {n}" for n in notes]
    out += ["", body.rstrip(), ""]
    return "\n".join(out) + "\n"


def append_section(title: str, command: str, body: str, *, notes: Sequence[str] = (), info: dict | None = None,
                   path: Path | None = None) -> Path | None:
    """Append one section to BENCHMARKS.md in a single write; returns the path (None when disabled)."""
    if env("SQLARBITER_BENCH_NO_APPEND") == "1":
        return None
    path = path or benchmarks_md()
    text = format_section(title, command, body, notes=notes, info=info)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    print(f"appended '{title}' to {path}")
    return path
