"""Selection across pool kinds (issue 26): first / vote / ranker (cross-fitted) / ranker (the shipped default fitted
without the test pool's generator) on every shared pool, leave-one-pool-kind-out, and the shipped default artifact.

    python -m benchmarks.selection_mix collect [--data DIR]      # replay the shared pools once (cached, runs/sel_mix/)
    python -m benchmarks.selection_mix table [--cv 5]            # the figures (JSON + markdown under runs/sel_mix/)
    python -m benchmarks.selection_mix fit --out FILE            # the shipped default: fitted on the whole mix
    python -m benchmarks.selection_mix splits [--seeds 5]        # ranker - vote over random database splits

Labelled questions are cached as pickles under runs/sel_mix/ (never in the repository; the data stays read-only).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

CACHE = Path("runs/sel_mix")
SAMPLES = "candidates/spider_dev_samples"
# name -> (kind, generator, pool file or "systems")
POOLS = {
    "gpt4omini_n8": ("single-generator", "gpt-4o-mini", f"{SAMPLES}/gpt-4o-mini_T0.7_n8.jsonl"),
    "qwen_t04_x5": ("single-generator", "qwen2.5-coder-7b", f"{SAMPLES}/qwen2.5-coder-7b-instruct_T0.4_x5_200q.jsonl"),
    "qwen_t08_x5": ("single-generator", "qwen2.5-coder-7b", f"{SAMPLES}/qwen2.5-coder-7b-instruct_T0.8_x5_200q.jsonl"),
    "systems43": ("multi-system", "systems", "systems"),
}


def data_root(arg: str | None) -> Path:
    return Path(arg) if arg else Path("/work/shared/data")


def collect(args) -> int:
    from eval.datasets import load_examples
    from eval.pool import build_pool, read_pool
    from eval.select_fit import collect as replay_collect
    from eval.systems import system_names

    root = data_root(args.data)
    examples = load_examples("spider", str(root / "spider")) if (root / "spider").is_dir() else load_examples("spider", None)
    CACHE.mkdir(parents=True, exist_ok=True)
    for name, (_, _, src) in POOLS.items():
        out = CACHE / f"{name}.pkl"
        if out.is_file() and not args.force:
            print(f"{name}: cached", flush=True)
            continue
        t0 = time.time()
        entries = build_pool(system_names(), data_dir=None) if src == "systems" else read_pool(root / src)
        _, qs = replay_collect(entries, examples, workers=args.workers, progress=False)
        for q in qs:
            q.record = {}
        out.write_bytes(pickle.dumps(qs))
        print(f"{name}: {len(qs)} questions in {time.time() - t0:.0f} s", flush=True)
    return 0


def load(name: str):
    return pickle.loads((CACHE / f"{name}.pkl").read_bytes())


def base_pools(names=None):
    from eval.select_mix import Pool

    out = []
    for name, (kind, gen, _) in POOLS.items():
        if names and name not in names:
            continue
        if (CACHE / f"{name}.pkl").is_file():
            out.append(Pool(name, kind, gen, load(name)))
    return out


def all_pools(bases):
    from eval.select_mix import derived_pools

    systems = next((p for p in bases if p.generator == "systems"), None)
    samples = [p for p in bases if p.generator != "systems"]
    if systems is None:
        from eval.select_mix import Pool

        systems = Pool("none", "multi-system", "systems", [])
    derived = derived_pools(systems, samples) if systems.qs else derived_pools(systems, samples, copies=0)
    return [p for p in bases if p.qs] + derived


def table(args) -> int:
    from eval.select_fit import crossfit
    from eval.select_mix import gap_closed, held_out, pool_summary

    bases = base_pools(args.pools.split(",") if args.pools else None)
    pools = all_pools(bases)
    t0 = time.time()
    out = {"pools": {}, "cv": args.cv, "training_pools": [p.name for p in pools]}
    for test in bases:
        t1 = time.time()
        row = pool_summary(test)
        dflt = held_out(test, pools, k=args.cv)
        row.update(first=dflt["ex"]["first"], vote=dflt["ex"]["vote"], ranker_default=dflt["ex"]["ranker"],
                   default_trained_on=dflt["trained_on"])
        other = "multi-system" if test.family == "single-generator" else "single-generator"
        if test.family == "single-generator":  # leave one pool kind out: no single-generator pool in training
            lko = held_out(test, pools, k=args.cv, exclude_kind="single-generator")
            row["ranker_without_kind"] = {"excluded": "single-generator", "ex": lko["ex"]["ranker"],
                                          "trained_on": lko["trained_on"]}
        else:  # the reverse: no multi-system pool (nor one built from it) in training
            row["ranker_without_kind"] = {"excluded": "multi-system", "ex": dflt["ex"]["ranker"],
                                          "trained_on": dflt["trained_on"]}
        if not args.no_crossfit:
            cf = crossfit(test.qs, args.cv, mode="labelled")
            row["ranker_crossfit"] = 100.0 * sum(r["ex"]["ranker"] for r in cf) / len(cf)
        for pol in ("first", "vote", "ranker_default", "ranker_crossfit"):
            if pol in row:
                row.setdefault("gap_closed", {})[pol] = gap_closed(row[pol], row["vote"], row["oracle"])
        row["seconds"] = round(time.time() - t1, 1)
        row["other_kind"] = other
        out["pools"][test.name] = row
        print(json.dumps({test.name: row}, default=str), flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    (CACHE / "table.json").write_text(json.dumps(out, indent=2, default=str))
    print(markdown(out))
    return 0


def markdown(out: dict) -> str:
    def f(x):
        return "" if x is None else f"{x:.1f}"

    def g(x):
        return "" if x is None else f"{100 * x:+.0f}%"

    lines = ["| pool | n | first | vote | best single | ranker (cross-fitted) | ranker (default, fitted without this "
             "pool's generator) | default without the other... | oracle | gap closed: first / vote / default / cross-fitted |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in out["pools"].items():
        gc = r.get("gap_closed", {})
        wk = r["ranker_without_kind"]
        lines.append(f"| {name} | {r['n']} | {f(r['first'])} | {f(r['vote'])} | {f(r['best_single']['ex'])} "
                     f"({r['best_single']['name']}) | {f(r.get('ranker_crossfit'))} | {f(r['ranker_default'])} | "
                     f"{f(wk['ex'])} (no {wk['excluded']}) | {f(r['oracle'])} | {g(gc.get('first'))} / "
                     f"{g(gc.get('vote'))} / {g(gc.get('ranker_default'))} / {g(gc.get('ranker_crossfit'))} |")
    return "\n".join(lines)


RECIPES = ("cross-fitted", "default", "default+own")  # the rankers `splits` measures (see `_recipe`)


def _recipe(name: str, test, pools, k: int, seed: int | None) -> list[dict]:
    """Per question of `test`: EX of ranker / vote / first under one recipe and one database split.
    - cross-fitted: `eval.select_fit.crossfit` on the pool itself (labelled priors);
    - default: the shipped recipe fitted without the test pool's generator (`held_out`);
    - default+own: the shipped recipe with the test pool's other databases added (`held_out(own=True)`)."""
    from eval.select_fit import crossfit
    from eval.select_mix import held_out

    if name == "cross-fitted":
        return [r["ex"] for r in crossfit(test.qs, k, mode="labelled", seed=seed)]
    return held_out(test, pools, k=k, own=name == "default+own", seed=seed)["per_question"]


