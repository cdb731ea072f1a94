"""Process reward quality (issue 28, "Must show: PRM quality"): how well each part of the per-step process reward
(`planner.prm.ProcessReward`) and their combinations rank good steps above bad ones, as AUROC.

Labelled steps, from Spider dev (a fixed-seed sample of questions over all dev databases):
- good: every step of the gold query's CTE chain (`sqlbox.steps.to_chain(gold)`);
- bad: steps of WRONG candidates' chains -- the published systems' Spider dev predictions
  (`candidates/spider_dev`, `eval.systems`) with EX = 0 on that question (`eval.systems.system_correctness`), up to
  `--wrong` distinct SQLs per question (fixed seed), rewritten with `to_chain` -- whose partial result differs from
  the partial result of EVERY gold step of that question. The labels are execution-grounded: each partial chain
  runs as `sqlbox.steps.partial_query` (limit `LABEL_LIMIT`) in the sandboxed executor and results are compared by
  the order-insensitive fingerprint of their rows (column names ignored); a step that errors is bad; a wrong
  candidate's step whose result equals a gold step's is left out (it may be a right start of a wrong query). So
  "bad" means "no gold intermediate table looks like this": a step that is right by another route is labelled bad
  too (label noise against the PRM). Systems of the family `legacy-no-values` (2018 models that write no literal
  values) are left out.
A balanced set (`--good` + `--bad` steps, fixed seed) is scored by the real `ProcessReward` -- the execution part
through the same executor (limit 100) and the verdict part by the project's default discriminator backend
(`embedded`, SmolLM2-135M) with the step prompt in logit mode (`step-logit-v1`); `--cot K` also scores K + K of
them in cot mode (`step-cot-v1`, budget `--budget`). Reported: the AUROC (sklearn) of the verdict part alone, the
execution part alone (`exec_score`), the fixed combinations (product, mean, min), and a logistic regression over
[verdict_p, ok, empty, all_null, log1p(rows), sign(row_delta)] (`planner.prm.features`) cross-validated by database
(GroupKFold: a fold's databases are unseen in training), with bootstrap 95 % intervals; also on the executable
steps only (where the execution part cannot win by errors alone).

    python -m benchmarks.prm_quality [--data DIR] [--questions N] [--seed 0] [--out runs/prm_quality.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

LABEL_LIMIT = 10_000  # rows of a partial result compared for the labels (the executor's row cap)
PRM_LIMIT = 100  # the ProcessReward's own limit


def collect(a, ex, schema_of, dev, preds: dict[str, list[str]], correct: dict[str, list[bool]]) -> tuple[list[dict], dict]:
    """The labelled steps of `a.questions` fixed-seed dev questions: dicts with idx, db_id, question, steps
    (texts 1..k), k, label (1 good / 0 bad), source; and counts of what was left out."""
    from sqlbox.steps import partial_query, to_chain

    rng = random.Random(a.seed)
    order = rng.sample(range(len(dev)), min(a.questions, len(dev)))
    memo: dict[tuple[str, str], tuple[bool, str | None]] = {}

    def run(db_id: str, steps: list[str]) -> tuple[bool, str | None]:
        try:
            sql = partial_query(steps, limit=LABEL_LIMIT)
        except Exception:  # noqa: BLE001 - a chain that cannot be made into a query is a failing step
            return False, None
        key = (db_id, sql)
        if key not in memo:
            r = ex.execute(db_id, sql, dialect="sqlite")
            memo[key] = (bool(r.ok), r.fingerprint if r.ok else None)
        return memo[key]

    out: list[dict] = []
    counts = {"questions": 0, "gold_no_chain": 0, "gold_step_fails": 0, "wrong_no_chain": 0, "wrong_sqls": 0,
              "bad": 0, "same_as_gold_step": 0, "good": 0}
    t0 = time.perf_counter()
    for n, i in enumerate(order):
        e = dev[i]
        try:
            gold = to_chain(e.gold_sql, schema=schema_of(e.db_id)).texts()
        except Exception:  # noqa: BLE001 - counted: the fidelity study lists what does not round-trip
            counts["gold_no_chain"] += 1
            continue
        counts["questions"] += 1
        gold_fp = set()
        for k in range(1, len(gold) + 1):
            ok, fp = run(e.db_id, gold[:k])
            if not ok:
                counts["gold_step_fails"] += 1
                continue
            gold_fp.add(fp)
            out.append({"idx": i, "db_id": e.db_id, "question": e.question, "steps": gold[:k], "k": k,
                        "n_steps": len(gold), "label": 1, "source": "gold"})
            counts["good"] += 1
        wrong: dict[str, str] = {}
        for name, ps in preds.items():
            sql = ps[i].strip()
            if sql and not correct[name][i] and sql not in wrong:
                wrong[sql] = name
        counts["wrong_sqls"] += len(wrong)
        picked = rng.sample(sorted(wrong), min(a.wrong, len(wrong)))  # fixed-seed: a few per question, many questions
        seen: set[str] = set()
        for sql in picked:
            name = wrong[sql]
            try:
                chain = to_chain(sql, schema=schema_of(e.db_id)).texts()
            except Exception:  # noqa: BLE001 - a wrong candidate that does not rewrite gives no steps
                counts["wrong_no_chain"] += 1
                continue
            for k in range(1, len(chain) + 1):
                text = "\n".join(chain[:k])
                if text in seen:
                    continue
                seen.add(text)
                ok, fp = run(e.db_id, chain[:k])
                if ok and fp in gold_fp:
                    counts["same_as_gold_step"] += 1
                    continue
                out.append({"idx": i, "db_id": e.db_id, "question": e.question, "steps": chain[:k], "k": k,
                            "n_steps": len(chain), "label": 0, "source": name})
                counts["bad"] += 1
        if (n + 1) % 50 == 0:
            print(f"  labelled {n + 1}/{len(order)} questions ({counts['good']} good, {counts['bad']} bad steps, "
                  f"{time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out, counts


def balanced(steps: list[dict], good: int, bad: int, seed: int) -> list[dict]:
    rng = random.Random(seed + 1)
    g = [s for s in steps if s["label"] == 1]
    b = [s for s in steps if s["label"] == 0]
    pick = rng.sample(g, min(good, len(g))) + rng.sample(b, min(bad, len(b)))
    return sorted(pick, key=lambda s: (s["idx"], s["label"], s["source"], s["k"]))


def auroc_ci(y: list[int], s: list[float], seed: int = 0, n: int = 1000) -> dict:
    """AUROC with a bootstrap 95 % interval (resampling steps)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    y_, s_ = np.asarray(y), np.asarray(s, dtype=float)
    auc = float(roc_auc_score(y_, s_))
    rng = np.random.default_rng(seed)
    bs = []
    for _ in range(n):
        ix = rng.integers(0, len(y_), len(y_))
        if 0 < y_[ix].sum() < len(ix):
            bs.append(roc_auc_score(y_[ix], s_[ix]))
    lo, hi = (float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))) if bs else (auc, auc)
    return {"auroc": round(auc, 4), "ci95": [round(lo, 4), round(hi, 4)], "n": len(y_), "good": int(y_.sum())}


