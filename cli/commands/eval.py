"""`sqlarbiter eval ...`: Spider/BIRD (and variants, and your own JSONL questions) from the command line.

    sqlarbiter eval DATASET [--data DIR|FILE] [--split S] [--db-dir DIR] [--limit N] [--seed S] [--indices FILE]
                                [--db-ids A,B] [--difficulty LEVELS]
                                [--predictions FILE | --replay FILE | --systems A,B,...]
                                [--policy P] [--discriminator NAME] [--budget T]
                                [--scores-cache FILE] [--n N] [--config FILE] [--out DIR] [--workers N]
    DATASET: one per entry of the dataset registry (eval.datasets.DATASETS): spider, spider-syn,
    spider-realistic, spider-dk, bird, jsonl. `eval spider --data DIR` detects a Spider variant's folder.
    sqlarbiter eval compare RUN_A RUN_B
    sqlarbiter eval systems [--workers N]        EX of every published system in candidates/spider_dev
    sqlarbiter eval linking ...                  schema linking's recall and prompt tokens (eval.linking)
    sqlarbiter eval routing ...                  routers' cost-quality curves (eval.routing)
    sqlarbiter eval routing-live ...             TRIM step routing, live on real models (eval.routing_live)
    sqlarbiter eval routing-r2 ...               Route-and-Reason beside TRIM and the cascade, live (eval.r2_live)

--policy must be a registered policy (`planner.select`); in a replay, one that ranks by scores needs
--discriminator (both are usage errors, exit 2).
`--data DIR` names a dataset here (questions plus their databases; the Spider root also works as `--data` of
`check`/`plan`, which register its databases); `--config` is the option every command shares.
With --replay, --limit/--seed pick pool questions (every replayed question is scored when a
discriminator is given). Without --predictions/--replay/--systems the full pipeline runs (end-to-end).
Exit status: 0 done,
1 a run failed, 2 bad usage (missing files, unknown names).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cli.options import add_config_option, add_dataset_option
from core.settings import spider_dir


def add_to(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate on Spider/BIRD (EX with the official rules), replay pools, compare runs")
    sub = p.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    from eval.datasets import dataset_names, dataset_spec

    for ds in dataset_names():
        spec = dataset_spec(ds)
        what = f"your own {spec.title} file" if spec.file_only else spec.title
        d = sub.add_parser(ds, help=f"evaluate on {what} (EX: {dataset_spec(spec.ex_rule).title}'s official rule)")
        _dataset_args(d, spec)
        d.set_defaults(func=_run, dataset=ds)
    c = sub.add_parser("compare", help="per-difficulty EX deltas and flipped questions between two runs")
    c.add_argument("a", help="run directory A (holding results.jsonl)")
    c.add_argument("b", help="run directory B")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=_compare)
    s = sub.add_parser("systems", help="Spider dev EX of the published systems in candidates/spider_dev (cached)")
    s.add_argument("--candidates", default=None, help="systems directory (default: shared candidates/spider_dev)")
    add_dataset_option(s, spider_dir())
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--out", default=None, help="also write the table as JSON here")
    s.set_defaults(func=_systems)
    _add_linking(sub)
    add_routing_parser(sub)
    add_routing_live_parser(sub)
    add_routing_r2_parser(sub)

    def _help(args):
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=_help)


def _csv(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _dataset_args(d: argparse.ArgumentParser, spec) -> None:
    from eval.datasets import dataset_names, dataset_spec, default_data_dir
    from planner.select import policy_names  # the registry (cheap: no model code)

    files = ", ".join(spec.files.values())
    if spec.file_only:
        d.add_argument("--data", required=True, help=f"the dataset file ({spec.sql_fields[0]!r}, {spec.question_field!r}, "
                       "'db_id' per line; optional 'evidence', 'difficulty')")
    else:
        variants = [dataset_spec(n).title for n in dataset_names() if dataset_spec(n).variant_of == spec.name]
        detect = f"; a {' / '.join(variants)} folder is detected from its files" if variants else ""
        d.add_argument("--data", default=None, help=f"dataset folder holding {files}, or the file itself "
                       f"(default: {default_data_dir(spec.name)}){detect}")
    if len(spec.files) > 1:
        d.add_argument("--split", "--variant", dest="split", choices=tuple(spec.files), default=None,
                       help=f"which file ({', '.join(f'{k}: {v}' for k, v in spec.files.items())}; "
                       f"default: {spec.default_split}, or the one the folder holds)")
    else:
        d.set_defaults(split=None)
    own = "the dataset's own folders" + (", then Spider's database/" if spec.spider_databases else "")
    d.add_argument("--db-dir", default=None, help=f"databases folder (<db_id>/<db_id>.sqlite), searched before {own}")
    sel = d.add_argument_group("selection")
    sel.add_argument("--limit", type=int, default=None, help="first N questions (random N with --seed)")
    sel.add_argument("--seed", type=int, default=None, help="random subset seed (with --limit)")
    sel.add_argument("--indices", default=None, help="file of 0-based indices (one per line) or a comma list")
    sel.add_argument("--db-ids", default=None, help="comma-separated database ids")
    levels = f" ({', '.join(spec.levels)})" if spec.levels else ""
    sel.add_argument("--difficulty", default=None, help=f"comma-separated difficulty levels{levels}")
    mode = d.add_argument_group("mode (default: end-to-end through the pipeline)")
    mode.add_argument("--predictions", default=None, help="official-format file: one SQL per line (optionally \\t<db_id>)")
    mode.add_argument("--replay", default=None, help="candidate-pool JSONL to replay (no generator)")
    mode.add_argument("--systems", default=None, help="replay a pool built from these published systems (comma list, or 'all')")
    mode.add_argument("--policy", default=None, help=f"selection policy ({', '.join(policy_names())}; "
                      "those that rank by scores need --discriminator in replay)")
    mode.add_argument("--discriminator", default=None, help="configured discriminator name (replay: scores candidates)")
    mode.add_argument("--budget", type=int, default=None, help="discriminator reasoning budget (tokens)")
    mode.add_argument("--profile", choices=("default", "paper"), default=None,
                      help="replay: discriminator profile (paper = the paper's prompt, raw text, budget 512, no forcing)")
    mode.add_argument("--force", dest="force", action="store_true", default=None,
                      help="replay: verdict forcing on (the default profile's default)")
    mode.add_argument("--no-force", dest="force", action="store_false", help="replay: verdict forcing off")
    mode.add_argument("--scores-cache", default=None, help="replay: scores cache file (default under the cache dir)")
    mode.add_argument("--score-batch", type=int, default=8,
                      help="replay: questions whose candidates the discriminator scores in one batch (default 8)")
    mode.add_argument("--ranker", default=None, help="replay: a fitted ranker artifact (`sqlarbiter select fit`) "
                      "selects as policy `ranker`")
    mode.add_argument("--cv", type=int, default=None, help="replay with --policy ranker: cross-fit the ranker with K "
                      "folds grouped by database (each question scored by a ranker fitted on other databases)")
    mode.add_argument("--prior-mode", choices=("labelled", "agreement"), default="labelled",
                      help="--cv: per-source priors from training labels, or system-agnostic agreement priors")
    mode.add_argument("--train-systems", default=None, help="--cv: fit on a pool of these systems (comma list) "
                      "instead of the replayed pool (same questions, other generators)")
    mode.add_argument("--train-replay", default=None, help="--cv: fit on this labelled pool instead of the replayed one")
    mode.add_argument("--n", type=int, default=None, help="end-to-end: candidates per question")
    add_config_option(mode)  # end-to-end: the pipeline's models and defaults; replay: the discriminator's
    mode.add_argument("--deadline", type=float, default=None, help="end-to-end: per-question deadline in seconds "
                      "(default: the config's; CPU runs of the embedded model may need more)")
    run = d.add_argument_group("run")
    run.add_argument("--out", default=None, help="output directory (default: runs/eval/<dataset>-<mode>-<time>; "
                     "SQLARBITER_RUNS_DIR replaces runs/)")
    run.add_argument("--workers", type=int, default=2, help="processes for SQL comparison")
    run.add_argument("--timeout", type=float, default=None, help="per-query timeout in seconds (official default)")
    run.add_argument("--target-url", default=None,
                     help="predictions: run gold and predictions on this PostgreSQL/MySQL server (one database "
                          "per db_id, see `sqlarbiter databases load-spider`); the SQLite SQL is transpiled")
    run.add_argument("--no-resume", action="store_true", help="start results.jsonl afresh")
    run.add_argument("--no-plots", action="store_true")
    run.add_argument("--quiet", action="store_true", help="no progress bars")


def _indices(arg: str | None) -> list[int] | None:
    if not arg:
        return None
    p = Path(arg)
    if p.is_file():
        from eval.datasets import read_index_file

        return read_index_file(p)
    return [int(x) for x in arg.split(",") if x.strip()]


def _run(args) -> int:
    from eval.datasets import DatasetError, default_data_dir, detect_dataset, known_gap_indices, load_examples

    try:
        ds = detect_dataset(args.dataset, args.data)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ds != args.dataset:
        print(f"{args.data}: {ds} (detected from its files)", file=sys.stderr)
        args.dataset = ds
    filters = {"db_ids": _csv(args.db_ids), "difficulty": _csv(args.difficulty), "limit": args.limit,
               "seed": args.seed, "split": args.split, "db_dir": args.db_dir}
    pool_mode = bool(args.replay or args.systems)
    if pool_mode and args.replay:  # --limit/--seed pick pool questions, not dataset questions
        filters.pop("limit")
        filters.pop("seed")
    try:
        filters["indices"] = _indices(args.indices)
        examples = load_examples(ds, args.data, **filters)
    except (DatasetError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not examples:
        print("error: the selection is empty", file=sys.stderr)
        return 2
    modes = [m for m in ("predictions", "replay", "systems") if getattr(args, m)]
    if len(modes) > 1:
        print("error: choose one of --predictions, --replay, --systems", file=sys.stderr)
        return 2
    mode = modes[0] if modes else "end-to-end"
    if getattr(args, "target_url", None):
        from sqlbox.servers.targets import TargetError, parse_target, redact, server_url_for

        if mode != "predictions":
            print("error: --target-url works with --predictions (gold and predictions on the server)", file=sys.stderr)
            return 2
        try:
            parse_target(server_url_for(args.target_url, "x"))
        except TargetError as e:
            print(f"error: --target-url: {e}", file=sys.stderr)
            return 2
        except ValueError:
            print(f"error: --target-url: not a server URL: {redact(args.target_url)!r}", file=sys.stderr)
            return 2
    if args.policy is not None:
        from planner.select import PolicyError, check_policy

        try:  # a replay has scores only with --discriminator; end-to-end pairs always have a discriminator
            check_policy(args.policy, has_discriminator=mode not in ("replay", "systems") or bool(args.discriminator))
        except PolicyError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from core.settings import runs_dir

    out = Path(args.out) if args.out else runs_dir() / "eval" / f"{ds}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    meta = {"dataset": ds, "mode": mode, "data": str(args.data or default_data_dir(ds)),
            "n": len(examples), "policy": args.policy, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    replay_summary = None
    try:
        if mode == "predictions":
            from eval.datasets import dataset_size
            from eval.runner import read_prediction_file, run_predictions

            n_total = dataset_size(ds, args.data, args.split)
            preds = read_prediction_file(args.predictions, examples, n_total)
            meta["predictions"] = str(args.predictions)
            if args.target_url:
                meta["target_url"] = args.target_url
            run_predictions(examples, preds, out, dataset=ds, workers=args.workers, timeout=args.timeout,
                            resume=not args.no_resume, progress=progress, target_url=args.target_url)
        elif mode in ("replay", "systems"):
            rc, replay_summary = _replay(args, examples, out, meta, progress)
            if rc:
                return rc
        else:
            _end_to_end(args, examples, out, meta, progress)
    except (DatasetError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    exclude = known_gap_indices(ds, args.data, args.split)
    from eval.report import write_report

    rep = write_report(out, meta, exclude=exclude, replay_summary=replay_summary, plots=not args.no_plots)
    line = f"EX {rep['ex']:.1f}% ({rep['n_correct']}/{rep['n']})" if rep["ex"] is not None else "no results"
    if rep.get("policies"):
        line += " | " + ", ".join(f"{p} {v['ex']:.1f}%" for p, v in rep["policies"].items() if v["ex"] is not None)
    if rep.get("oracle") and rep["oracle"]["ex"] is not None:
        line += f" | oracle {rep['oracle']['ex']:.1f}%"
    print(line)
    print(f"wrote {out / 'results.jsonl'}, {out / 'report.json'}, {out / 'report.md'}")
    return 0


def _replay(args, examples, out, meta, progress):
    from core.settings import cache_dir
    from eval.pool import build_pool, read_pool
    from eval.replay import ScoresCache, make_discriminator
    from eval.runner import run_replay

    if args.score_batch < 1:
        print("error: --score-batch must be >= 1", file=sys.stderr)
        return 2, None
    if args.systems:
        from eval.datasets import dataset_spec

        if not dataset_spec(args.dataset).published_systems or args.split not in (None, "dev"):
            print("error: --systems pools exist for Spider dev only", file=sys.stderr)
            return 2, None
        from eval.systems import system_names

        names = system_names() if args.systems == "all" else _csv(args.systems)
        entries = build_pool(names, indices=[e.index for e in examples], data_dir=args.data)
        meta["replay"] = f"systems:{','.join(names)}"
    else:
        entries = read_pool(args.replay)
        meta["replay"] = str(args.replay)
    disc = None
    cache = None
    if args.discriminator:
        overrides = {}
        if getattr(args, "profile", None):
            overrides["profile"] = args.profile
        if getattr(args, "force", None) is not None:
            overrides["force"] = args.force
        disc = make_discriminator(args.discriminator, budget=args.budget, config=args.config, options=overrides)
        meta["discriminator"] = args.discriminator
        meta["discriminator_options"] = overrides
        meta["budget"] = getattr(disc, "budget", args.budget)
        path = args.scores_cache or (cache_dir() / "eval" / "scores" / f"{args.discriminator}.jsonl")
        cache = ScoresCache(path)
        meta["scores_cache"] = str(path)
    try:
        ranker = _ranker_run(args, examples, progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2, None
    limit = None
    if args.replay and args.limit is not None:
        wanted = {e.index for e in examples}
        entries = [p for p in entries if p.index in wanted]
        if args.seed is not None:
            import random

            keep = set(random.Random(args.seed).sample(range(len(entries)), min(args.limit, len(entries))))
            entries = [p for k, p in enumerate(entries) if k in keep]
        limit = args.limit
    meta["n"] = min(len(entries), limit) if limit is not None else len(entries)
    _, summary = run_replay(examples, entries, out, dataset=args.dataset, policy=args.policy, discriminator=disc,
                            scores_cache=cache, limit=limit, score_batch=args.score_batch, workers=args.workers,
                            progress=progress, ranker=ranker)
    if ranker is not None:
        meta["ranker"] = ranker.info
    meta["policy"] = args.policy or ("check-rerank" if disc is not None else "vote")
    return 0, summary


def _ranker_run(args, examples, progress):
    """The replay's ranker: --ranker FILE, or --policy ranker with --cv K (default 5) cross-fitting."""
    if not (args.ranker or args.cv or args.policy == "ranker"):
        return None
    from eval.select_fit import RankerRun, collect

    if args.ranker and args.cv:
        raise ValueError("give either --ranker FILE (a fitted artifact) or --cv K (cross-fitting), not both")
    if args.ranker:
        from planner.ranker import RankerArtifact

        return RankerRun(artifact=RankerArtifact.load(args.ranker), info={"artifact": str(args.ranker)})
    if args.cv is not None and args.cv < 2:
        raise ValueError("--cv needs K >= 2")
    train = None
    info: dict = {"cv": args.cv or 5, "prior_mode": args.prior_mode}
    if args.train_systems or args.train_replay:
        from eval.pool import build_pool, read_pool

        if args.train_systems:
            from eval.systems import system_names

            names = system_names() if args.train_systems == "all" else _csv(args.train_systems)
            entries = build_pool(names, indices=[e.index for e in examples], data_dir=args.data)
            info["train"] = f"systems:{','.join(names)}"
        else:
            entries = read_pool(args.train_replay)
            info["train"] = str(args.train_replay)
        _, train = collect(entries, examples, dataset=args.dataset, workers=args.workers, progress=progress)
    return RankerRun(cv=args.cv or 5, mode=args.prior_mode, train=train, info=info)


