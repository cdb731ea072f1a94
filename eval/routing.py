"""Offline evaluation of routers on logged outcomes: cost-quality curves, cross-validated by database.

The study behind `sqlarbiter eval routing` (its command line: cli/commands/eval.py):

- Data (`load_routing_data`): the published Spider-dev systems act as generators. Correctness per question
  and system is the project's EX (`eval.systems.system_correctness`), cost per question comes from
  `routing.costs`, features from `routing.features`, and for the cascade each system's SQL is executed once
  (read-only, `eval.exec_match.run_query`) to get "executes?" and an order-insensitive result fingerprint
  (cached under cache_dir()/routing/).
- Split: GroupKFold on db_id (default 5 folds over the 20 dev databases): a router never sees questions of
  its test databases. Everything fitted (estimators, μ, ladders, "strongest", "cheapest") uses the
  training folds only.
- Policies, each swept to a curve: `carrot-knn` and `carrot-logreg` over μ; `bandit` (LinUCB warm-started
  on the training folds, then learning online on the test stream from the labels it would get as feedback)
  over λ (CARROT and the bandit choose among the systems not dominated on training EX and cost); `cascade`
  over the vote-margin threshold (`cascade_decisions`: the service's own escalation rule,
  `routing.cascade.escalation_signals` / `escalate_reason`, and its `vote` policy on the logged candidates). Baselines: always-cheapest,
  always-strongest, random at matched cost (a coin between the cheapest and the strongest system),
  best fixed system under a cost budget, oracle (the cheapest correct system; the cheapest system when
  none is correct).
- Metrics on a normalised cost axis x = mean cost / mean cost of always-strongest: area under the
  envelope y(x) = best EX at cost <= x over x in [0, 1]; cost to reach 95% and 100% of always-strongest's
  EX; EX at 30% of its cost; cost saving at <= 1 point EX loss.
- `simulate_bandit_regret`: replays a feedback stream from the logged outcomes (several shuffled passes)
  and records the bandit's cumulative regret against the best fixed system in hindsight.
- Output: report.json, report.md, curves.png, regret.png.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold
from tqdm import tqdm

from core.model import Candidate, ExecutionResult, ScoredCandidate
from core.settings import cache_dir
from eval.outcomes import outcomes_from_systems
from routing.bandit import LinUCB
from routing.carrot import MU_GRID, CarrotModel, non_dominated
from routing.features import FeatureConfig, Featurizer, schema_features_for
from routing.outcomes import OutcomeMatrix

DEFAULT_LAMBDAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 20.0)
DEFAULT_MARGINS = (-1.0, 0.0, 0.2, 0.34, 0.5, 0.67, 0.8, 1.01)  # -1: never escalate; 1.01: always


# ------------------------------------------------------------------------------------------ data


@dataclass
class RoutingData:
    M: OutcomeMatrix  # questions x systems (correct, cost)
    X: np.ndarray  # CARROT features (embeddings + cheap)
    Xb: np.ndarray  # bandit context (cheap + projected embedding + bias)
    schema: dict[str, dict[str, Any]]
    executes: np.ndarray | None = None  # bool, questions x systems
    fingerprints: list[list[str | None]] | None = None  # questions x systems (None: did not execute)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.M.keys)

    def cost(self) -> np.ndarray:
        return np.nan_to_num(self.M.cost, nan=0.0)

    def correct(self) -> np.ndarray:
        return np.nan_to_num(self.M.correct, nan=0.0)


def _fp_rows(rows: list[tuple]) -> str:
    """Order- and column-order-insensitive fingerprint of a result (a bag of rows, each a bag of values)."""
    norm = sorted("\x1f".join(sorted(repr(v) for v in r)) for r in rows)
    return hashlib.sha1("\x1e".join(norm).encode()).hexdigest()[:16]


def _fingerprint_task(args: tuple[str, list[str], float]) -> list[str | None]:
    from eval.exec_match import run_query, spider_prepare

    db_path, sqls, timeout = args
    out: list[str | None] = []
    memo: dict[str, str | None] = {}
    for s in sqls:
        p = spider_prepare(s or "", is_prediction=True)
        if p not in memo:
            r = run_query(db_path, p, timeout=timeout, max_rows=100_000) if p.strip() else None
            memo[p] = _fp_rows(r.rows) if r is not None and r.ok else None
        out.append(memo[p])
    return out


def result_fingerprints(names: Sequence[str], *, workers: int = 2, timeout: float = 5.0,
                        progress: bool = True) -> list[list[str | None]]:
    """Per dev question, per system: the fingerprint of its SQL's result, None if it does not execute.
    Runs read-only through eval.exec_match.run_query; cached by the prediction files' hashes."""
    from eval.datasets import load_spider
    from eval.systems import load_systems, systems_dir

    sdir = systems_dir()
    h = hashlib.sha256(f"fp-v1|{timeout}".encode())
    for n in names:
        h.update(n.encode())
        h.update(hashlib.sha256((sdir / f"{n}.sql").read_bytes()).digest())
    cf = cache_dir() / "routing" / f"fingerprints-{h.hexdigest()[:16]}.json"
    if cf.is_file():
        return json.loads(cf.read_text())
    examples = load_spider(with_difficulty=False, require_db=False)
    preds = load_systems(sdir, list(names), expected=len(examples))
    tasks = [(str(e.db_path), [preds[n][e.index] for n in names], timeout) for e in examples]
    bar = tqdm(total=len(tasks), desc="result fingerprints", unit="q", disable=not progress)
    res: list[list[str | None] | None] = [None] * len(tasks)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        ctx = mp.get_context("forkserver") if "forkserver" in mp.get_all_start_methods() else mp.get_context()
        try:
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for i, r in enumerate(pool.map(_fingerprint_task, tasks, chunksize=8)):
                    res[i] = r
                    bar.update(1)
        except BrokenProcessPool:  # a worker died (e.g. killed): finish the rest in this process
            pass
    for i, t in enumerate(tasks):
        if res[i] is None:
            res[i] = _fingerprint_task(t)
            bar.update(1)
    bar.close()
    cf.parent.mkdir(parents=True, exist_ok=True)
    tmp = cf.with_suffix(".tmp")
    tmp.write_text(json.dumps(res))
    tmp.replace(cf)
    return res


