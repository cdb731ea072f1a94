"""The `plan` command: plan one question and print the plan.

    sqlarbiter plan "How many singers are older than 30?" --db demo [--data DIR_OR_FILE ...] [--config F] [--n N]
                    [--policy P] [--pair NAME | --router NAME] [--execute] [--json]

`--config`, `--data` and `--db` are the options every command shares (`cli.options`).

Exit status: 0 a plan with a chosen, executable SQL; 1 no usable SQL (or a backend/deadline failure);
2 bad usage (invalid config, unknown database, policy, pair); 3 a chosen SQL whose confidence is below
--abstain-below (status low_confidence). `--policy` choices come from the policy registry
(`planner.select.policy_names`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from typing import Any

from cli.options import add_database_options, config_or_report


def add_to(sub: argparse._SubParsersAction) -> None:
    from planner.select import policy_names  # the registry (cheap: no model code)

    p = sub.add_parser("plan", help="plan one question and print the chosen SQL and how it was chosen",
                       description="Generate candidates, check them in the sandbox, judge them with the "
                       "discriminator, choose one. Prints the chosen SQL, why, each candidate with its execution "
                       "verdict and score, the timings and the cost (or the Plan as JSON with --json).")
    p.add_argument("question", help="the natural-language question")
    add_database_options(p, db="required")
    p.add_argument("--evidence", help="external knowledge / hints (BIRD style)")
    p.add_argument("--n", type=int, help="candidates to generate (default from config)")
    p.add_argument("--policy", choices=policy_names(), help="selection policy (default from config)")
    p.add_argument("--abstain-below", type=float, default=None,
                   help="status low_confidence when the plan's confidence is below this (0-1; default from config)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pair", help="force this generator/discriminator pair")
    g.add_argument("--router", help="route with this router instead of the configured one")
    p.add_argument("--execute", action="store_true", help="also run the chosen SQL and show a preview of its rows")
    p.add_argument("--deadline", type=float, metavar="S",
                   help="deadline in seconds for the whole plan (default: none; the service uses limits.deadline_s)")
    p.add_argument("--json", action="store_true", help="print the Plan as JSON")
    p.add_argument("--no-store", action="store_true", help="do not save the plan to the plan store")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from core.errors import BackendError
    from core.model import Question
    from planner.pipeline import DeadlineExceeded, Planner, PlanRequestError
    from sqlbox.databases import UnknownDatabase
    from sqlbox.privileges import PrivilegeError, RoleCheckError

    cfg = config_or_report(args)
    if cfg is None:
        return 2
    store = None
    if not args.no_store:
        try:
            from planner.plans import PlanStore

            store = PlanStore(cfg.store_url)
        except Exception as e:  # noqa: BLE001 - planning matters more than storing
            print(f"warning: plan store unavailable, the plan will not be stored: {e}", file=sys.stderr)
    try:
        planner = Planner(cfg, engine=store.engine if store else None, start_sandbox=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        plan = planner.plan(Question(text=args.question, db_id=args.db, evidence=args.evidence), n=args.n,
                            policy=args.policy, pair=args.pair, router=args.router, execute=args.execute,
                            abstain_below=args.abstain_below,
                            deadline_s=args.deadline if args.deadline is not None else math.inf)
    except (UnknownDatabase, PlanRequestError, PrivilegeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (BackendError, DeadlineExceeded, RoleCheckError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        planner.close()
    if store is not None:
        try:
            store.save(plan)
        except Exception as e:  # noqa: BLE001 - storing is best effort: the plan was printed, whatever the store raises
            print(f"warning: plan not stored: {e}", file=sys.stderr)
        finally:
            store.close()
    if args.json:
        print(plan.model_dump_json(indent=2))
    else:
        print(format_plan(plan))
    return 0 if plan.status == "ok" else (3 if plan.status == "low_confidence" else 1)


def _short(s: str | None, width: int = 100) -> str:
    s = " ".join((s or "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


def format_plan(plan) -> str:
    """A readable rendering of a Plan (what `sqlarbiter plan` prints)."""
    out: list[str] = []
    q = plan.question
    out.append(f"Question : {q.text}")
    out.append(f"Database : {q.db_id}")
    r = plan.route
    if r is not None:
        steps = " -> ".join(r.steps) if r.steps else r.pair
        extra = []
        if r.predicted_quality is not None:
            extra.append(f"predicted quality {r.predicted_quality:.3f}")
        if r.predicted_cost is not None:
            extra.append(f"predicted cost {r.predicted_cost:.6f}")
        out.append(f"Route    : {r.router} -> {steps} (generator {r.generator}, discriminator {r.discriminator})"
                   + (f"; {', '.join(extra)}" if extra else "") + (f" [{r.reason}]" if r.reason else ""))
    out.append(f"Policy   : {plan.policy}")
    if plan.linking is not None:
        lk = plan.linking
        out.append(f"Linked   : {len(lk.tables)} tables, {sum(map(len, lk.columns.values()))} columns, "
                   f"{lk.prompt_tokens}/{lk.full_tokens} prompt tokens ({lk.mode}, {lk.latency_ms:.0f} ms): "
                   + ", ".join(f"{t}({', '.join(lk.columns.get(t, []))})" for t in lk.tables))
    out.append(f"Status   : {plan.status}")
    out.extend(f"WARNING  : {w}" for w in plan.warnings)
    if plan.confidence is not None:
        out.append(f"Confidence: {plan.confidence:.3f}")
    out.append("")
    if plan.chosen_sql is not None:
        out.append("Chosen SQL:")
        out.append(textwrap.indent(plan.chosen_sql.strip(), "    "))
    else:
        out.append("Chosen SQL: none")
    out.append(f"Why      : {plan.reason}")
    if plan.errors:
        out.append("Errors:")
        out.extend(f"  - {e}" for e in plan.errors)
    out.append("")
    out.append(f"Candidates ({len(plan.candidates)}):")
    for i, sc in enumerate(plan.candidates):
        c, ex = sc.candidate, sc.execution
        mark = "*" if i == plan.chosen else " "
        if c.rejected:
            verdict = f"rejected: {_short(c.rejected, 60)}"
        elif ex is None:
            verdict = "not executed"
        elif ex.ok:
            verdict = f"ok, {ex.row_count}{'+' if ex.truncated else ''} rows, {ex.elapsed_ms:.1f} ms"
        else:
            verdict = f"{ex.error_kind}: {_short(ex.error, 60)}"
        score = f"score {sc.scores[-1].score:.3f}" if sc.scores else "unscored"
        if sc.scores and sc.scores[-1].parse_failure:
            score += " (fallback: no parseable verdict)"
        dup = f" x{c.duplicates}" if c.duplicates > 1 else ""
        out.append(f" {mark}[{i}] {score:<12} | {verdict}{dup} | {c.source}")
        out.append(f"       {_short(c.sql, 110)}")
    if plan.preview is not None and plan.preview.ok:
        out.append("")
        out.append(f"Preview ({plan.preview.row_count} rows{', truncated' if plan.preview.truncated else ''}):")
        out.append(_table(plan.preview.columns, plan.preview.rows))
    out.append("")
    out.append("Timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in plan.timings_ms.items()))
    if plan.usage:
        out.append("Usage:")
        for u in plan.usage:
            out.append(f"  {u.role:<13} {u.model:<24} prompt {u.prompt_tokens:>6}  completion {u.completion_tokens:>6}"
                       f"  calls {u.calls:>2}  cost {u.cost:.6f}")
    out.append(f"Total cost: {plan.total_cost:.6f}")
    out.append(f"Plan id  : {plan.id}")
    return "\n".join(out)


def _table(columns: list[str], rows: list[list[Any]], width: int = 30) -> str:
    cells = [[_short(str(c), width) for c in columns]] + [[_short(json.dumps(v) if not isinstance(v, str) else v, width)
                                                          for v in row] for row in rows]
    ws = [max(len(r[j]) for r in cells) for j in range(len(columns))] if columns else []
    lines = ["  " + " | ".join(c.ljust(w) for c, w in zip(cells[0], ws, strict=True))]
    lines.append("  " + "-+-".join("-" * w for w in ws))
    for r in cells[1:]:
        lines.append("  " + " | ".join(c.ljust(w) for c, w in zip(r, ws, strict=True)))
    return "\n".join(lines)