def _end_to_end(args, examples, out, meta, progress):
    from eval.runner import run_end_to_end
    from planner.pipeline import Planner
    from sqlbox.databases import DatabaseRegistry

    reg = DatabaseRegistry()
    for e in examples:
        if e.db_id not in reg:
            reg.register(e.db_id, e.db_path)
    planner = Planner.from_config(args.config, registry=reg)
    meta["config"] = args.config or "(default)"
    meta["n_candidates"] = args.n
    meta["deadline_s"] = args.deadline
    try:
        run_end_to_end(examples, planner, out, dataset=args.dataset, n=args.n, policy=args.policy,
                       timeout=args.timeout, deadline_s=args.deadline, resume=not args.no_resume, progress=progress)
    finally:
        planner.close()


def _compare(args) -> int:
    from eval.report import compare, format_compare

    try:
        c = compare(args.a, args.b)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(c, indent=2) if args.json else format_compare(c))
    return 0


def _systems(args) -> int:
    from eval.datasets import known_gap_indices
    from eval.metrics import ex_rate
    from eval.systems import system_info, system_verdicts

    try:
        v = system_verdicts(workers=args.workers, cache=not args.no_cache, candidates=args.candidates, data_dir=args.data)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = system_info(args.candidates)
    wta = set(known_gap_indices("spider", args.data) or ())
    rows = []
    for name, vs in v.items():
        rows.append({"system": name, "model": info.get(name, {}).get("model", ""), "n": len(vs),
                     "ex": ex_rate(x["ex"] for x in vs),
                     "ex_without_wta1": ex_rate(x["ex"] for i, x in enumerate(vs) if i not in wta),
                     "errors": sum(1 for x in vs if x["error_kind"] == "pred_error"),
                     "timeouts": sum(1 for x in vs if x["error_kind"] == "pred_timeout")})
    rows.sort(key=lambda r: -r["ex"])
    print(f"{'system':<40}{'EX%':>7}{'EX% w/o wta1':>14}{'errors':>8}{'timeouts':>9}")
    for r in rows:
        print(f"{r['system']:<40}{r['ex']:>7.2f}{r['ex_without_wta1']:>14.2f}{r['errors']:>8}{r['timeouts']:>9}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


# --------------------------------------------------------------------------- eval routing

def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def add_routing_parser(eval_subparsers) -> argparse.ArgumentParser:
    """`sqlarbiter eval routing` (the study: eval.routing.run_study)."""
    p = eval_subparsers.add_parser(
        "routing", help="offline cost-quality evaluation of routers on the published Spider-dev systems",
        description="Cross-validated (by database) cost-quality curves of carrot / bandit / cascade against "
                    "always-cheapest, always-strongest, random at matched cost, best fixed system and oracle.")
    p.add_argument("--out", default="runs/routing", help="output directory (report.json, report.md, PNGs)")
    p.add_argument("--systems", default=None, help="comma-separated system names (default: all)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--estimators", default="knn,logreg")
    p.add_argument("--k", type=int, default=20, help="kNN neighbours")
    p.add_argument("--lambdas", type=_floats, default=None, help="bandit cost weights to sweep (default: eval.routing.DEFAULT_LAMBDAS)")
    p.add_argument("--alpha", type=float, default=0.5, help="LinUCB exploration")
    p.add_argument("--passes", type=int, default=3, help="passes of the simulated feedback stream (regret)")
    p.add_argument("--regret-lambda", type=float, default=0.5)
    p.add_argument("--no-cascade", action="store_true", help="skip the cascade (no SQL execution needed)")
    p.add_argument("--exclude", default=None, help="file of 0-based dev indices to leave out (e.g. the wta_1 list)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_routing)
    return p


def _cmd_routing(args) -> int:
    from eval.datasets import read_index_file
    from eval.routing import DEFAULT_LAMBDAS, run_study

    ests = [e for e in args.estimators.split(",") if e]
    bad = [e for e in ests if e not in ("knn", "logreg")]
    if bad or args.folds < 2:
        print(f"error: estimators must be knn/logreg (got {bad}); folds >= 2", file=sys.stderr)
        return 2
    try:
        exclude = read_index_file(args.exclude) if args.exclude else []
        systems = [s for s in args.systems.split(",") if s] if args.systems else None
        run_study(Path(args.out), systems=systems, folds=args.folds, estimators=ests, k=args.k, lambdas=args.lambdas or list(DEFAULT_LAMBDAS),
                  alpha=args.alpha, passes=args.passes, regret_lambda=args.regret_lambda, workers=args.workers,
                  cascade=not args.no_cascade, exclude_indices=exclude, seed=args.seed, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- eval routing-live

def _live_study_options(p: argparse.ArgumentParser, out: str) -> None:
    """The options the live studies share (`eval routing-live`, `eval routing-r2`): config, Spider folder, the two
    tiers, the dev sample, the cascade's thresholds, the step limits, the process reward's parts, seed, output."""
    add_config_option(p)
    p.add_argument("--data", default=None, help="the Spider folder (default: the shared data's spider/)")
    p.add_argument("--cheap", default=None, help="the cheap pair (default: the trim router's, else the first pair)")
    p.add_argument("--strong", default=None, help="the strong pair (default: the trim router's, else the last pair)")
    p.add_argument("--questions", type=int, default=100, help="Spider dev questions (fixed-seed sample)")
    p.add_argument("--taus", type=_floats, default=None, help="cascade thresholds (default: eval.routing_live.DEFAULT_TAUS)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--step-tokens", type=int, default=None)
    p.add_argument("--prm", choices=("both", "verdict", "execution"), default=None,
                   help="the process reward's parts (default: the router's)")
    p.add_argument("--step-kind", choices=("cte", "prose"), default=None,
                   help="steps as CTEs of the query, or as paragraphs of reasoning before it (default: the router's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=f"runs/{out}", help="output directory")


def add_routing_live_parser(eval_subparsers) -> argparse.ArgumentParser:
    """`sqlarbiter eval routing-live` (the live study below the question: eval.routing_live.run_live_study)."""

    p = eval_subparsers.add_parser(
        "routing-live", help="live cost-quality study of TRIM step routing on real models and Spider questions",
        description="Runs cheap only, strong only, the question-level cascade, a TRIM threshold sweep and the learned "
                    "TRIM policy through the step loop /plan uses, on a fixed-seed sample of Spider dev questions "
                    "(docs/routing.md). Decoding is greedy; each distinct step is generated once.")
    _live_study_options(p, "routing_live")
    p.add_argument("--train", type=int, default=40,
                   help="Spider train questions (other databases) to train TRIM-Agg on; 0: no learned policy")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--price", type=float, default=0.002, help="TRIM-Agg's price per strong decoded token")
    p.add_argument("--ks", type=_floats, default=None, help="TRIM-Thr thresholds (default: 0.1..0.9)")
    p.add_argument("--policy-out", default=None, help="where to save the trained TRIM-Agg artifact (default: OUT/trim.pt)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_routing_live)
    return p


def _cmd_routing_live(args) -> int:
    from cli.options import load_cli_config
    from eval.routing_live import (
        DEFAULT_KS,
        DEFAULT_TAUS,
        run_live_study,
        sample_questions,
        trim_settings_for,
    )
    from planner.config import ConfigError
    from planner.pipeline import Planner

    try:
        cfg = load_cli_config(args)
        planner = Planner(cfg)
        settings = trim_settings_for(planner, args.cheap, args.strong, max_steps=args.max_steps,
                                     step_tokens=args.step_tokens, prm=args.prm, step_kind=args.step_kind)
        test = sample_questions("dev", args.questions, args.seed, data=args.data)
        train = sample_questions("train", args.train, args.seed, data=args.data,
                                 exclude_dbs={q.db_id for q in test}) if args.train > 0 else []
        missing = sorted({q.db_id for q in [*test, *train]} - set(planner.registry.ids()))
        if missing:
            raise ValueError(f"databases not registered: {', '.join(missing[:5])}...; add the Spider folder to the "
                             "config's `databases` or pass it with --data/--config")
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rep = run_live_study(planner, settings, test, out, ks=args.ks or DEFAULT_KS, taus=args.taus or DEFAULT_TAUS,
                         train=train, price=args.price, epochs=args.epochs, seed=args.seed,
                         policy_out=Path(args.policy_out) if args.policy_out else out / "trim.pt",
                         progress=not args.quiet)
    print((out / "report.md").read_text())
    print(f"wrote {out}/report.json, report.md, curve.png, outcomes.jsonl ({rep['elapsed_s']} s)")
    return 0


# --------------------------------------------------------------------------- eval routing-r2

def add_routing_r2_parser(eval_subparsers) -> argparse.ArgumentParser:
    """`sqlarbiter eval routing-r2` (Route-and-Reason in the live study: eval.r2_live.run_r2_study)."""

    p = eval_subparsers.add_parser(
        "routing-r2", help="live study of Route-and-Reason (r2) beside cheap/strong only, the cascade and TRIM",
        description="Trains the r2 allocator (supervised labels, then GRPO) on Spider train questions of other "
                    "databases, then runs cheap only, strong only, the cascade, TRIM-Thr, r2 with no allocator, r2 after "
                    "the supervised stage and after GRPO on the fixed-seed Spider dev sample of `eval routing-live` "
                    "(docs/routing.md). Decoding is greedy; each distinct step is generated once.")
    _live_study_options(p, "routing_r2")
    p.add_argument("--decomposer", default=None, help="the pair that decomposes (default: the strong tier)")
    p.add_argument("--train", type=int, default=40, help="Spider train questions (other databases) for the allocator")
    p.add_argument("--group", type=int, default=8, help="GRPO: allocations sampled per question")
    p.add_argument("--lam", type=float, default=0.25, help="GRPO: reward = EX - lam * cost (strong-token share)")
    p.add_argument("--iterations", type=int, default=10, help="GRPO iterations")
    p.add_argument("--rounds", type=int, default=1, help="supervised + GRPO rounds (> 1: alternate, relabelling)")
    p.add_argument("--epochs", type=int, default=200, help="supervised epochs")
    p.add_argument("--ks", type=_floats, default=None, help="TRIM-Thr thresholds (default: 0.5)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_routing_r2)
    return p


def _cmd_routing_r2(args) -> int:
    from cli.options import load_cli_config
    from eval.r2_live import DEFAULT_KS, run_r2_study
    from eval.routing_live import DEFAULT_TAUS, sample_questions, trim_settings_for
    from planner.config import ConfigError
    from planner.pipeline import Planner

    try:
        if args.questions < 1 or args.train < 1 or args.group < 2 or args.rounds < 1:
            raise ValueError("--questions >= 1, --train >= 1, --group >= 2 and --rounds >= 1")
        cfg = load_cli_config(args)
        planner = Planner(cfg)
        settings = trim_settings_for(planner, args.cheap, args.strong, max_steps=args.max_steps,
                                     step_tokens=args.step_tokens, prm=args.prm, step_kind=args.step_kind)
        if settings.step_kind != "cte":
            raise ValueError("r2 composes sub-questions as CTE steps: --step-kind must be cte")
        if args.decomposer is not None and args.decomposer not in (settings.cheap, settings.strong):
            raise ValueError(f"--decomposer must be one of the tiers ({settings.cheap}, {settings.strong})")
        test = sample_questions("dev", args.questions, args.seed, data=args.data)
        train = sample_questions("train", args.train, args.seed, data=args.data, exclude_dbs={q.db_id for q in test})
        missing = sorted({q.db_id for q in [*test, *train]} - set(planner.registry.ids()))
        if missing:
            raise ValueError(f"databases not registered: {', '.join(missing[:5])}...; add the Spider folder to the "
                             "config's `databases` or pass it with --data/--config")
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rep = run_r2_study(planner, settings, test, train, out, decomposer=args.decomposer, ks=args.ks or DEFAULT_KS,
                       taus=args.taus or DEFAULT_TAUS, group=args.group, lam=args.lam, iterations=args.iterations,
                       rounds=args.rounds, epochs=args.epochs, max_steps=settings.max_steps, seed=args.seed,
                       progress=not args.quiet)
    print((out / "report.md").read_text())
    print(f"wrote {out}/report.json, report.md, curve.png, outcomes.jsonl, r2.pt, r2.supervised.pt, r2.grpo.png "
          f"({rep['elapsed_s']} s)")
    return 0


# --------------------------------------------------------------------------- eval linking

def _add_linking(sub) -> None:
    p = sub.add_parser("linking", help="schema-linking recall/precision, prompt tokens and latency on Spider/BIRD")
    p.add_argument("--data", default=None, help="dataset directory (default: the shared Spider dir, or BIRD with --dataset bird)")
    p.add_argument("--dataset", choices=("spider", "bird"), default=None,
                   help="default: bird when --data holds dev_databases/, else spider")
    p.add_argument("--merged", action="store_true", help="Spider on the merged database of every Spider database")
    p.add_argument("--split", choices=("dev", "train"), default="dev", help="Spider split (default dev)")
    p.add_argument("--limit", type=int, default=None, help="first N questions (random N with --seed)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--top-k", type=int, default=None, help="tables kept before the foreign-key closure (default: config)")
    p.add_argument("--schema-max-tokens", type=int, default=None,
                   help="prompt token budget of the linked schema (default: config schema_max_tokens)")
    p.add_argument("--gold-check", action="store_true",
                   help="with --merged: only check that every rewritten gold query returns on the merged database what "
                        "the original returns on its own (Spider EX rule and identical rows); exit 1 if any differs")
    p.add_argument("--workers", type=int, default=1, help="processes for --gold-check")
    p.add_argument("--rebuild-index", action="store_true", help="build the schema indexes afresh (timed), not from cache")
    p.add_argument("--out", default=None, help="output directory")
    p.set_defaults(func=_linking)


def _gold_check(args: argparse.Namespace, originals, merged, build_s: float) -> int:
    from eval.merged import gold_vs_gold

    t = time.perf_counter()
    r = gold_vs_gold(originals, merged, workers=max(1, args.workers))
    r.update(wall_s=round(time.perf_counter() - t, 2), merged_build_s=round(build_s, 2),
             date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    out = Path(args.out) if args.out else Path("runs") / f"merged-gold-check-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gold_check.json").write_text(json.dumps(r, indent=2))
    print(f"gold vs gold on the merged database: {r['ex_equal']}/{r['n']} equal under the Spider EX rule, "
          f"{r['identical_rows']}/{r['n']} identical rows, errors {r['orig_errors']} (original) / "
          f"{r['merged_errors']} (merged), {r['wall_s']:.1f}s -> {out}")
    return 0 if r["ex_equal"] == r["n"] else 1


def _linking(args: argparse.Namespace) -> int:
    from core.settings import bird_dir, spider_dir
    from eval.datasets import DatasetError, load_bird, load_spider
    from eval.linking import evaluate, markdown_report
    from planner.config import load_config
    from sqlbox.databases import DatabaseRegistry
    from sqlbox.linking import DEFAULT_TOP_K

    data = Path(args.data).expanduser() if args.data else None
    dataset = args.dataset or ("bird" if data is not None and ((data / "dev_databases").is_dir()
                                                               or (data.parent / "dev_databases").is_dir()) else "spider")
    if data is None:
        data = spider_dir() if dataset == "spider" else bird_dir()
    if args.gold_check and not args.merged:
        print("error: --gold-check needs --merged", file=sys.stderr)
        return 2
    if args.merged and dataset != "spider":
        print("error: --merged works on Spider only", file=sys.stderr)
        return 2
    if args.top_k is not None and args.top_k < 1:
        print("error: --top-k must be >= 1", file=sys.stderr)
        return 2
    if args.schema_max_tokens is not None and args.schema_max_tokens < 64:
        print("error: --schema-max-tokens must be >= 64 tokens", file=sys.stderr)
        return 2
    try:
        cfg = load_config(getattr(args, "config", None))
    except Exception as e:  # noqa: BLE001 - a config that cannot load (unreadable, invalid, bad environment) is a usage error, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    top_k = args.top_k or cfg.defaults.linking_top_k or DEFAULT_TOP_K
    budget = args.schema_max_tokens or cfg.defaults.schema_max_tokens
    try:
        if dataset == "spider":
            examples = load_spider(data, split=args.split, limit=args.limit, seed=args.seed, with_difficulty=False)
        else:
            examples = load_bird(data, variant="dev", limit=args.limit, seed=args.seed)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not examples:
        print("error: no questions selected (are the databases present?)", file=sys.stderr)
        return 2
    reg = DatabaseRegistry()
    t_merge = None
    if args.merged:
        from eval.merged import merged_examples
        from sqlbox.merged import MERGED_DB_ID, build_merged

        t = time.perf_counter()
        path = build_merged(data / "database" if (data / "database").is_dir() else data)
        t_merge = time.perf_counter() - t
        originals = examples
        examples = merged_examples(examples, data / "database" if (data / "database").is_dir() else data, path)
        reg.register(MERGED_DB_ID, path)
        if args.gold_check:
            return _gold_check(args, originals, examples, t_merge)
    else:
        for ex in examples:
            if ex.db_id not in reg:
                reg.register(ex.db_id, ex.db_path)
    summary, rows = evaluate(examples, reg, top_k=top_k, budget=budget, rebuild=args.rebuild_index,
                             use_evidence=dataset == "bird")
    meta = {"dataset": dataset, "split": args.split if dataset == "spider" else "dev", "merged": args.merged,
            "data": str(data), "command": "sqlarbiter " + " ".join(sys.argv[1:]) if sys.argv else "",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "merged_build_s": t_merge}
    out = Path(args.out) if args.out else Path("runs") / (
        f"linking-{dataset}{'-merged' if args.merged else ''}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=2))
    (out / "report.md").write_text(markdown_report(meta, summary))
    with (out / "results.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    s = summary
    print(f"{dataset}{' merged' if args.merged else ''}: n={s['n']} table_recall={s['table_recall']:.4f} "
          f"column_recall={s['column_recall']:.4f} column_precision={s['column_precision']:.4f} "
          f"tokens={s['prompt_tokens_mean']:.0f}/{s['full_tokens_mean']:.0f} (ratio {s['token_ratio_mean']:.4f}) "
          f"latency p50={s['latency_ms_p50']:.1f}ms p95={s['latency_ms_p95']:.1f}ms "
          f"index_build={s['index_build_s_total']:.1f}s -> {out}")
    return 0
