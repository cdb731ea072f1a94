"""`sqlarbiter eval ...`: Spider/BIRD evaluation from the command line.

    sqlarbiter eval spider|bird [--data DIR] [--limit N] [--seed S] [--indices FILE] [--db-ids A,B]
                                [--difficulty LEVELS] [--predictions FILE | --replay FILE | --systems A,B,...]
                                [--policy P] [--discriminator NAME] [--budget T]
                                [--scores-cache FILE] [--n N] [--config FILE] [--out DIR] [--workers N]
    sqlarbiter eval compare RUN_A RUN_B
    sqlarbiter eval systems [--workers N]        EX of every published system in candidates/spider_dev
    sqlarbiter eval routing ...                  (eval/routing_cli.py -> eval/routing.py)

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

from core.settings import bird_dir, spider_dir


def add_to(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate on Spider/BIRD (EX with the official rules), replay pools, compare runs")
    sub = p.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    for ds in ("spider", "bird"):
        d = sub.add_parser(ds, help=f"evaluate on {ds.capitalize()}")
        _dataset_args(d, ds)
        d.set_defaults(func=_run, dataset=ds)
    c = sub.add_parser("compare", help="per-difficulty EX deltas and flipped questions between two runs")
    c.add_argument("a", help="run directory A (holding results.jsonl)")
    c.add_argument("b", help="run directory B")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=_compare)
    s = sub.add_parser("systems", help="Spider dev EX of the published systems in candidates/spider_dev (cached)")
    s.add_argument("--candidates", default=None, help="systems directory (default: shared candidates/spider_dev)")
    s.add_argument("--data", default=None, help="Spider directory (default: SPIDER_DIR / shared data)")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--out", default=None, help="also write the table as JSON here")
    s.set_defaults(func=_systems)
    from eval.linking import add_parser as add_linking_parser

    add_linking_parser(sub)
    from eval.routing_cli import add_routing_parser

    add_routing_parser(sub)

    def _help(args):
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=_help)


def _csv(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _dataset_args(d: argparse.ArgumentParser, ds: str) -> None:
    default = spider_dir() if ds == "spider" else bird_dir()
    d.add_argument("--data", default=None, help=f"dataset directory (default: {default})")
    if ds == "bird":
        d.add_argument("--variant", choices=("dev", "mini_dev"), default=None, help="BIRD dev or mini-dev (default: guess)")
    sel = d.add_argument_group("selection")
    sel.add_argument("--limit", type=int, default=None, help="first N questions (random N with --seed)")
    sel.add_argument("--seed", type=int, default=None, help="random subset seed (with --limit)")
    sel.add_argument("--indices", default=None, help="file of 0-based indices (one per line) or a comma list")
    sel.add_argument("--db-ids", default=None, help="comma-separated database ids")
    sel.add_argument("--difficulty", default=None, help="comma-separated difficulty levels")
    mode = d.add_argument_group("mode (default: end-to-end through the pipeline)")
    mode.add_argument("--predictions", default=None, help="official-format file: one SQL per line (optionally \\t<db_id>)")
    mode.add_argument("--replay", default=None, help="candidate-pool JSONL to replay (no generator)")
    mode.add_argument("--systems", default=None, help="replay a pool built from these published systems (comma list, or 'all')")
    mode.add_argument("--policy", default=None, help="selection policy (first, vote, hybrid, rerank, check-rerank)")
    mode.add_argument("--discriminator", default=None, help="configured discriminator name (replay: scores candidates)")
    mode.add_argument("--budget", type=int, default=None, help="discriminator reasoning budget (tokens)")
    mode.add_argument("--scores-cache", default=None, help="replay: scores cache file (default under the cache dir)")
    mode.add_argument("--score-batch", type=int, default=8,
                      help="replay: questions whose candidates the discriminator scores in one batch (default 8)")
    mode.add_argument("--n", type=int, default=None, help="end-to-end: candidates per question")
    mode.add_argument("--config", default=None, help="end-to-end/replay: config file for the pipeline")
    mode.add_argument("--deadline", type=float, default=None, help="end-to-end: per-question deadline in seconds "
                      "(default: the config's; CPU runs of the embedded model may need more)")
    run = d.add_argument_group("run")
    run.add_argument("--out", default=None, help="output directory (default: runs/eval/<dataset>-<mode>-<time>)")
    run.add_argument("--workers", type=int, default=2, help="processes for SQL comparison")
    run.add_argument("--timeout", type=float, default=None, help="per-query timeout in seconds (official default)")
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
    from eval.datasets import DatasetError, load_examples, read_index_file

    ds = args.dataset
    filters = {"db_ids": _csv(args.db_ids), "difficulty": _csv(args.difficulty), "limit": args.limit,
               "seed": args.seed}
    pool_mode = bool(args.replay or args.systems)
    if pool_mode and args.replay:  # --limit/--seed pick pool questions, not dataset questions
        filters.pop("limit")
        filters.pop("seed")
    try:
        filters["indices"] = _indices(args.indices)
        if ds == "bird":
            filters["variant"] = args.variant
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
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{ds}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    meta = {"dataset": ds, "mode": mode, "data": str(args.data or (spider_dir() if ds == "spider" else bird_dir())),
            "n": len(examples), "policy": args.policy, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    replay_summary = None
    try:
        if mode == "predictions":
            from eval.runner import read_prediction_file, run_predictions

            n_total = _dataset_size(ds, args)
            preds = read_prediction_file(args.predictions, examples, n_total)
            meta["predictions"] = str(args.predictions)
            run_predictions(examples, preds, out, dataset=ds, workers=args.workers, timeout=args.timeout,
                            resume=not args.no_resume, progress=progress)
        elif mode in ("replay", "systems"):
            rc, replay_summary = _replay(args, examples, out, meta, progress)
            if rc:
                return rc
        else:
            _end_to_end(args, examples, out, meta, progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    exclude = None
    wta = Path(args.data or spider_dir()) / "dev_indices_needing_wta1_rankings.txt"
    if ds == "spider" and wta.is_file():
        exclude = read_index_file(wta)
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


def _dataset_size(ds: str, args) -> int:
    """How many questions the whole dataset file holds (prediction files are aligned with it)."""
    root = Path(args.data) if args.data else (spider_dir() if ds == "spider" else bird_dir())
    if ds == "spider":
        f = root / "dev.json"
    else:
        variant = args.variant or ("mini_dev" if (root / "mini_dev_sqlite.json").is_file() else "dev")
        if variant == "mini_dev":
            f = root / "mini_dev_sqlite.json"
            if not f.is_file():
                f = root / "mini_dev" / "mini_dev_sqlite.json"
        else:
            f = root / "dev.json"
    return len(json.loads(f.read_text()))


def _replay(args, examples, out, meta, progress):
    from core.settings import cache_dir
    from eval.pool import build_pool, read_pool
    from eval.replay import ScoresCache, make_discriminator
    from eval.runner import run_replay

    if args.score_batch < 1:
        print("error: --score-batch must be >= 1", file=sys.stderr)
        return 2, None
    if args.systems:
        if args.dataset != "spider":
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
        disc = make_discriminator(args.discriminator, budget=args.budget, config=args.config)
        meta["discriminator"] = args.discriminator
        meta["budget"] = getattr(disc, "budget", args.budget)
        path = args.scores_cache or (cache_dir() / "eval" / "scores" / f"{args.discriminator}.jsonl")
        cache = ScoresCache(path)
        meta["scores_cache"] = str(path)
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
                            progress=progress)
    meta["policy"] = args.policy or ("check-rerank" if disc is not None else "vote")
    return 0, summary


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
    from eval.datasets import read_index_file
    from eval.metrics import ex_rate
    from eval.systems import system_info, system_verdicts

    try:
        v = system_verdicts(workers=args.workers, cache=not args.no_cache, candidates=args.candidates, data_dir=args.data)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = system_info(args.candidates)
    wta_file = Path(args.data or spider_dir()) / "dev_indices_needing_wta1_rankings.txt"
    wta = set(read_index_file(wta_file)) if wta_file.is_file() else set()
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