def load_routing_data(names: Sequence[str] | None = None, *, workers: int = 2, cascade_signals: bool = True,
                      exclude_indices: Sequence[int] = (), feature_config: FeatureConfig | None = None,
                      bandit_config: FeatureConfig | None = None, cost_config: str | None = None,
                      progress: bool = True) -> RoutingData:
    """Spider dev x published systems as routing data (see module docstring)."""
    from eval.systems import system_correctness, system_names

    names = list(names) if names else system_names()
    corr = system_correctness(names, workers=workers, progress=progress)
    outcomes = outcomes_from_systems(names, correctness=corr, cost_config=cost_config)
    M = OutcomeMatrix.from_outcomes(outcomes, pairs=names)
    fps = result_fingerprints(names, workers=workers, progress=progress) if cascade_signals else None
    keep = np.array([int(k.split("#")[1]) not in set(exclude_indices) for k in M.keys])
    if not keep.all():
        idx = np.flatnonzero(keep)
        M = M.subset(idx)
        fps = [fps[i] for i in idx] if fps is not None else None
    schema = schema_features_for(M.db_ids)
    sf = [schema[d] for d in M.db_ids]
    X = Featurizer(feature_config or FeatureConfig()).transform(M.questions, sf)
    Xb = Featurizer(bandit_config or FeatureConfig(project_dim=16, bias=True)).transform(M.questions, sf)
    ex = np.array([[f is not None for f in row] for row in fps]) if fps is not None else None
    return RoutingData(M, X, Xb, schema, ex, fps, {"systems": names, "n_questions": len(M.keys),
                                                   "excluded": len(exclude_indices)})


# ------------------------------------------------------------------------------------------ metrics


def envelope(points: Sequence[tuple[float, float]], x: float) -> float:
    """Best EX among points with normalised cost <= x (0 if none)."""
    ys = [p[1] for p in points if p[0] <= x + 1e-12]
    return max(ys) if ys else 0.0


