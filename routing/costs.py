"""Cost model for published text-to-SQL systems acting as generators in routing studies.

Owns: reading the cost configuration (`routing/system_costs.toml`, overridable by the
`SQLARBITER_SYSTEM_COSTS` environment variable or an explicit path) and turning it into a documented
cost per question for each system:

- API systems: assumed prompt/completion tokens per question for the system's method x public list price.
- Self-hosted systems: 2 x parameters FLOPs per token x assumed tokens x a stated $/FLOP.
- An optional auxiliary self-hosted stage (schema linker, preliminary-SQL model) adds its own cost.

All token counts are assumptions (see docs/routing.md); the point is the order of magnitude between
methods, which is what a router trades against quality.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

COST_CONFIG_FORMAT = 1
DEFAULT_COST_CONFIG = Path(__file__).with_name("system_costs.toml")


class CostConfigError(ValueError):
    """The cost configuration is malformed or lacks an entry that was asked for."""


class SystemCost(BaseModel):
    """One system's cost per question and how it was derived."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["api", "self-hosted"]
    model: str  # api model name, or "<params>B self-hosted"
    method: str
    prompt_tokens: int
    completion_tokens: int
    usd_per_question: float
    formula: str  # the arithmetic, human-readable
    note: str = ""


def cost_config_path(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path).expanduser()
    from core.settings import env_path

    return env_path("SQLARBITER_SYSTEM_COSTS") or DEFAULT_COST_CONFIG


def load_cost_config(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read and validate the TOML cost configuration."""
    p = cost_config_path(path)
    if not p.is_file():
        raise CostConfigError(f"cost configuration {p} does not exist")
    try:
        cfg = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise CostConfigError(f"cost configuration {p} is not valid TOML: {e}") from None
    if cfg.get("format_version") != COST_CONFIG_FORMAT:
        raise CostConfigError(
            f"cost configuration {p} has format_version {cfg.get('format_version')!r}; expected {COST_CONFIG_FORMAT}"
        )
    for key in ("compute", "prices", "methods", "systems"):
        if key not in cfg:
            raise CostConfigError(f"cost configuration {p} lacks the [{key}] table")
    return cfg


def _self_hosted(cfg: dict[str, Any], params_b: float, method: str) -> tuple[float, int, int]:
    m = _method(cfg, method)
    flops = float(cfg["compute"]["flops_per_param_per_token"]) * params_b * 1e9 * (m["prompt_tokens"] + m["completion_tokens"])
    return flops * float(cfg["compute"]["usd_per_flop"]), int(m["prompt_tokens"]), int(m["completion_tokens"])


def _method(cfg: dict[str, Any], method: str) -> dict[str, Any]:
    try:
        return cfg["methods"][method]
    except KeyError:
        raise CostConfigError(f"unknown method {method!r}; known: {', '.join(sorted(cfg['methods']))}") from None


def system_cost(name: str, cfg: dict[str, Any] | None = None) -> SystemCost:
    """The cost per question of one configured system."""
    cfg = cfg or load_cost_config()
    try:
        s = cfg["systems"][name]
    except KeyError:
        raise CostConfigError(
            f"system {name!r} has no cost entry; add [systems.\"{name}\"] to {cost_config_path()}"
        ) from None
    method = s.get("method")
    if not method:
        raise CostConfigError(f"system {name!r} has no method")
    m = _method(cfg, method)
    if "api_model" in s:
        try:
            price = cfg["prices"][s["api_model"]]
        except KeyError:
            raise CostConfigError(f"system {name!r}: unknown api_model {s['api_model']!r}") from None
        pt, ct = int(m["prompt_tokens"]), int(m["completion_tokens"])
        usd = pt / 1000 * float(price["input"]) + ct / 1000 * float(price["output"])
        kind, model = "api", s["api_model"]
        formula = f"{pt}/1k x ${price['input']} + {ct}/1k x ${price['output']}"
    elif "params_b" in s:
        usd, pt, ct = _self_hosted(cfg, float(s["params_b"]), method)
        kind, model = "self-hosted", f"{s['params_b']}B self-hosted"
        c = cfg["compute"]
        formula = f"{c['flops_per_param_per_token']} x {s['params_b']}e9 x {pt + ct} tok x ${c['usd_per_flop']}/FLOP"
    else:
        raise CostConfigError(f"system {name!r} needs either api_model or params_b")
    if "aux_params_b" in s:
        aux_usd, apt, act = _self_hosted(cfg, float(s["aux_params_b"]), s.get("aux_method", "seq2seq-beam8"))
        usd += aux_usd
        formula += f" + aux {s['aux_params_b']}B self-hosted (${aux_usd:.2e})"
    return SystemCost(name=name, kind=kind, model=model, method=method, prompt_tokens=pt, completion_tokens=ct,
                      usd_per_question=usd, formula=formula, note=s.get("note", ""))


def system_costs(names: Iterable[str] | None = None, path: str | os.PathLike | None = None) -> dict[str, SystemCost]:
    """Costs for the given systems (default: every configured system), by name."""
    cfg = load_cost_config(path)
    names = list(names) if names is not None else sorted(cfg["systems"])
    return {n: system_cost(n, cfg) for n in names}


def cost_table_markdown(costs: dict[str, SystemCost]) -> str:
    """The assumptions table (docs/routing.md), most expensive first."""
    lines = ["| system | kind | model | method | prompt tok | completion tok | USD / question |",
             "|---|---|---|---|---:|---:|---:|"]
    for c in sorted(costs.values(), key=lambda c: -c.usd_per_question):
        lines.append(f"| {c.name} | {c.kind} | {c.model} | {c.method} | {c.prompt_tokens} | {c.completion_tokens} "
                     f"| {c.usd_per_question:.2e} |")
    return "\n".join(lines)
