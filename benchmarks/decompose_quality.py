"""Route-and-Reason's decomposer on Spider dev (issue 29, "Must show", first bullet): how often its list is valid, how
many steps it writes by Spider hardness, and the EX of the composed chains against the whole-question path with the
same model.

    python -m benchmarks.decompose_quality [--config trim.toml] [--data DIR] [--questions 100] [--seed 0]
                                           [--tier strong|cheap|both] [--shots 3] [--out runs/decompose_quality]
                                           [--limit K] [--resume]

Questions: the fixed-seed Spider dev sample of the live routing study (`eval.routing_live.sample_questions`, the same
seed gives the same questions). For each question and tier (a pair of the config: `trim.toml`'s strong pair is the
embedded SmolLM2-135M, schema-constrained, with 3 retrieved examples written as step chains; its cheap pair the same
model unconstrained and zero-shot):

1. the decomposer (`planner.decompose.decompose`) is one call of the tier's generator, with `--shots` retrieved Spider
   train examples (`Planner.few_shot`) as decompositions of their gold chains (`decomposition_examples`; the cheap
   tier gets them too: the list format is not learnt zero-shot); a constrained generator decodes under
   `decomposition_grammar`;
2. a valid list is composed (`planner.decompose.compose`): every subtask's body written by the same tier after the
   sub-question as the step's comment;
3. the whole-question path: the same tier writes the whole chain without a decomposition
   (`planner.stepwise.run_chain` with the cheap-only policy `routing.trim.ThresholdPolicy(0.0)`, both sides = the
   tier);
4. EX by the Spider evaluator (`eval.exec_match.spider_verdicts`), with the chain also executable in the project's
   sandbox (`eval.routing_live.StepStudy.judge`).

Reported per tier: the share of valid decompositions and the refusal reasons by kind; steps per question by Spider
hardness (`eval.hardness.spider_hardness`) beside the gold chains' steps (`sqlbox.steps.to_chain`); EX of the composed
chains (a refused list counts as no chain), of R2 with its fallback (a refused list or an unusable composed chain
takes the whole-question path), and of the whole-question path, on all questions, on the questions with a valid
list, and by hardness; tokens per question. Written: outcomes.jsonl, report.json, report.md under `--out`.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

HARDNESS = ("easy", "medium", "hard", "extra")


def _gold_steps(gold: str) -> int | None:
    from sqlbox.steps import StepParseError, to_chain

    try:
        return len(to_chain(gold).steps)
    except (StepParseError, ValueError):
        return None


def run_question(study: Any, planner: Any, q: Any, tier: Any, *, shots: int, step_tokens: int) -> dict[str, Any]:
    """One question on one tier: decompose, compose, the whole-question path; verdicts and tokens."""
    from core.model import Question
    from planner.decompose import DecompositionError, compose, decompose, decomposition_examples
    from planner.stepwise import run_chain
    from routing.trim import ThresholdPolicy, TrimSettings

    question = Question(text=q.question, db_id=q.db_id, id=q.key)
    dialect = planner.dialect(q.db_id)
    schema = planner.registry.schema(q.db_id)
    prompt = tier.request.schema
    examples = decomposition_examples(planner.few_shot(question, None, k=shots), dialect)
    row: dict[str, Any] = {"key": q.key, "db_id": q.db_id, "hardness": q.hardness, "tier": tier.pair,
                           "gold_steps": _gold_steps(q.gold), "examples": len(examples)}
    t0 = time.monotonic()
    dec = None
    try:
        dec = decompose(tier.backend, q.question, prompt, schema, examples, dialect)
        row["decomposition"] = {"valid": True, **dec.record()}
    except DecompositionError as e:
        row["decomposition"] = {"valid": False, "kind": e.kind, "reason": e.reason, "raw": e.raw,
                                "prompt_tokens": e.prompt_tokens, "completion_tokens": e.completion_tokens,
                                "confidence": e.confidence}
    row["decompose_s"] = round(time.monotonic() - t0, 2)
    composed_text = None
    if dec is not None:
        t1 = time.monotonic()
        c = compose(dec, [tier] * len(dec), schema=schema, dialect=dialect, step_tokens=step_tokens, memo=study.memo)
        composed_text = c.text
        ok, ex = study.judge(q, composed_text)
        row["composed"] = {"text": composed_text, "fallback": c.fallback, "note": c.note, "steps": len(c.texts),
                           "tokens": c.tokens(), "prompt_tokens": sum(u.prompt_tokens for u in c.usage.values()),
                           "executable": ok, "ex": ex, "s": round(time.monotonic() - t1, 2)}
    t2 = time.monotonic()
    settings = TrimSettings(cheap=tier.pair, strong=tier.pair, step_tokens=step_tokens, use_verdict=False,
                            use_execution=False)
    w = run_chain(tier, tier, None, ThresholdPolicy(0.0), settings, db_id=q.db_id, memo=study.memo)
    ok, ex = study.judge(q, w.text)
    u = w.usage.get(tier.pair)
    row["whole"] = {"text": w.text, "fallback": w.fallback, "steps": len(w.texts),
                    "tokens": u.completion_tokens if u else 0, "prompt_tokens": u.prompt_tokens if u else 0,
                    "executable": ok, "ex": ex, "s": round(time.monotonic() - t2, 2)}
    r2_composed = composed_text is not None
    row["r2"] = {"path": "composed" if r2_composed else "whole",
                 "ex": row["composed"]["ex"] if r2_composed else row["whole"]["ex"],
                 "executable": row["composed"]["executable"] if r2_composed else row["whole"]["executable"]}
    return row


def _pct(k: int, n: int) -> float | None:
    return round(100.0 * k / n, 1) if n else None


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 2) if xs else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    valid = [r for r in rows if r["decomposition"]["valid"]]
    kinds = Counter(r["decomposition"]["kind"] for r in rows if not r["decomposition"]["valid"])
    examples = {k: next(r["decomposition"]["reason"] for r in rows if r["decomposition"].get("kind") == k)
                for k in kinds}
    composed_ok = [r for r in valid if r["composed"]["text"] is not None]
    comp_fallbacks = Counter((r["composed"]["fallback"] or "").split(":")[0] for r in valid
                             if r["composed"]["fallback"])

    def ex(rs: list[dict[str, Any]], path: str) -> float | None:
        if path == "composed":
            return _pct(sum(bool(r.get("composed", {}).get("ex")) for r in rs), len(rs))
        return _pct(sum(bool(r[path]["ex"]) for r in rs), len(rs))

    def executable(rs: list[dict[str, Any]], path: str) -> float | None:
        return _pct(sum(bool(r.get(path, {}).get("executable")) for r in rs), len(rs))

    by_h: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["hardness"] or "?"].append(r)
    for h in [*HARDNESS, *sorted(set(groups) - set(HARDNESS))]:
        rs = groups.get(h)
        if not rs:
            continue
        vs = [r for r in rs if r["decomposition"]["valid"]]
        steps = [len(r["decomposition"]["subtasks"]) for r in vs]
        by_h[h] = {"n": len(rs), "valid": _pct(len(vs), len(rs)),
                   "gold_steps": _mean([r["gold_steps"] for r in rs if r["gold_steps"]]),
                   "steps": _mean(steps), "multi_step": _pct(sum(s > 1 for s in steps), len(steps)),
                   "steps_hist": dict(sorted(Counter(steps).items())),
                   "ex_whole": ex(rs, "whole"), "ex_composed": ex(rs, "composed"), "ex_r2": ex(rs, "r2")}
    multi = [r for r in valid if len(r["decomposition"]["subtasks"]) > 1]
    confs_v = [r["decomposition"]["confidence"] for r in valid if r["decomposition"]["confidence"] is not None]
    confs_r = [r["decomposition"]["confidence"] for r in rows
               if not r["decomposition"]["valid"] and r["decomposition"].get("confidence") is not None]
    ex_valid = [r for r in valid if r["composed"]["ex"]]
    return {
        "n": n, "valid": len(valid), "valid_pct": _pct(len(valid), n), "refusals": dict(kinds.most_common()),
        "refusal_examples": examples,
        "confidence_valid": _mean(confs_v), "confidence_refused": _mean(confs_r),
        "steps_hist": dict(sorted(Counter(len(r["decomposition"]["subtasks"]) for r in valid).items())),
        "composed_usable": len(composed_ok), "composed_fallbacks": dict(comp_fallbacks.most_common()),
        "composed_notes": sum(bool(r["composed"].get("note")) for r in valid),
        "ex": {"whole": ex(rows, "whole"), "composed": ex(rows, "composed"), "r2": ex(rows, "r2")},
        "executable": {"whole": executable(rows, "whole"), "composed": executable(rows, "composed"),
                       "r2": executable(rows, "r2")},
        "on_valid": {"n": len(valid), "ex_composed": ex(valid, "composed"), "ex_whole": ex(valid, "whole"),
                     "composed_right_whole_wrong": sum(bool(r["composed"]["ex"]) and not r["whole"]["ex"]
                                                       for r in valid),
                     "whole_right_composed_wrong": sum(bool(r["whole"]["ex"]) and not r["composed"]["ex"]
                                                       for r in valid),
                     "both_right": len([r for r in ex_valid if r["whole"]["ex"]])},
        "on_multi_step": {"n": len(multi), "ex_composed": ex(multi, "composed"), "ex_whole": ex(multi, "whole")},
        "by_hardness": by_h,
        "tokens": {"decomposer_prompt": _mean([r["decomposition"]["prompt_tokens"] for r in rows]),
                   "decomposer_decoded": _mean([r["decomposition"]["completion_tokens"] for r in rows]),
                   "composed_decoded": _mean([r["composed"]["tokens"] for r in valid]),
                   "composed_prompt": _mean([r["composed"]["prompt_tokens"] for r in valid]),
                   "whole_decoded": _mean([r["whole"]["tokens"] for r in rows]),
                   "whole_prompt": _mean([r["whole"]["prompt_tokens"] for r in rows])},
        "seconds": {"decompose": _mean([r["decompose_s"] for r in rows]),
                    "compose": _mean([r["composed"]["s"] for r in valid]),
                    "whole": _mean([r["whole"]["s"] for r in rows])},
    }


def _f(x: Any) -> str:
    return "-" if x is None else (f"{x:g}" if isinstance(x, float) else str(x))


def report_md(rep: dict[str, Any]) -> str:
    part = "" if rep["questions"] == rep["sample"] else f", a seeded random part of the {rep['sample']}-question sample"
    out = [f"Spider dev, {rep['questions']} questions{part} (seed {rep['seed']}); decomposer prompt "
           f"{rep['prompt_version']}, {rep['shots']} retrieved examples; {rep['elapsed_s']} s", ""]
    for tier, s in rep["tiers"].items():
        pair = rep["pairs"][tier]
        out += [f"### tier `{tier}` (generator `{pair['generator']}`, few_shot {pair['few_shot']}, constrained "
                f"{rep['constrained'][tier]})", "",
                f"- valid decompositions: **{s['valid']}/{s['n']} ({_f(s['valid_pct'])} %)**; refused: "
                + (", ".join(f"{k} {v}" for k, v in s["refusals"].items()) or "none"),
                f"- steps of the valid lists: {s['steps_hist']}; decomposer confidence (exp mean token logprob): "
                f"valid {_f(s['confidence_valid'])}, refused {_f(s['confidence_refused'])}",
                f"- composed chains usable: {s['composed_usable']}/{s['valid']}; why not: "
                + (", ".join(f"{k} {v}" for k, v in s["composed_fallbacks"].items()) or "-"), "",
                "| | whole-question path | composed (refused list = no chain) | R2 (fallback to whole) |",
                "|---|---:|---:|---:|",
                f"| EX % (all {s['n']}) | {_f(s['ex']['whole'])} | {_f(s['ex']['composed'])} | {_f(s['ex']['r2'])} |",
                f"| executable % | {_f(s['executable']['whole'])} | {_f(s['executable']['composed'])} | "
                f"{_f(s['executable']['r2'])} |",
                f"| EX % on the {s['on_valid']['n']} valid lists | {_f(s['on_valid']['ex_whole'])} | "
                f"{_f(s['on_valid']['ex_composed'])} | |",
                f"| EX % on the {s['on_multi_step']['n']} multi-step lists | {_f(s['on_multi_step']['ex_whole'])} | "
                f"{_f(s['on_multi_step']['ex_composed'])} | |", "",
                f"On the valid lists: composed right and whole wrong {s['on_valid']['composed_right_whole_wrong']}, "
                f"whole right and composed wrong {s['on_valid']['whole_right_composed_wrong']}, both right "
                f"{s['on_valid']['both_right']}.", "",
                "| hardness | n | valid % | gold chain steps (mean) | decomposition steps (mean) | multi-step % | "
                "steps histogram | EX whole | EX composed | EX R2 |",
                "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
        for h, v in s["by_hardness"].items():
            out.append(f"| {h} | {v['n']} | {_f(v['valid'])} | {_f(v['gold_steps'])} | {_f(v['steps'])} | "
                       f"{_f(v['multi_step'])} | {v['steps_hist']} | {_f(v['ex_whole'])} | {_f(v['ex_composed'])} | "
                       f"{_f(v['ex_r2'])} |")
        t, sec = s["tokens"], s["seconds"]
        out += ["", f"Tokens per question: decomposer {_f(t['decomposer_prompt'])} prompt + "
                f"{_f(t['decomposer_decoded'])} decoded; composed chain {_f(t['composed_decoded'])} decoded "
                f"({_f(t['composed_prompt'])} prompt, all steps); whole-question chain {_f(t['whole_decoded'])} decoded "
                f"({_f(t['whole_prompt'])} prompt). Seconds per question: decompose {_f(sec['decompose'])}, compose "
                f"{_f(sec['compose'])}, whole {_f(sec['whole'])}.", ""]
        if s["refusal_examples"]:
            out += ["Refusal reasons (one example each):", ""]
            out += [f"- {k}: {v}" for k, v in s["refusal_examples"].items()]
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decompose_quality", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="trim.toml", help="the config with the two pairs (default trim.toml)")
    ap.add_argument("--data", default=None, help="Spider folder (default: the shared one)")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--limit", type=int, default=None,
                    help="run only a fixed-seed random LIMIT of the --questions sample (a later run with --resume "
                         "extends it to the whole sample)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of --out/outcomes.jsonl and run only the questions it lacks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tier", choices=("strong", "cheap", "both"), default="strong",
                    help="which pair of the config writes (strong: its last pair, cheap: its first)")
    ap.add_argument("--shots", type=int, default=3, help="retrieved examples for the decomposer")
    ap.add_argument("--step-tokens", type=int, default=128)
    ap.add_argument("--out", default="runs/decompose_quality")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    from tqdm import tqdm

    from eval.routing_live import StepStudy, sample_questions
    from planner.config import load_config
    from planner.decompose import DECOMPOSE_PROMPT_VERSION
    from planner.pipeline import Planner
    from routing.trim import TrimSettings

    planner = Planner(load_config(a.config))
    names = list(planner.config.pairs)
    cheap, strong = names[0], names[-1]
    tiers = {"strong": [strong], "cheap": [cheap], "both": [strong, cheap]}[a.tier]
    qs = sample_questions("dev", a.questions, a.seed, data=a.data)
    if a.limit is not None and a.limit < len(qs):
        qs = random.Random(a.seed).sample(qs, a.limit)  # a random part of the sample: its figures are unbiased
    missing = sorted({q.db_id for q in qs} - set(planner.registry.ids()))
    if missing:
        print(f"error: databases not registered: {', '.join(missing[:5])}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in tiers}
    outcomes = out / "outcomes.jsonl"
    if a.resume and outcomes.exists():
        keys = {q.key for q in qs}
        for line in outcomes.read_text().splitlines():
            r = json.loads(line)
            if r["tier"] in rows and r["key"] in keys:
                rows[r["tier"]].append(r)
    done = {(r["tier"], r["key"]) for rs in rows.values() for r in rs}
    settings = TrimSettings(cheap=cheap, strong=strong, use_verdict=False, use_execution=False)
    constrained: dict[str, bool] = {}
    with StepStudy(planner, settings) as study, outcomes.open("a" if a.resume else "w") as f:
        for t in tiers:
            with planner.generators.acquire(planner.config.pairs[t].generator) as (_, backend):
                constrained[t] = bool(getattr(backend, "constrained", False))
        for q in tqdm(qs, desc="decompose", disable=a.quiet, dynamic_ncols=True):
            if all((t, q.key) in done for t in tiers):
                continue
            pair_tiers = dict(zip((cheap, strong), study.tiers(q), strict=True))
            for t in tiers:
                if (t, q.key) in done:
                    continue
                tier = pair_tiers[t]
                row = run_question(study, planner, q, tier, shots=a.shots, step_tokens=a.step_tokens)
                rows[t].append(row)
                f.write(json.dumps(row, default=str) + "\n")
                f.flush()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rep = {"questions": len(qs), "sample": a.questions, "seed": a.seed, "shots": a.shots, "prompt_version": DECOMPOSE_PROMPT_VERSION,
           "config": a.config, "pairs": {t: planner.config.pairs[t].model_dump() for t in tiers},
           "constrained": constrained, "tiers": {t: summarize(rs) for t, rs in rows.items()},
           "elapsed_s": round(time.monotonic() - t0, 1), "uptime": load}
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
    md = report_md(rep)
    (out / "report.md").write_text(md + "\n")
    print(md)
    print(f"uptime after: {load}")
    print(f"wrote {out}/report.json, report.md, outcomes.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