def curve_metrics(points: Sequence[tuple[float, float]], strong_ex: float) -> dict[str, Any]:
    """AUC over x in [0, 1] of the envelope, cost to 95%/100% of strongest EX, EX at 30% cost, saving at <= 1pt loss."""
    xs = sorted({0.0, 1.0, *[min(max(p[0], 0.0), 1.0) for p in points]})
    auc = sum(envelope(points, a) * (b - a) for a, b in zip(xs, xs[1:], strict=False))

    def min_cost(target: float) -> float | None:
        c = [p[0] for p in points if p[1] >= target - 1e-12]
        return min(c) if c else None

    c1 = min_cost(strong_ex - 0.01)
    return {"auc": auc, "cost_to_95": min_cost(0.95 * strong_ex), "cost_to_100": min_cost(strong_ex),
            "ex_at_30": envelope(points, 0.30), "cost_at_1pt_loss": c1,
            "saving_at_1pt_loss": (1.0 - c1) if c1 is not None else None,
            "best_ex": max((p[1] for p in points), default=None)}


# ------------------------------------------------------------------------------------------ policies


def default_ladder(train_ex: np.ndarray, mean_cost: np.ndarray, names: Sequence[str],
                   tiers: Sequence[float] = (1e-4, 1e-3), per_rung: int = 3) -> list[list[int]]:
    """Rungs of systems ordered by cost tier: the `per_rung` best (training EX) systems below each tier
    bound not already used, then the strongest system alone as the last rung."""
    strong = int(np.argmax(train_ex - 1e-9 * mean_cost))
    used: set[int] = {strong}
    rungs: list[list[int]] = []
    for bound in tiers:
        pool = [j for j in np.argsort(-train_ex) if mean_cost[j] < bound and j not in used]
        rung = [int(j) for j in pool[:per_rung]]
        if rung:
            rungs.append(rung)
            used.update(rung)
    rungs.append([strong])
    return rungs


def logged_candidates(fps_row: Sequence[str | None], systems: Sequence[int]) -> list[ScoredCandidate]:
    """The logged candidates of one question, as the service would hold them: one per system in `systems`
    (in that order), executable with its result fingerprint, or not executable (fingerprint None)."""
    return [ScoredCandidate(candidate=Candidate(sql="", source=str(j)),
                            execution=ExecutionResult(ok=True, fingerprint=fps_row[j]) if fps_row[j] is not None
                            else ExecutionResult(ok=False, error="does not execute"))
            for j in systems]