def splits(args) -> int:
    """How much of a ranker figure is the database split: every recipe on every pool, under GroupKFold's split and
    `--seeds` shuffled ones. Only the training folds change between splits (the test questions are the same), so
    the spread is the fitting variance; the per-question sign test against vote is the sampling error."""
    from planner.ranker import sign_test

    bases = base_pools(args.pools.split(",") if args.pools else None)
    pools = all_pools(bases)
    seeds: list[int | None] = [None, *range(args.seeds)]
    out: dict = {"cv": args.cv, "seeds": seeds, "pools": {}}
    t0 = time.time()
    for test in bases:
        row: dict = {}
        for rec in args.recipes.split(","):
            per = []
            for seed in seeds:
                res = _recipe(rec, test, pools, args.cv, seed)
                n = len(res)
                ex = {p: 100.0 * sum(r[p] for r in res) / n for p in ("ranker", "vote", "first")}
                w = sum(r["ranker"] and not r["vote"] for r in res)
                lo = sum(r["vote"] and not r["ranker"] for r in res)
                per.append({"seed": seed, **ex, "wins": w, "losses": lo, "p_worse": round(sign_test(lo, w), 4),
                            "p_better": round(sign_test(w, lo), 4)})
            d = [x["ranker"] - x["vote"] for x in per]
            row[rec] = {"splits": per, "mean_minus_vote": sum(d) / len(d), "min_minus_vote": min(d),
                        "max_minus_vote": max(d),
                        "at_least_first_and_vote": sum(x["ranker"] >= max(x["first"], x["vote"]) - 1e-9 for x in per)}
            print(json.dumps({test.name: {rec: {k: v for k, v in row[rec].items() if k != "splits"}}}), flush=True)
        out["pools"][test.name] = row
    out["seconds"] = round(time.time() - t0, 1)
    (CACHE / "splits.json").write_text(json.dumps(out, indent=2))
    print(splits_markdown(out))
    return 0


