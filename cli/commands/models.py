"""The `models` command: list configured models and backends, prepare the embedded default, serve a local
checkpoint over an OpenAI-compatible API.

    sqlarbiter models list [--config F] [--json]
    sqlarbiter models prepare [--cache-dir DIR]
    sqlarbiter models serve-openai [--model embedded|PATH] [--name NAME] [--host 127.0.0.1] [--port 8001]
                                   [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16]
                                   [--request-log PATH]

Exit status: 0 ok, 1 a checkpoint failed to load/convert, 2 bad usage (bad config).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cli.options import add_config_option


def add_to(subparsers) -> None:
    p = subparsers.add_parser("models", help="list models and backends, prepare the embedded model, serve OpenAI API")
    sub = p.add_subparsers(dest="models_command", metavar="MODELS_COMMAND")

    ls = sub.add_parser("list", help="configured generators/discriminators, registered backends, embedded model status")
    add_config_option(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    pr = sub.add_parser("prepare", help="convert the embedded GGUF model to a cached checkpoint (once)")
    pr.add_argument("--cache-dir", default=None, help="cache root (default: the user cache dir)")
    pr.set_defaults(func=_prepare)

    sv = sub.add_parser("serve-openai", help="serve a local checkpoint with an OpenAI-compatible API")
    sv.add_argument("--model", default="embedded", help="'embedded' or a checkpoint directory / .gguf file")
    sv.add_argument("--name", default=None, help="served model name (default: embedded name or the path's name)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8001)
    sv.add_argument("--device", default="auto")
    sv.add_argument("--dtype", default=None, help="float32, bfloat16, float16 or auto (default: auto; for the "
                    "embedded model, its own default: bf16 Linear weights on a CPU with native bf16)")
    sv.add_argument("--request-log", default=None, metavar="PATH",
                    help="append one JSON line per generation request (endpoint, continue_final_message, prefix, "
                         "prompt_tokens, completion_tokens, n, constrained, time) to PATH")
    sv.set_defaults(func=_serve)

    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _embedded_status() -> dict:
    from core.errors import CheckpointError
    from core.runtime.embedded import _DONE_MARKER, EMBEDDED_NAME, find_embedded_gguf
    from core.settings import cache_dir

    target = cache_dir() / "checkpoints" / EMBEDDED_NAME
    try:
        gguf = str(find_embedded_gguf())
    except CheckpointError as e:
        gguf = f"missing ({e})"
    return {"name": EMBEDDED_NAME, "gguf": gguf, "checkpoint": str(target),
            "converted": (target / _DONE_MARKER).is_file()}


def _list(args) -> int:
    from planner.config import known_backends, load_config

    try:
        cfg = load_config(args.config)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gens, discs = known_backends()
    models = []
    for role, specs in (("generator", cfg.generators), ("discriminator", cfg.discriminators)):
        for name, s in specs.items():
            models.append({"name": name, "role": role, "backend": s.backend,
                           "source": s.path or s.url or ("embedded" if s.backend == "embedded" else None),
                           "model": s.model, "cost_per_1k_input": s.cost_per_1k_input,
                           "cost_per_1k_output": s.cost_per_1k_output, "options": s.options})
    from discriminators.prompts import list_prompts

    out = {"config": cfg.source, "models": models,
           "backends": {"generator": gens.names() if gens else [], "discriminator": discs.names() if discs else []},
           "prompts": list_prompts(), "embedded": _embedded_status()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"config: {cfg.source}")
    w = max(len(m["name"]) for m in models)
    for m in models:
        opts = " ".join(f"{k}={v}" for k, v in m["options"].items())
        print(f"  {m['role']:<13} {m['name']:<{w}}  backend={m['backend']:<12} in/out per 1k: "
              f"{m['cost_per_1k_input']:g}/{m['cost_per_1k_output']:g}  {m['source'] or ''} {opts}".rstrip())
    print(f"generator backends:     {', '.join(out['backends']['generator'])}")
    print(f"discriminator backends: {', '.join(out['backends']['discriminator'])}")
    print(f"discriminator prompts:  {', '.join(out['prompts'])}")
    e = out["embedded"]
    print(f"embedded model: {e['name']} ({'converted' if e['converted'] else 'not converted yet: run `sqlarbiter models prepare`'})"
          f"\n  gguf: {e['gguf']}\n  checkpoint: {e['checkpoint']}")
    return 0


def _prepare(args) -> int:
    from core.errors import CheckpointError
    from core.runtime.embedded import embedded_checkpoint

    t0 = time.perf_counter()
    try:
        path = embedded_checkpoint(Path(args.cache_dir) if args.cache_dir else None)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"embedded checkpoint ready: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _serve(args) -> int:
    import uvicorn

    from api.openai_server import create_openai_app
    from core.errors import CheckpointError
    from core.runtime.checkpoint import load_checkpoint

    try:
        if args.model == "embedded":
            from core.runtime.embedded import EMBEDDED_NAME, embedded_checkpoint, embedded_dtype

            path, default_name = embedded_checkpoint(), EMBEDDED_NAME
            args.dtype = embedded_dtype({"dtype": args.dtype, "device": args.device})
        else:
            path = Path(args.model)
            default_name = path.stem if path.suffix == ".gguf" else path.name
        name = args.name or default_name
        lm = load_checkpoint(path, name=name, device=args.device, dtype=args.dtype or "auto")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"serving {name} ({lm.path}, {lm.device}, {str(lm.dtype).replace('torch.', '')}) at "
          f"http://{args.host}:{args.port}/v1", file=sys.stderr)
    if args.request_log:
        print(f"request log: {args.request_log}", file=sys.stderr)
    uvicorn.run(create_openai_app(name, lm, request_log=args.request_log), host=args.host, port=args.port,
                log_level="info")
    return 0