def cascade_decisions(rungs: Sequence[Sequence[int]], fps: Sequence[Sequence[str | None]], rows: np.ndarray,
                      threshold: float, correct: np.ndarray, cost: np.ndarray, *,
                      policy: str = "vote") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offline cascade over systems, run by the service's own rule: after each rung, the pooled logged
    candidates of all rungs so far (`logged_candidates`) go through `routing.cascade.escalation_signals` and
    `escalate_reason` (vote_margin = `threshold`; no soft scores, so tau does not apply), i.e. escalate when
    none executes or the vote margin is below `threshold`. The answer is what the service's selection
    policy (`policy`, default `vote`) picks from the pooled candidates (`planner.select.select`); nothing
    chosen (no candidate executes) counts as wrong, as a plan without an answer would. Returns per row
    (correct, cost, rungs run)."""
    from planner.select import select
    from routing.cascade import escalate_reason, escalation_signals

    out_c, out_cost, out_steps = np.zeros(len(rows)), np.zeros(len(rows), dtype=float), np.zeros(len(rows), dtype=int)
    for r, i in enumerate(rows):
        pooled: list[int] = []
        spent = 0.0
        for k, rung in enumerate(rungs):
            pooled.extend(rung)
            spent += float(sum(cost[i, j] for j in rung))
            cands = logged_candidates(fps[i], pooled)
            if k == len(rungs) - 1 or escalate_reason(escalation_signals(cands), 0.0, threshold) is None:
                break
        pick = select(policy, cands).index
        out_c[r] = correct[i, pooled[pick]] if pick is not None else 0.0
        out_cost[r], out_steps[r] = spent, k + 1
    return out_c, out_cost, out_steps


def bandit_stream(ucb: LinUCB, Xb: np.ndarray, rows: Sequence[int], correct: np.ndarray, cost_norm: np.ndarray,
                  lam: float, arms: Sequence[str]) -> np.ndarray:
    """Online: for each row, pick an arm by UCB, observe its logged outcome, update. Returns chosen arm index."""
    picks = np.zeros(len(rows), dtype=int)
    idx = {a: j for j, a in enumerate(arms)}
    for r, i in enumerate(rows):
        a = ucb.select(Xb[i], list(arms))
        j = idx[a]
        picks[r] = j
        ucb.update(a, Xb[i], correct[i, j] - lam * cost_norm[i, j], cost_norm[i, j], correct[i, j])
    return picks


def warm_ucb(Xb: np.ndarray, rows: Sequence[int], correct: np.ndarray, cost_norm: np.ndarray, lam: float,
             arms: Sequence[str], alpha: float) -> LinUCB:
    """A LinUCB warm-started on full-information logged outcomes (every arm on every training row)."""
    ucb = LinUCB(Xb.shape[1], alpha)
    Xr = Xb[np.asarray(rows)]
    for j, a in enumerate(arms):
        ucb.warm_start_arm(a, Xr, correct[rows, j] - lam * cost_norm[rows, j])
    return ucb


def simulate_bandit_regret(data: RoutingData, *, lam: float = 0.5, alpha: float = 0.5, passes: int = 3,
                           seed: int = 0) -> dict[str, Any]:
    """Replay a feedback stream of logged outcomes (shuffled, `passes` times) into a cold LinUCB; regret
    per step = reward of the best fixed system in hindsight on that question - reward of the bandit's pick.
    Also the same for a uniformly random router."""
    rng = np.random.default_rng(seed)
    correct, cost = data.correct(), data.cost()
    arms = list(data.M.pairs)
    scale = float(cost.mean(axis=0).max()) or 1.0
    cn = cost / scale
    reward = correct - lam * cn
    best = int(np.argmax(reward.mean(axis=0)))
    order = np.concatenate([rng.permutation(data.n) for _ in range(passes)])
    ucb = LinUCB(data.Xb.shape[1], alpha)
    picks = bandit_stream(ucb, data.Xb, order, correct, cn, lam, arms)
    inst = reward[order, best] - reward[order, picks]
    rand = rng.integers(0, len(arms), size=len(order))
    inst_rand = reward[order, best] - reward[order, rand]
    cum, cum_rand = np.cumsum(inst), np.cumsum(inst_rand)
    T = len(order)
    q = T // 4
    return {"lam": lam, "alpha": alpha, "passes": passes, "steps": T, "best_fixed": arms[best],
            "best_fixed_mean_reward": float(reward[:, best].mean()),
            "bandit_mean_reward": float(reward[order, picks].mean()),
            "cumulative_regret": cum.tolist(), "cumulative_regret_random": cum_rand.tolist(),
            "regret_per_step_first_quarter": float(inst[:q].mean()), "regret_per_step_last_quarter": float(inst[-q:].mean()),
            "checkpoints": {int(t): float(cum[t - 1]) for t in sorted({min(T, c) for c in (100, 500, 1000, 2000, T)})},
            "last_pass_pick_share": {arms[j]: float(np.mean(picks[-data.n:] == j)) for j in np.unique(picks[-data.n:])}}


# ------------------------------------------------------------------------------------------ the study


def evaluate_routing(data: RoutingData, *, folds: int = 5, estimators: Sequence[str] = ("knn", "logreg"), k: int = 20,
                     lambdas: Sequence[float] = DEFAULT_LAMBDAS, alpha: float = 0.5,
                     margins: Sequence[float] = DEFAULT_MARGINS, cascade: bool = True, seed: int = 0,
                     progress: bool = True) -> dict[str, Any]:
    """Cross-validated (GroupKFold by db_id) cost-quality curves for every policy and baseline."""
    M = data.M
    correct, cost = data.correct(), data.cost()
    n, m = correct.shape
    arms = list(M.pairs)
    groups = np.array(M.db_ids)
    n_folds = min(folds, len(set(M.db_ids)))
    splits = list(GroupKFold(n_splits=n_folds).split(data.X, groups=groups))
    # per policy: setting -> per-question (correct, cost); baselines: per question
    acc: dict[str, dict[float, tuple[np.ndarray, np.ndarray]]] = {}

    def put(policy: str, setting: float, rows: np.ndarray, c: np.ndarray, k_: np.ndarray) -> None:
        d = acc.setdefault(policy, {})
        if setting not in d:
            d[setting] = (np.full(n, np.nan), np.full(n, np.nan))
        d[setting][0][rows], d[setting][1][rows] = c, k_

    fold_info = []
    strong_cost = np.zeros(n)
    oracle_c, oracle_cost = np.zeros(n), np.zeros(n)
    rng = np.random.default_rng(seed)
    bar = tqdm(total=len(splits), desc="routing CV folds", disable=not progress)
    for f, (tr, te) in enumerate(splits):
        train_ex = correct[tr].mean(axis=0)
        mean_cost = cost[tr].mean(axis=0)
        strong = int(np.argmax(train_ex - 1e-9 * mean_cost))
        cheap = int(np.argmin(mean_cost))
        scale = float(mean_cost.max()) or 1.0
        cn = cost / scale
        fold_info.append({"fold": f, "test_dbs": sorted(set(groups[te])), "n_test": len(te), "strongest": arms[strong],
                          "cheapest": arms[cheap]})
        put("always-strongest", 0.0, te, correct[te, strong], cost[te, strong])
        put("always-cheapest", 0.0, te, correct[te, cheap], cost[te, cheap])
        strong_cost[te] = cost[te, strong]
        # best fixed system under a budget: for each candidate budget (every system's cost), the best train-EX system
        for j in range(m):
            within = [jj for jj in range(m) if mean_cost[jj] <= mean_cost[j] + 1e-15]
            b = max(within, key=lambda jj: (train_ex[jj], -mean_cost[jj]))
            put("best-fixed-under-budget", float(j), te, correct[te, b], cost[te, b])
        for i in te:  # oracle: cheapest correct system
            ok = np.flatnonzero(correct[i] > 0)
            j = int(ok[np.argmin(cost[i, ok])]) if len(ok) else cheap
            oracle_c[i], oracle_cost[i] = correct[i, j], cost[i, j]
        # CARROT
        for est in estimators:
            model = CarrotModel(arms, FeatureConfig(), est, k).fit(data.X[tr], M.subset(tr))
            q, c = model.predict(data.X[te])
            for mu in MU_GRID:
                pick = model.choose(q, c, float(mu))
                put(f"carrot-{est}", float(mu), te, correct[te, pick], cost[te, pick])
        # bandit: warm start on the training folds, then online on the shuffled test stream
        # (arms: the systems not dominated on training EX and cost, as for CARROT)
        order = te[rng.permutation(len(te))]
        active = np.flatnonzero(non_dominated(train_ex, mean_cost))
        fold_info[-1]["non_dominated"] = [arms[j] for j in active]
        for lam in lambdas:
            sub = [arms[j] for j in active]
            ucb = warm_ucb(data.Xb, tr, correct[:, active], cn[:, active], lam, sub, alpha)
            picks = active[bandit_stream(ucb, data.Xb, order, correct[:, active], cn[:, active], lam, sub)]
            put("bandit", float(lam), order, correct[order, picks], cost[order, picks])
        # cascade over a ladder chosen on the training folds
        if cascade and data.fingerprints is not None:
            rungs = default_ladder(train_ex, mean_cost, arms)
            fold_info[-1]["ladder"] = [[arms[j] for j in r] for r in rungs]
            for thr in margins:
                c_, k_, steps = cascade_decisions(rungs, data.fingerprints, te, thr, correct, cost)
                put("cascade", float(thr), te, c_, k_)
                fold_info[-1].setdefault("escalation_rate", {})[str(thr)] = float(np.mean(steps > 1))
        bar.update(1)
    bar.close()

    ref_cost = float(strong_cost.mean())
    strong_ex = float(np.nanmean(acc["always-strongest"][0.0][0]))
    cheap_ex = float(np.nanmean(acc["always-cheapest"][0.0][0]))
    cheap_cost = float(np.nanmean(acc["always-cheapest"][0.0][1]))
    policies: dict[str, Any] = {}
    for name, settings in acc.items():
        pts = []
        for s, (c_, k_) in sorted(settings.items()):
            pts.append({"setting": s, "ex": float(np.nanmean(c_)), "cost": float(np.nanmean(k_)),
                        "x": float(np.nanmean(k_)) / ref_cost})
        policies[name] = {"points": pts}
    policies["oracle"] = {"points": [{"setting": 0.0, "ex": float(oracle_c.mean()), "cost": float(oracle_cost.mean()),
                                      "x": float(oracle_cost.mean()) / ref_cost}]}
    # random at matched cost: a coin between always-cheapest and always-strongest
    xs = np.linspace(cheap_cost / ref_cost, 1.0, 101)
    p = (xs - xs[0]) / max(1e-12, 1.0 - xs[0])
    policies["random-matched"] = {"points": [{"setting": float(pp), "ex": float((1 - pp) * cheap_ex + pp * strong_ex),
                                              "cost": float(xx * ref_cost), "x": float(xx)} for pp, xx in zip(p, xs, strict=True)]}
    for pol in policies.values():
        pol["metrics"] = curve_metrics([(pt["x"], pt["ex"]) for pt in pol["points"]], strong_ex)
    return {"n_questions": n, "n_systems": m, "folds": fold_info, "reference": {
        "always_strongest_ex": strong_ex, "always_strongest_cost": ref_cost, "always_cheapest_ex": cheap_ex,
        "always_cheapest_cost": cheap_cost}, "policies": policies,
        "params": {"folds": n_folds, "estimators": list(estimators), "k": k, "lambdas": list(lambdas), "alpha": alpha,
                   "margins": list(margins), "mu_grid": [float(x) for x in MU_GRID], "seed": seed}}


# ------------------------------------------------------------------------------------------ reports


POLICY_ORDER = ("carrot-knn", "carrot-logreg", "bandit", "cascade", "best-fixed-under-budget", "random-matched",
                "always-cheapest", "always-strongest", "oracle")


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "never"
    return f"{100 * v:.1f}%" if pct else f"{v:.4f}"


def report_markdown(rep: dict[str, Any], regret: dict[str, Any] | None = None) -> str:
    r = rep["reference"]
    lines = [
        "# Routing study: published Spider-dev systems as generators",
        "",
        f"{rep['n_questions']} questions, {rep['n_systems']} systems, GroupKFold by database ({rep['params']['folds']} folds). "
        f"Cost axis normalised by always-strongest (mean ${r['always_strongest_cost']:.4g}/question, EX {100 * r['always_strongest_ex']:.1f}%); "
        f"always-cheapest: EX {100 * r['always_cheapest_ex']:.1f}% at ${r['always_cheapest_cost']:.3g}.",
        "",
        "| policy | best EX | AUC (x in [0,1]) | cost to 95% | cost to 100% | EX at 30% cost | saving at <=1pt loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [p for p in POLICY_ORDER if p in rep["policies"]]:
        mt = rep["policies"][name]["metrics"]
        lines.append(f"| {name} | {_fmt(mt['best_ex'])} | {mt['auc']:.4f} | {_fmt(mt['cost_to_95'])} | "
                     f"{_fmt(mt['cost_to_100'])} | {_fmt(mt['ex_at_30'])} | {_fmt(mt['saving_at_1pt_loss'])} |")
    lines += ["", "Costs are shares of always-strongest's cost; 'never' = no setting reaches it.", ""]
    for name in ("carrot-knn", "carrot-logreg", "bandit", "cascade"):
        if name not in rep["policies"]:
            continue
        lines += [f"## {name}", "", "| setting | EX | cost/question | x |", "|---:|---:|---:|---:|"]
        pts = rep["policies"][name]["points"]
        if name.startswith("carrot"):
            pts = pts[::8] + ([pts[-1]] if (len(pts) - 1) % 8 else [])
        for pt in pts:
            lines.append(f"| {pt['setting']:.4g} | {100 * pt['ex']:.1f}% | ${pt['cost']:.3g} | {pt['x']:.4f} |")
        lines.append("")
    lines += ["## Folds", ""]
    for f in rep["folds"]:
        lines.append(f"- fold {f['fold']}: test dbs {', '.join(f['test_dbs'])} ({f['n_test']} q); strongest "
                     f"{f['strongest']}; cheapest {f['cheapest']}" + (f"; ladder {f['ladder']}" if "ladder" in f else ""))
    if regret:
        cps = ", ".join(f"t={t}: {v:.1f}" for t, v in regret["checkpoints"].items())
        lines += ["", "## Bandit regret (simulated feedback stream)", "",
                  f"lambda={regret['lam']}, alpha={regret['alpha']}, {regret['passes']} shuffled passes = {regret['steps']} "
                  f"steps; best fixed system in hindsight: {regret['best_fixed']} (mean reward {regret['best_fixed_mean_reward']:.4f}); "
                  f"bandit mean reward {regret['bandit_mean_reward']:.4f}.",
                  f"Cumulative regret vs best fixed: {cps}. Per-step regret: first quarter "
                  f"{regret['regret_per_step_first_quarter']:.4f}, last quarter {regret['regret_per_step_last_quarter']:.4f}. "
                  f"Random router cumulative regret at the end: {regret['cumulative_regret_random'][-1]:.1f}."]
    return "\n".join(lines) + "\n"


def plot_curves(rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    styles = {"carrot-knn": "o-", "carrot-logreg": "s-", "bandit": "^-", "cascade": "D-",
              "best-fixed-under-budget": "x--", "random-matched": ":"}
    for ax, logx in zip(axes, (False, True), strict=True):
        for name, st in styles.items():
            if name not in rep["policies"]:
                continue
            pts = sorted(rep["policies"][name]["points"], key=lambda p: p["x"])
            ax.plot([max(p["x"], 1e-6) for p in pts], [100 * p["ex"] for p in pts], st, ms=3, lw=1.2, label=name)
        for name, mk in (("always-strongest", "*"), ("always-cheapest", "v"), ("oracle", "P")):
            p = rep["policies"][name]["points"][0]
            ax.plot([max(p["x"], 1e-6)], [100 * p["ex"]], mk, ms=11, label=name)
        ax.axhline(100 * rep["reference"]["always_strongest_ex"] - 1, color="grey", lw=0.6, ls="--")
        ax.set_xlabel("mean cost per question / always-strongest" + (" (log)" if logx else ""))
        ax.set_ylabel("EX (%)")
        if logx:
            ax.set_xscale("log")
        else:
            ax.set_xlim(-0.02, 1.1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Routing over {rep['n_systems']} published systems, Spider dev, GroupKFold by database")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_regret(reg: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    t = np.arange(1, reg["steps"] + 1)
    ax.plot(t, reg["cumulative_regret"], label=f"LinUCB bandit (alpha={reg['alpha']}, lambda={reg['lam']})")
    ax.plot(t, reg["cumulative_regret_random"], label="random router", ls=":")
    ax.set_xlabel("feedback events")
    ax.set_ylabel("cumulative regret vs best fixed system")
    ax.set_title(f"simulated feedback stream; best fixed in hindsight: {reg['best_fixed']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_study(out: Path, *, systems: Sequence[str] | None = None, folds: int = 5, estimators: Sequence[str] = ("knn", "logreg"),
              k: int = 20, lambdas: Sequence[float] = DEFAULT_LAMBDAS, alpha: float = 0.5, passes: int = 3,
              regret_lambda: float = 0.5, workers: int = 2, cascade: bool = True, exclude_indices: Sequence[int] = (),
              seed: int = 0, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = load_routing_data(systems, workers=workers, cascade_signals=cascade, exclude_indices=exclude_indices,
                             progress=progress)
    log(f"routing data: {data.n} questions x {len(data.M.pairs)} systems ({time.perf_counter() - t0:.1f}s)")
    rep = evaluate_routing(data, folds=folds, estimators=estimators, k=k, lambdas=lambdas, alpha=alpha,
                           cascade=cascade, seed=seed, progress=progress)
    regret = simulate_bandit_regret(data, lam=regret_lambda, alpha=alpha, passes=passes, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    rep["bandit_regret"] = {k_: v for k_, v in regret.items() if not k_.startswith("cumulative")}
    rep["bandit_regret"]["final_cumulative_regret"] = regret["cumulative_regret"][-1]
    rep["bandit_regret"]["final_cumulative_regret_random"] = regret["cumulative_regret_random"][-1]
    rep["elapsed_s"] = time.perf_counter() - t0
    (out / "report.json").write_text(json.dumps(rep, indent=2))
    (out / "report.md").write_text(report_markdown(rep, regret))
    plot_curves(rep, out / "curves.png")
    plot_regret(regret, out / "regret.png")
    log(f"wrote {out}/report.json, report.md, curves.png, regret.png ({rep['elapsed_s']:.1f}s)")
    return rep


# ------------------------------------------------------------------------------------------ CLI
