"""The `serve` command: run the HTTP planning service.

    sqlarbiter serve [--config F] [--data DIR_OR_FILE ...] [--host 127.0.0.1] [--port 8000] [--log-level L]
                     [--no-warm]

At start-up a background thread warms what the databases' first plans need (`planner.warmup`: the example
store's embeddings, the schema-linking indexes of large schemas); requests that arrive before it is done use
what is ready and say so in the plan (`warnings`, `timings_ms`). `--no-warm` skips it.

`--config` and `--data` are the options every command shares (`cli.options`). Exit status: 0 stopped,
2 bad usage (invalid config, a router that cannot be built).
"""

from __future__ import annotations

import argparse
import sys

from cli.options import add_database_options, config_or_report


def add_to(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="run the HTTP planning service (FastAPI; docs at /docs)",
                       description="Run the planning service with uvicorn. Configuration: --config, else "
                       "$SQLARBITER_CONFIG, else the built-in default (embedded model, demo database).")
    add_database_options(s, db=None)
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level")
    s.add_argument("--no-warm", action="store_true",
                   help="do not warm the example store and the schema indexes in the background at start-up")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    cfg = config_or_report(args)
    if cfg is None:
        return 2
    try:
        app = create_app(cfg)
    except (FileNotFoundError, ValueError) as e:  # ConfigError included: e.g. a router that cannot be built
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.no_warm:
        from planner.warmup import start_background

        start_background(app.state.planner)  # requests meanwhile use what is ready (and say so)
    print(f"sqlarbiter: serving on http://{args.host}:{args.port} (playground: http://{args.host}:{args.port}/ui/; "
          f"docs: /docs; config: {cfg.source})",
          file=sys.stderr)
    # SIGTERM drains: uvicorn stops accepting, then waits for the requests in flight (a plan's deadline at most)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=int(app.state.config.limits.max_deadline_s) + 5)
    return 0