def splits_markdown(out: dict) -> str:
    def sd(x):
        return "GroupKFold" if x is None else f"seed {x}"

    lines = ["| pool | recipe | ranker − vote per split (" + ", ".join(sd(x) for x in out["seeds"]) + ") | mean | "
             "splits with ranker ≥ max(first, vote) | GroupKFold: wins / losses vs vote |", "|---|---|---|---:|---:|---|"]
    for name, row in out["pools"].items():
        for rec, r in row.items():
            per = r["splits"]
            diffs = " / ".join(f"{x['ranker'] - x['vote']:+.1f}" for x in per)
            lines.append(f"| {name} | {rec} | {diffs} | "
                         f"{r['mean_minus_vote']:+.2f} | {r['at_least_first_and_vote']} of {len(per)} | "
                         f"{per[0]['wins']} / {per[0]['losses']} |")
    return "\n".join(lines)


def fit_default(args) -> int:
    from eval.select_mix import fit_on

    bases = base_pools()
    pools = all_pools(bases)
    art = fit_on(pools, meta={"pool_kinds": sorted({p.kind for p in pools}), "issue": 26})
    art.data_hash = "mix:" + ",".join(f"{p.name}={len(p.qs)}" for p in bases)
    path = art.save(args.out)
    print(f"wrote {path} ({art.meta['rows']} cluster rows from {len(pools)} pools)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.selection_mix")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--data", default=None)
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--force", action="store_true")
    c.set_defaults(func=collect)
    t = sub.add_parser("table")
    t.add_argument("--cv", type=int, default=5)
    t.add_argument("--pools", default=None, help="comma list of base pools (default: every cached one)")
    t.add_argument("--no-crossfit", action="store_true")
    t.set_defaults(func=table)
    sp = sub.add_parser("splits")
    sp.add_argument("--cv", type=int, default=5)
    sp.add_argument("--seeds", type=int, default=5, help="shuffled database splits besides GroupKFold's own")
    sp.add_argument("--pools", default=None, help="comma list of base pools (default: every cached one)")
    sp.add_argument("--recipes", default=",".join(RECIPES))
    sp.set_defaults(func=splits)
    f = sub.add_parser("fit")
    f.add_argument("--out", required=True)
    f.set_defaults(func=fit_default)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
