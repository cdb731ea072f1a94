"""`sqlarbiter select fit`: train the `ranker` selection policy and write its artifact.

    sqlarbiter select fit (--replay POOL.jsonl ... | --systems all|A,B,...) [--data DIR] --out FILE
                          [--prior-mode labelled|agreement] [--cv K] [--feedback-store URL] [--limit N]
                          [--workers N] [--quiet]
    sqlarbiter select show FILE

Training data: each pool is replayed (EX labels from the project's evaluator, `eval.exec_match`) and,
with `--feedback-store`, logged plans with correct/incorrect feedback are added. Cross-validation is
GroupKFold by database. The artifact holds the feature list, a hash of the training data, the priors,
the calibrators and the cross-validated metrics; use it with `sqlarbiter eval spider --replay P --ranker
FILE` or as `defaults.ranker` in the service config (POST /ranker/reload picks up a refit).
The artifact is a joblib (pickle) file: load only artifacts you made.

Exit status: 0 written, 2 bad usage (missing files, unknown systems, nothing to train on).
"""

from __future__ import annotations

import json
import sys

from cli.options import add_dataset_option


def add_to(subparsers) -> None:
    p = subparsers.add_parser("select", help="train the learned selection policy (ranker)")
    sub = p.add_subparsers(dest="select_command", metavar="SELECT_COMMAND")
    f = sub.add_parser("fit", help="fit a ranker on labelled replay pools (and logged feedback); write its artifact")
    src = f.add_argument_group("training data (at least one)")
    src.add_argument("--replay", action="append", default=[], metavar="POOL", help="candidate pool JSONL (repeatable)")
    src.add_argument("--systems", default=None, help="a pool of these published systems (comma list, or 'all')")
    src.add_argument("--feedback-store", default=None, metavar="URL",
                     help="plan store URL: add logged plans that have correct/incorrect feedback")
    add_dataset_option(f, "the shared Spider folder")
    f.add_argument("--out", required=True, help="artifact file to write (e.g. runs/ranker.joblib)")
    f.add_argument("--prior-mode", choices=("labelled", "agreement"), default="labelled",
                   help="labelled: per-source priors from the training labels (unseen sources fall back to the "
                   "label-free agreement estimate); agreement: system-agnostic")
    f.add_argument("--cv", type=int, default=5, help="GroupKFold folds by database for calibration and metrics")
    f.add_argument("--limit", type=int, default=None, help="first N questions of each pool")
    f.add_argument("--workers", type=int, default=2)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_fit)
    s = sub.add_parser("show", help="print an artifact's metadata and cross-validated metrics")
    s.add_argument("artifact")
    s.set_defaults(func=cmd_show)

    def _help(args):
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=_help)


def cmd_fit(args) -> int:
    from eval.datasets import DatasetError, load_examples
    from eval.pool import build_pool, read_pool
    from eval.select_fit import collect, fit, plans_with_feedback

    if not (args.replay or args.systems or args.feedback_store):
        print("error: give training data: --replay POOL, --systems all|A,B,... and/or --feedback-store URL",
              file=sys.stderr)
        return 2
    if args.cv < 2:
        print("error: --cv needs K >= 2", file=sys.stderr)
        return 2
    progress = not args.quiet
    qs = []
    sources = []
    try:
        pools = [(p, read_pool(p)) for p in args.replay]
        if args.systems:
            from eval.systems import system_names

            names = system_names() if args.systems == "all" else [x.strip() for x in args.systems.split(",") if x.strip()]
            unknown = sorted(set(names) - set(system_names()))
            if unknown:
                print(f"error: unknown systems {', '.join(unknown)}; choose from: {', '.join(system_names())}",
                      file=sys.stderr)
                return 2
            pools.append((f"systems:{len(names)}", build_pool(names, data_dir=args.data)))
        examples = load_examples("spider", args.data) if pools else []
        for name, entries in pools:
            _, got = collect(entries, examples, workers=args.workers, limit=args.limit, progress=progress)
            for q in got:
                q.pool = name  # positions (order evidence) are estimated per pool
            qs += got
            sources.append(f"{name} ({len(got)} questions)")
        if args.feedback_store:
            got = plans_with_feedback(args.feedback_store)
            for q in got:
                q.pool = "feedback"
            qs += got
            sources.append(f"feedback:{args.feedback_store} ({len(got)} plans)")
        art = fit(qs, mode=args.prior_mode, cv=args.cv, meta={"trained_on": sources})
    except (DatasetError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = art.save(args.out)
    ex = art.cv_metrics.get("ex") or {}
    line = ", ".join(f"{k} {v:.1f}%" for k, v in ex.items() if k != "n" and v is not None)
    print(f"cross-validated ({args.cv} folds by database, {ex.get('n', 0)} questions): {line}")
    print(f"wrote {path} (data hash {art.data_hash[:12]})")
    return 0


def cmd_show(args) -> int:
    from planner.ranker import RankerArtifact

    try:
        art = RankerArtifact.load(args.artifact)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"version": art.version, "prior_mode": art.prior_mode, "data_hash": art.data_hash,
                      "features": art.features, "cv_metrics": art.cv_metrics, "meta": art.meta}, indent=2, default=str))
    return 0
