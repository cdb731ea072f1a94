"""`sqlarbiter route ...`: train and inspect routers from logged outcomes.

- `route fit --outcomes SRC --out PATH`: train a CARROT artifact (knn or logreg; μ given, or calibrated to
  a target average cost / strong-pair share on out-of-fold predictions grouped by database).
- `route fit-trim --out PATH [--config FILE] [--questions N]`: train the trim router's learned policy (TRIM-Agg)
  on live step chains of Spider train questions (eval.routing_live.train_policy).
- `route fit-r2 --out PATH [--config FILE] [--questions N] [--group G] [--lam L] [--iterations I] [--rounds R]`:
  train Route-and-Reason's subtask allocator (supervised labels, then GRPO) on live step chains of Spider train
  questions (eval.r2_live.train_allocator); the GRPO curve is written beside it as <stem>.grpo.png.
- `route show PATH`: print an artifact's metadata.
- `route import --outcomes SRC [--store URL]`: log outcomes into the store's `routing_outcomes` table.
- `route warm-start --outcomes SRC [--store URL]`: warm-start the bandit's persisted state.
- `route costs [--costs FILE]`: the cost-per-question table of the published systems.

`fit` and `warm-start` read the schema features of the outcomes' databases from `--data` (the option every
command shares: database files/folders, with the config's `databases` and $SQLARBITER_DATABASES) or, without
it, from Spider's `database/` folder.

SRC is a `.jsonl` file (Outcome records or a candidate pool), an end-to-end eval run directory (its
results.jsonl), a SQLAlchemy URL, or `systems[:a,b,...]`.
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.options import add_database_options


def add_to(subparsers) -> None:
    p = subparsers.add_parser("route", help="train and inspect routers (carrot artifacts, bandit state, outcomes)")
    sub = p.add_subparsers(dest="route_command", metavar="ROUTE_COMMAND")

    f = sub.add_parser("fit", help="train a CARROT artifact from logged outcomes")
    f.add_argument("--outcomes", required=True, help="outcomes: file.jsonl | eval run dir | SQLAlchemy URL | systems[:a,b]")
    f.add_argument("--out", required=True, help="artifact path (a .json metadata file is written beside it)")
    f.add_argument("--estimator", choices=("knn", "logreg"), default="knn")
    f.add_argument("--k", type=int, default=20, help="kNN neighbours")
    f.add_argument("--C", type=float, default=0.001, help="logistic regression inverse regularisation")
    f.add_argument("--keep-dominated", action="store_true",
                   help="keep pairs that another pair beats on both training EX and cost")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--mu", type=float, help="fixed cost weight in [0, 1]")
    g.add_argument("--target-cost", type=float, help="calibrate mu to this mean cost per question")
    g.add_argument("--target-share", type=float, help="calibrate mu to this share of calls to the strong pair")
    f.add_argument("--strong", default=None, help="the strong pair for --target-share (default: most expensive)")
    f.add_argument("--pairs", default=None, help="comma-separated pairs/systems to keep (default: all in the outcomes)")
    f.add_argument("--no-embeddings", action="store_true", help="cheap features only (no sentence encoder)")
    f.add_argument("--workers", type=int, default=2)
    add_database_options(f, db=None, config=False)
    f.set_defaults(func=_fit)

    t = sub.add_parser("fit-trim", help="train TRIM-Agg (the trim router's learned policy) on live step chains",
                       description="Runs the configured cheap and strong pairs step by step on Spider train questions "
                                   "(the trim router's step loop, greedy) and trains TRIM-Agg with REINFORCE and a "
                                   "learned baseline (routing.trim.fit_policy); writes a versioned artifact for "
                                   "[router] params = { policy = \"learned\", artifact = ... }.")
    t.add_argument("--out", required=True, help="artifact path (a .json metadata file is written beside it)")
    t.add_argument("--questions", type=int, default=40, help="Spider train questions (fixed-seed sample)")
    t.add_argument("--spider", default=None, help="the Spider folder (default: the shared data's spider/)")
    t.add_argument("--cheap", default=None)
    t.add_argument("--strong", default=None)
    t.add_argument("--price", type=float, default=0.002, help="price per strong decoded token in the reward")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    add_database_options(t, db=None, config=True)
    t.set_defaults(func=_fit_trim)

    r = sub.add_parser("fit-r2", help="train Route-and-Reason's subtask allocator (supervised, then GRPO) on live "
                                      "step chains",
                       description="Decomposes Spider train questions once with the decomposer pair, labels each "
                                   "subtask with the cheapest tier that gives a correct query, trains the allocator on "
                                   "those labels, then with GRPO (reward EX - lam * strong-token cost); --rounds "
                                   "alternates the stages (eval.r2_live). Writes a versioned artifact for [router] name "
                                   "= \"r2\", params = { artifact = ... }, its supervised stage beside it and the GRPO "
                                   "curve (<stem>.grpo.png).")
    r.add_argument("--out", required=True, help="artifact path (a .json metadata file is written beside it)")
    r.add_argument("--questions", type=int, default=40, help="Spider train questions (fixed-seed sample)")
    r.add_argument("--spider", default=None, help="the Spider folder (default: the shared data's spider/)")
    r.add_argument("--cheap", default=None, help="the cheap tier (default: the trim router's, else the first pair)")
    r.add_argument("--strong", default=None, help="the strong tier (default: the trim router's, else the last pair)")
    r.add_argument("--decomposer", default=None, help="the pair that decomposes (default: the strong tier)")
    r.add_argument("--group", type=int, default=8, help="GRPO: allocations sampled per question")
    r.add_argument("--lam", type=float, default=0.25, help="GRPO: reward = EX - lam * cost (strong-token share)")
    r.add_argument("--iterations", type=int, default=10, help="GRPO iterations (passes over the questions)")
    r.add_argument("--rounds", type=int, default=1, help="supervised + GRPO rounds (> 1: alternate, relabelling)")
    r.add_argument("--epochs", type=int, default=200, help="supervised epochs (full batch)")
    r.add_argument("--max-steps", type=int, default=6)
    r.add_argument("--step-tokens", type=int, default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--quiet", action="store_true")
    add_database_options(r, db=None, config=True)
    r.set_defaults(func=_fit_r2)

    s = sub.add_parser("show", help="print a CARROT artifact's metadata")
    s.add_argument("artifact")
    s.set_defaults(func=_show)

    i = sub.add_parser("import", help="log outcomes into the store (routing_outcomes table)")
    i.add_argument("--outcomes", required=True)
    i.add_argument("--store", default=None, help="SQLAlchemy URL (default: the service's SQLite store)")
    i.set_defaults(func=_import)

    w = sub.add_parser("warm-start", help="warm-start the bandit router's persisted state from outcomes")
    w.add_argument("--outcomes", required=True)
    w.add_argument("--store", default=None)
    w.add_argument("--key", default="bandit")
    w.add_argument("--alpha", type=float, default=0.5)
    w.add_argument("--lam", type=float, default=0.5)
    w.add_argument("--reset", action="store_true", help="clear the existing state first")
    add_database_options(w, db=None, config=False)
    w.set_defaults(func=_warm)

    c = sub.add_parser("costs", help="cost per question of the published systems (routing/system_costs.toml)")
    c.add_argument("--costs", metavar="FILE", default=None,
                   help="another cost TOML (default: routing/system_costs.toml)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_costs)

    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])


def _registry(a: argparse.Namespace):
    """(ok, registry): the --data databases, or None without --data (Spider's folder is the default);
    ok is False (and the error printed) when they cannot be registered."""
    if not a.data:
        return True, None
    from cli.options import registry_or_report

    reg = registry_or_report(a)
    return reg is not None, reg


def _load(src: str, workers: int = 2):
    from eval.outcomes import load_outcomes

    return load_outcomes(src, workers=workers)


def _fit(a: argparse.Namespace) -> int:
    from routing.carrot import fit_carrot
    from routing.features import FeatureConfig, Featurizer, schema_features_for
    from routing.outcomes import OutcomeError, OutcomeMatrix

    if a.mu is not None and not 0.0 <= a.mu <= 1.0:
        print("error: --mu must be in [0, 1]", file=sys.stderr)
        return 2
    if a.k < 1:
        print("error: --k must be >= 1", file=sys.stderr)
        return 2
    try:
        outcomes = _load(a.outcomes, a.workers)
        pairs = [x for x in a.pairs.split(",") if x] if a.pairs else None
        M = OutcomeMatrix.from_outcomes(outcomes, pairs)
    except (OutcomeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ok, reg = _registry(a)
    if not ok:
        return 2
    cfg = FeatureConfig(embeddings=not a.no_embeddings)
    sf = schema_features_for(M.db_ids, registry=reg)
    X = Featurizer(cfg).transform(M.questions, [sf[d] for d in M.db_ids])
    try:
        model = fit_carrot(M, X, feature_config=cfg, estimator=a.estimator, k=a.k, C=a.C,
                           prune_dominated=not a.keep_dominated, mu=a.mu,
                           target_cost=a.target_cost, target_share=a.target_share, strong=a.strong)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    model.training["sources"] = sorted({o.source for o in outcomes})
    path = model.save(a.out)
    meta = model.metadata()
    print(f"wrote {path} (+ {path.name}.json): {meta['estimator']} over {len(meta['pairs'])} pairs, "
          f"{meta['training']['n_questions']} questions from {meta['training']['n_databases']} databases; "
          f"mu={meta['mu']:.4g} ({meta['calibration']['method']})")
    return 0


def _fit_trim(a: argparse.Namespace) -> int:
    from pathlib import Path

    from cli.options import load_cli_config
    from eval.routing_live import StepStudy, sample_questions, train_policy, trim_settings_for
    from planner.config import ConfigError
    from planner.pipeline import Planner

    try:
        planner = Planner(load_cli_config(a))
        settings = trim_settings_for(planner, a.cheap, a.strong)
        questions = sample_questions("train", a.questions, a.seed, data=a.spider)
        missing = sorted({q.db_id for q in questions} - set(planner.registry.ids()))
        if missing:
            raise ValueError(f"databases not registered: {', '.join(missing[:5])}: pass the Spider database folder "
                             "with --data or the config's `databases`")
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with StepStudy(planner, settings) as study:
        pol, curve = train_policy(study, questions, price=a.price, epochs=a.epochs, seed=a.seed, out=Path(a.out))
    last = curve[-1] if curve else {}
    print(f"wrote {a.out} (+ .json): {len(questions)} questions, {a.epochs} epochs, last epoch reward "
          f"{last.get('reward', float('nan')):.3f}, EX {last.get('ex', float('nan')):.3f}, data hash {pol.meta['data_hash']}")
    return 0


def _fit_r2(a: argparse.Namespace) -> int:
    import dataclasses

    from cli.options import load_cli_config
    from eval.r2_live import R2Env, label_summary, save_training, tqdm_progress, train_allocator
    from eval.routing_live import StepStudy, sample_questions, trim_settings_for
    from planner.config import ConfigError
    from planner.pipeline import Planner

    try:
        if a.questions < 1 or a.group < 2 or a.rounds < 1:
            raise ValueError("--questions >= 1, --group >= 2 and --rounds >= 1")
        planner = Planner(load_cli_config(a))
        settings = trim_settings_for(planner, a.cheap, a.strong, step_tokens=a.step_tokens)
        settings = dataclasses.replace(settings, use_verdict=False, use_execution=False)  # no process reward here
        questions = sample_questions("train", a.questions, a.seed, data=a.spider)
        missing = sorted({q.db_id for q in questions} - set(planner.registry.ids()))
        if missing:
            raise ValueError(f"databases not registered: {', '.join(missing[:5])}: pass the Spider database folder "
                             "with --data or the config's `databases`")
        if a.decomposer is not None and a.decomposer not in (settings.cheap, settings.strong):
            raise ValueError(f"--decomposer must be one of the tiers ({settings.cheap}, {settings.strong})")
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tick, close = tqdm_progress(not a.quiet)
    with StepStudy(planner, settings) as study:
        env = R2Env(study, questions, decomposer=a.decomposer, max_steps=a.max_steps)
        tr = train_allocator(env, n_questions=len(questions), group=a.group, lam=a.lam, iterations=a.iterations,
                             rounds=a.rounds, epochs=a.epochs, seed=a.seed, progress=tick)
        close()
        if not tr.data:
            print(f"error: no training question has a valid decomposition ({len(tr.skipped)} refused)", file=sys.stderr)
            return 1
        paths = save_training(tr, a.out, lam=a.lam, group=a.group, iterations=a.iterations, rounds=a.rounds,
                              seed=a.seed, decomposer=env.decomposer, settings=settings.to_dict(),
                              questions=[q.key for q in questions])
    summ = label_summary(tr)
    first, last = (tr.curve[0], tr.curve[-1]) if tr.curve else ({}, {})
    print(f"wrote {paths['artifact']} (+ .json), {paths['supervised']}, {paths['curve']}: {summ['questions']} of "
          f"{len(questions)} questions decomposed ({summ['skipped']} refused), steps {summ['steps']}, labels "
          f"{summ['labels']}; GRPO reward {first.get('reward', float('nan')):.3f} -> {last.get('reward', float('nan')):.3f} "
          f"(EX {last.get('ex', float('nan')):.3f}, cost {last.get('cost', float('nan')):.3f}); "
          f"data hash {tr.final.meta['data_hash']}; {tr.elapsed_s} s")
    return 0


def _show(a: argparse.Namespace) -> int:
    from routing.carrot import ArtifactError, CarrotModel, meta_path

    try:
        CarrotModel.load(a.artifact)
    except ArtifactError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from pathlib import Path

    print(meta_path(Path(a.artifact)).read_text())
    return 0


def _import(a: argparse.Namespace) -> int:
    from routing.outcomes import OutcomeError, OutcomeStore

    try:
        outcomes = _load(a.outcomes)
    except (OutcomeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = OutcomeStore(a.store).add(outcomes)
    print(f"logged {n} outcomes")
    return 0


def _warm(a: argparse.Namespace) -> int:
    from core.store import make_engine
    from routing.bandit import BanditRouter
    from routing.features import schema_features_for
    from routing.outcomes import OutcomeError

    try:
        outcomes = _load(a.outcomes)
    except (OutcomeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ok, reg = _registry(a)
    if not ok:
        return 2
    router = BanditRouter(alpha=a.alpha, lam=a.lam, engine=make_engine(a.store), key=a.key)
    if a.reset:
        router.reset()
    n = router.warm_start(outcomes, schema_features_for([o.db_id for o in outcomes], registry=reg))
    print(f"bandit {a.key!r}: replayed {n} outcomes; arms: {', '.join(f'{k}={v}' for k, v in router.ucb.n.items())}")
    return 0


def _costs(a: argparse.Namespace) -> int:
    from routing.costs import CostConfigError, cost_table_markdown, system_costs

    try:
        costs = system_costs(path=a.costs)
    except CostConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps({k: v.model_dump() for k, v in costs.items()}, indent=2))
    else:
        print(cost_table_markdown(costs))
    return 0
