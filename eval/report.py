"""Eval reports: `report.json` and `report.md` from `results.jsonl` lines, and `compare` of two runs.

The report holds EX overall and by difficulty (with a 95% Wilson interval), error kinds, EX per
selection policy when the lines carry `ex_by_policy`, oracle EX, cost / token / latency summaries
(end-to-end runs), the replay summary (replay runs: per-source EX, discriminator metrics) and, for
Spider, EX without the questions listed in `spider/dev_indices_needing_wta1_rankings.txt` (the data gap
documented in the shared data README). `compare A B` gives per-difficulty deltas and the questions
whose verdict flipped.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from eval.metrics import ex_by_group, ex_rate, order_levels, wilson_interval
from eval.runner import read_results


def _stats(values: Sequence[float]) -> dict | None:
    v = [float(x) for x in values if x is not None]
    if not v:
        return None
    s = sorted(v)
    return {"mean": statistics.fmean(v), "median": statistics.median(v), "p90": s[min(len(s) - 1, int(0.9 * len(s)))],
            "total": sum(v)}


def build_report(results: Sequence[dict], meta: dict | None = None, *, exclude: Sequence[int] | None = None,
                 replay_summary: dict | None = None) -> dict:
    meta = dict(meta or {})
    n = len(results)
    k = sum(1 for r in results if r.get("ex"))
    rep: dict = {"meta": meta, "n": n, "ex": ex_rate(r.get("ex") for r in results), "n_correct": k,
                 "ex_ci95": wilson_interval(k, n), "by_difficulty": ex_by_group(results)}
    rep["error_kinds"] = dict(Counter(r.get("error_kind") for r in results if r.get("error_kind")))
    if exclude:
        ex_set = set(exclude)
        kept = [r for r in results if int(r["index"]) not in ex_set]
        rep["excluding"] = {"indices": sorted(ex_set & {int(r["index"]) for r in results}), "n": len(kept),
                            "ex": ex_rate(r.get("ex") for r in kept), "by_difficulty": ex_by_group(kept)}
    pols: list[str] = []
    for r in results:
        for p in r.get("ex_by_policy") or {}:
            if p not in pols:
                pols.append(p)
    if pols:
        rep["policies"] = {}
        for p in pols:
            recs = [{"difficulty": r.get("difficulty"), "ex": r["ex_by_policy"][p]} for r in results
                    if p in (r.get("ex_by_policy") or {})]
            rep["policies"][p] = {"n": len(recs), "ex": ex_rate(x["ex"] for x in recs), "by_difficulty": ex_by_group(recs)}
    if any("oracle" in r for r in results):
        rep["oracle"] = {"ex": ex_rate(r.get("oracle") for r in results),
                         "by_difficulty": ex_by_group([{"difficulty": r.get("difficulty"), "ex": r.get("oracle")} for r in results])}
    if any("latency_ms" in r for r in results):
        rep["cost"] = _stats([r.get("cost") for r in results])
        rep["prompt_tokens"] = _stats([r.get("prompt_tokens") for r in results])
        rep["completion_tokens"] = _stats([r.get("completion_tokens") for r in results])
        rep["latency_ms"] = _stats([r.get("latency_ms") for r in results])
        rep["status"] = dict(Counter(r.get("status") for r in results))
    scored = [r for r in results if r.get("scores") and r.get("labels") and all(s is not None for s in r["scores"])]
    if scored and not (replay_summary and "discriminator_metrics" in replay_summary):
        from eval.metrics import discriminator_metrics

        rep["discriminator_metrics"] = discriminator_metrics([list(zip(r["scores"], r["labels"], strict=True)) for r in scored])
    if any(r.get("confidence_by_policy") for r in results):
        from eval.selective import selective_report

        rep["selective"] = selective_report(results)
    if replay_summary:
        rep["replay"] = replay_summary
        if "discriminator_metrics" in replay_summary:
            rep["discriminator_metrics"] = replay_summary["discriminator_metrics"]
    return rep


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _num(x) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def to_markdown(rep: dict) -> str:
    m = rep.get("meta", {})
    lines = [f"# Eval report: {m.get('dataset', '?')} ({m.get('mode', '?')})", ""]
    labels = {"n": "questions", "n_candidates": "candidates per question"}
    for key in ("data", "predictions", "replay", "discriminator", "policy", "n", "n_candidates", "config", "started",
                "finished"):
        if m.get(key) is not None:
            lines.append(f"- {labels.get(key, key)}: `{m[key]}`")
    ci = rep.get("ex_ci95")
    lines += ["", f"**EX {_pct(rep['ex'])}%** ({rep['n_correct']}/{rep['n']}"
              + (f", 95% CI {ci[0]:.1f}-{ci[1]:.1f}" if ci else "") + ")", ""]
    if rep.get("excluding", {}).get("indices"):
        x = rep["excluding"]
        lines.append(f"EX without the {len(x['indices'])} listed questions (wta_1 rankings gap): {_pct(x['ex'])}% over {x['n']}")
        lines.append("")
    levels = order_levels(rep["by_difficulty"])
    lines += ["## EX by difficulty", "", "| difficulty | n | EX % |", "|---|---:|---:|"]
    lines += [f"| {lv} | {rep['by_difficulty'][lv]['n']} | {_pct(rep['by_difficulty'][lv]['ex'])} |" for lv in levels]
    if rep.get("policies"):
        pols = list(rep["policies"])
        lines += ["", "## EX by selection policy (same candidates)", "",
                  "| difficulty | " + " | ".join(pols) + (" | oracle |" if "oracle" in rep else " |"),
                  "|---|" + "---:|" * (len(pols) + ("oracle" in rep))]
        for lv in order_levels({k for p in pols for k in rep["policies"][p]["by_difficulty"]}):
            row = [_pct(rep["policies"][p]["by_difficulty"].get(lv, {}).get("ex")) for p in pols]
            if "oracle" in rep:
                row.append(_pct(rep["oracle"]["by_difficulty"].get(lv, {}).get("ex")))
            lines.append(f"| {lv} | " + " | ".join(row) + " |")
    rp = rep.get("replay")
    if rp and rp.get("sources"):
        lines += ["", "## Candidate sources (EX of each source alone)", "", "| source | n | EX % |", "|---|---:|---:|"]
        for s, v in sorted(rp["sources"].items(), key=lambda kv: -(kv[1]["ex"] or 0)):
            lines.append(f"| {s} | {v['n']} | {_pct(v['ex'])} |")
        if rp.get("best_source"):
            lines.append(f"\nBest single source: {rp['best_source']['name']} ({_pct(rp['best_source']['ex'])}%)")
        sbs = rp.get("side_by_side")
        if sbs and sbs.get("policies"):
            best = sbs.get("best_single") or {}
            lines += ["", "## Policies side by side (share of the vote -> oracle gap closed)", "",
                      "| policy | EX % | gap closed |", "|---|---:|---:|"]
            for p, v in sbs["policies"].items():
                g = v.get("gap_closed")
                lines.append(f"| {p} | {_pct(v['ex'])} | {'' if g is None else f'{100 * g:+.0f}%'} |")
            lines.append(f"| best single source ({best.get('name', '?')}) | {_pct(best.get('ex'))} | |")
            lines.append(f"| oracle | {_pct(sbs.get('oracle'))} | +100% |")
        if rp.get("scored_subset"):
            ss = rp["scored_subset"]
            lines.append("\nOn the " + str(ss["n"]) + " scored questions: "
                         + ", ".join(f"{k} {_pct(v)}%" for k, v in ss.items() if k != "n"))
    dm = rep.get("discriminator_metrics")
    if dm:
        lines += ["", "## Discriminator metrics"]
        if dm.get("paper"):  # the headline: the paper's definitions (docs/evaluation.md)
            lines += ["", "Paper convention, the headline (Anjum 2025, its public `eval_intrinsic`): macro F1 at > 0.5, "
                      "Hit@1 / MRR over all questions (stable sort), end-to-end tie-break on the smallest SQL.", "",
                      "| metric | value |", "|---|---:|"]
            for key in ("n_questions", "n_pairs", "pairwise_accuracy", "macro_f1", "hit_at_1", "mrr", "hit_at_1_e2e"):
                lines.append(f"| {key} | {_num(dm['paper'].get(key))} |")
            lines += ["", "Project convention: macro F1 at >= 0.5, Hit@1 / MRR over mixed questions."]
        lines += ["", "| metric | value |", "|---|---:|"]
        for key in ("n_questions", "n_candidates", "n_mixed", "n_all_correct", "n_all_wrong", "n_pairs",
                    "pairwise_accuracy", "pairwise_accuracy_macro", "hit_at_1", "mrr", "hit_at_1_all",
                    "macro_f1", "auroc", "ece"):
            lines.append(f"| {key} | {_num(dm.get(key))} |")
        if dm.get("verdicts"):
            lines.append("\nVerdicts: " + ", ".join(f"{k} {v}" for k, v in dm["verdicts"].items()))
    if rep.get("latency_ms"):
        lines += ["", "## Cost, tokens, latency (per question)", "", "| quantity | mean | median | p90 | total |",
                  "|---|---:|---:|---:|---:|"]
        for key in ("cost", "prompt_tokens", "completion_tokens", "latency_ms"):
            s = rep.get(key)
            if s:
                lines.append(f"| {key} | {s['mean']:.4g} | {s['median']:.4g} | {s['p90']:.4g} | {s['total']:.4g} |")
        if rep.get("status"):
            lines.append("\nPlan status: " + ", ".join(f"{k} {v}" for k, v in rep["status"].items()))
    if rep.get("error_kinds"):
        lines += ["", "Errors: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["error_kinds"].items()))]
    if rep.get("selective"):
        from eval.selective import to_markdown as selective_md

        lines += selective_md({p: v for p, v in rep["selective"].items()})
    for name in ("ex_by_difficulty.png", "reliability.png"):
        if (rep.get("plots") or {}).get(name):
            lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike, meta: dict | None = None, *, exclude=None, replay_summary=None,
                 plots: bool = True) -> dict:
    """Read results.jsonl in `out_dir`, write report.json, report.md and the PNG plots; return the report."""
    out = Path(out_dir)
    results = read_results(out)
    rep = build_report(results, meta, exclude=exclude, replay_summary=replay_summary)
    rep["plots"] = {}
    if plots and results:
        from eval.plots import plot_ex_by_difficulty, plot_reliability

        table = {p: v["by_difficulty"] for p, v in (rep.get("policies") or {}).items()} or {
            (meta or {}).get("policy") or "ex": rep["by_difficulty"]}
        if "oracle" in rep:
            table["oracle"] = rep["oracle"]["by_difficulty"]
        rep["plots"]["ex_by_difficulty.png"] = str(plot_ex_by_difficulty(table, out / "ex_by_difficulty.png"))
        dm = rep.get("discriminator_metrics")
        if dm and dm.get("reliability"):
            rep["plots"]["reliability.png"] = str(plot_reliability(dm["reliability"], out / "reliability.png",
                                                                   title=f"ECE {dm['ece']:.3f}" if dm.get("ece") is not None else None))
    if plots and rep.get("selective"):
        from eval.plots import plot_confidence_reliability, plot_risk_coverage

        rep["plots"]["risk_coverage.png"] = str(plot_risk_coverage(rep["selective"], out / "risk_coverage.png"))
        rep["plots"]["confidence_reliability.png"] = str(plot_confidence_reliability(rep["selective"],
                                                                                     out / "confidence_reliability.png"))
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    (out / "report.md").write_text(to_markdown(rep))
    return rep


# --------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------


def compare(a_dir: str | os.PathLike, b_dir: str | os.PathLike) -> dict:
    """Per-difficulty EX of A and B on their common questions, deltas (B - A), and flipped questions."""
    a = {int(r["index"]): r for r in read_results(a_dir)}
    b = {int(r["index"]): r for r in read_results(b_dir)}
    if not a or not b:
        raise FileNotFoundError(f"no results.jsonl lines in {a_dir if not a else b_dir}")
    common = sorted(set(a) & set(b))
    rows_a = [a[i] for i in common]
    rows_b = [b[i] for i in common]
    ga, gb = ex_by_group(rows_a), ex_by_group(rows_b)
    table = {}
    for lv in order_levels(set(ga) | set(gb)):
        ea, eb = ga.get(lv, {}).get("ex"), gb.get(lv, {}).get("ex")
        table[lv] = {"n": ga.get(lv, {}).get("n", 0), "a": ea, "b": eb,
                     "delta": None if ea is None or eb is None else eb - ea}
    fixed = [i for i in common if not a[i].get("ex") and b[i].get("ex")]
    broken = [i for i in common if a[i].get("ex") and not b[i].get("ex")]
    return {"a": str(a_dir), "b": str(b_dir), "n_common": len(common), "only_a": len(set(a) - set(b)),
            "only_b": len(set(b) - set(a)), "by_difficulty": table,
            "flipped": {"fixed_in_b": fixed, "broken_in_b": broken}}


def format_compare(c: dict, show: int = 20) -> str:
    lines = [f"A = {c['a']}", f"B = {c['b']}", f"{c['n_common']} common questions (only A {c['only_a']}, only B {c['only_b']})", "",
             f"{'difficulty':<12}{'n':>6}{'A EX%':>9}{'B EX%':>9}{'delta':>9}"]
    for lv, v in c["by_difficulty"].items():
        d = "-" if v["delta"] is None else f"{v['delta']:+.1f}"
        lines.append(f"{lv:<12}{v['n']:>6}{_pct(v['a']):>9}{_pct(v['b']):>9}{d:>9}")
    f, b = c["flipped"]["fixed_in_b"], c["flipped"]["broken_in_b"]
    lines += ["", f"fixed in B (wrong in A, right in B): {len(f)}" + (f": {f[:show]}" + (" ..." if len(f) > show else "") if f else ""),
              f"broken in B (right in A, wrong in B): {len(b)}" + (f": {b[:show]}" + (" ..." if len(b) > show else "") if b else "")]
    return "\n".join(lines)