def logistic_oof(X: list[list[float]], y: list[int], groups: list[str], folds: int = 5) -> tuple[list[float], dict]:
    """Out-of-fold P(good) of a logistic regression, GroupKFold by database; and the coefficients of a fit on all."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_, y_, g_ = np.asarray(X, dtype=float), np.asarray(y), np.asarray(groups)
    oof = np.zeros(len(y_))
    k = min(folds, len(set(groups)))
    for tr, te in GroupKFold(n_splits=k).split(X_, y_, g_):
        m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        m.fit(X_[tr], y_[tr])
        oof[te] = m.predict_proba(X_[te])[:, 1]
    m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_, y_)
    coef = dict(zip(["verdict_p", "ok", "empty", "all_null", "log1p_rows", "sign_row_delta"],
                    [round(float(c), 3) for c in m[-1].coef_[0]], strict=True))
    return oof.tolist(), coef


def table(rows: list[dict], y: list[int], groups: list[str], vkey: str, seed: int) -> dict:
    """AUROC of each part and combination for the scored steps `rows` (verdict from `rows[*][vkey]`)."""
    from planner.prm import combine_parts, features

    out: dict = {}
    v = [r[vkey]["verdict_p"] for r in rows]
    e = [r[vkey]["exec_score"] for r in rows]
    out["verdict"] = auroc_ci(y, v, seed)
    out["execution"] = auroc_ci(y, e, seed)
    for how in ("product", "mean", "min"):
        out[how] = auroc_ci(y, [combine_parts(a, b, how) for a, b in zip(v, e, strict=True)], seed)
    from planner.prm import StepReward

    feats = [features(StepReward(**{k: val for k, val in r[vkey].items() if k in StepReward.__dataclass_fields__}))
             for r in rows]
    oof, coef = logistic_oof(feats, y, groups)
    out["logistic (GroupKFold by db)"] = {**auroc_ci(y, oof, seed), "coef_standardized": coef}
    oof_x, _ = logistic_oof([[0.5, *f[1:]] for f in feats], y, groups)
    out["logistic, execution features only"] = auroc_ci(y, oof_x, seed)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="Spider directory (default: core.settings.spider_dir())")
    p.add_argument("--candidates", default=None, help="published predictions (default: core.settings.candidates_dir())")
    p.add_argument("--questions", type=int, default=300, help="dev questions sampled for labelled steps")
    p.add_argument("--wrong", type=int, default=3, help="wrong candidates (distinct SQL) rewritten per question")
    p.add_argument("--good", type=int, default=300)
    p.add_argument("--bad", type=int, default=300)
    p.add_argument("--cot", type=int, default=0, help="also score K good + K bad steps in cot mode (0: off)")
    p.add_argument("--budget", type=int, default=32, help="cot reasoning budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", default="runs/prm_quality.json")
    a = p.parse_args(argv)

    from core.settings import spider_dir
    from core.specs import ModelSpec
    from discriminators.step import step_discriminator
    from eval.datasets import load_spider
    from eval.systems import load_systems, system_correctness, system_info, system_names
    from planner.prm import ProcessReward
    from sqlbox.databases import DatabaseRegistry
    from sqlbox.executor import Executor
    from sqlbox.schema import schema_to_prompt

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    data = Path(a.data) if a.data else spider_dir()
    dev = load_spider(data, with_difficulty=False, require_db=False)
    info = system_info(a.candidates)
    names = [n for n in system_names(a.candidates) if info.get(n, {}).get("family") != "legacy-no-values"]
    preds = load_systems(a.candidates, names, expected=len(dev))
    correct = system_correctness(names, candidates=a.candidates, data_dir=data, progress=False)
    reg = DatabaseRegistry()
    reg.register_dir(data / "database")
    with Executor(reg) as ex:
        steps, counts = collect(a, ex, reg.schema, dev, preds, correct)
        pick = balanced(steps, a.good, a.bad, a.seed)
        print(f"{counts['good']} good, {counts['bad']} bad steps from {counts['questions']} questions "
              f"({len(names)} systems); scoring {len(pick)} ({time.perf_counter() - t_start:.0f} s)",
              file=sys.stderr, flush=True)
        schemas: dict[str, str] = {}
        spec = ModelSpec(name="embedded", role="discriminator", backend="embedded")
        logit = ProcessReward(discriminator=step_discriminator(spec, mode="logit"), executor=ex, limit=PRM_LIMIT)
        exec_only = ProcessReward(executor=ex, use_verdict=False, limit=PRM_LIMIT)
        t_score = time.perf_counter()
        for j, s in enumerate(pick):
            if s["db_id"] not in schemas:
                schemas[s["db_id"]] = schema_to_prompt(reg.schema(s["db_id"]), max_tokens=2048)
            kw = {"question": s["question"], "schema": schemas[s["db_id"]], "evidence": None, "db_id": s["db_id"],
                  "dialect": "sqlite"}
            prev = None
            if s["k"] > 1:
                prev = exec_only.score(**kw, step_texts=s["steps"][:-1]).rows
            s["prev_rows"] = prev
            s["logit"] = logit.score(**kw, step_texts=s["steps"], prev_rows=prev).as_dict()
            if (j + 1) % 100 == 0:
                print(f"  logit {j + 1}/{len(pick)} ({time.perf_counter() - t_score:.0f} s)", file=sys.stderr,
                      flush=True)
        logit_s = time.perf_counter() - t_score
        cot_rows: list[dict] = []
        cot_s = 0.0
        if a.cot:
            cot = ProcessReward(discriminator=step_discriminator(spec, mode="cot", budget=a.budget), executor=ex,
                                limit=PRM_LIMIT)
            sub = balanced(pick, a.cot, a.cot, a.seed + 7)
            t_cot = time.perf_counter()
            for j, s in enumerate(sub):
                kw = {"question": s["question"], "schema": schemas[s["db_id"]], "evidence": None,
                      "db_id": s["db_id"], "dialect": "sqlite"}
                s["cot"] = cot.score(**kw, step_texts=s["steps"], prev_rows=s["prev_rows"]).as_dict()
                if (j + 1) % 50 == 0:
                    print(f"  cot {j + 1}/{len(sub)} ({time.perf_counter() - t_cot:.0f} s)", file=sys.stderr,
                          flush=True)
            cot_s = time.perf_counter() - t_cot
            cot_rows = sub

    y = [s["label"] for s in pick]
    groups = [s["db_id"] for s in pick]
    res = {"all steps, logit verdict": table(pick, y, groups, "logit", a.seed)}
    runnable = [s for s in pick if s["logit"]["ok"]]
    ry = [s["label"] for s in runnable]
    if 0 < sum(ry) < len(ry):
        res["executable steps only, logit verdict"] = table(runnable, ry, [s["db_id"] for s in runnable], "logit",
                                                            a.seed)
    if cot_rows:
        cy, cg = [s["label"] for s in cot_rows], [s["db_id"] for s in cot_rows]
        res[f"cot subset ({len(cot_rows)} steps), cot verdict (budget {a.budget})"] = table(cot_rows, cy, cg, "cot",
                                                                                              a.seed)
        res[f"cot subset ({len(cot_rows)} steps), logit verdict"] = table(cot_rows, cy, cg, "logit", a.seed)
    tok = [s["logit"]["prompt_tokens"] for s in pick]
    summary = {
        "seed": a.seed, "questions_sampled": a.questions, "counts": counts, "systems": len(names),
        "scored": {"good": sum(y), "bad": len(y) - sum(y), "databases": len(set(groups)),
                   "questions": len({s["idx"] for s in pick}), "executable": len(runnable),
                   "by_k": {str(k): sum(1 for s in pick if s["k"] == k) for k in sorted({s["k"] for s in pick})},
                   "multi_step_chains": sum(1 for s in pick if s["n_steps"] > 1)},
        "exec_outcomes": {lab: {"error": sum(1 for s in pick if s["label"] == li and not s["logit"]["ok"]),
                                "empty_or_null": sum(1 for s in pick if s["label"] == li and s["logit"]["ok"]
                                                     and (s["logit"]["empty"] or s["logit"]["all_null"])),
                                "rows": sum(1 for s in pick if s["label"] == li and s["logit"]["ok"]
                                            and not (s["logit"]["empty"] or s["logit"]["all_null"]))}
                          for lab, li in (("good", 1), ("bad", 0))},
        "seconds": {"total": round(time.perf_counter() - t_start, 1), "logit_scoring": round(logit_s, 1),
                    "cot_scoring": round(cot_s, 1),
                    "per_step_logit_ms": round(1000 * logit_s / max(1, len(pick)), 1),
                    "per_step_cot_ms": round(1000 * cot_s / max(1, len(cot_rows)), 1) if cot_rows else None},
        "prompt_tokens_mean": round(sum(tok) / max(1, len(tok)), 1),
        "load": os.getloadavg(),
        "auroc": res,
    }
    for name, t in res.items():
        print(f"\n{name}")
        print("| score | AUROC | 95% CI |\n|---|---|---|")
        for k, v in t.items():
            print(f"| {k} | {v['auroc']:.3f} | {v['ci95'][0]:.3f}-{v['ci95'][1]:.3f} |")
    print(json.dumps({k: v for k, v in summary.items() if k != "auroc"}, indent=1))
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        keep = ("idx", "db_id", "k", "n_steps", "label", "source", "steps", "prev_rows", "logit", "cot")
        out.write_text(json.dumps({**summary, "steps": [{k: s[k] for k in keep if k in s} for s in pick]}, indent=1))
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
