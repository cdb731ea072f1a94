"""Cold start: a newcomer's first answers (issue 25).

    python -m benchmarks.first_plan [--tree DIR ...] [--db concert_singer] [--question Q] [--skip-merged]
                                    [--serve] [--warm] [--out FILE.json]

For each source tree (default: this one; give `--tree /work/pre25 --tree /work/main` to compare a checkout of the
old code with the new, side by side in one run on the same machine), every step runs as a fresh process
(`python -m cli.main` or `python -c`, cwd and PYTHONPATH = the tree) in a fresh cache dir
(`SQLARBITER_CACHE_DIR`, a temporary folder) into which the converted checkpoints of the current cache dir are
copied (checkpoint conversion is not part of the cold start; the copy time is reported separately):

1. `plan --data <spider>/database --db concert_singer "How many singers are from France?" --no-store --json`:
   the first plan (cold: nothing but the checkpoint cached) and the second (same command again);
2. the schema-linking index of the 843-table merged database (`sqlbox.merged`; the merged file is built first,
   into the same cache dir, and its build is reported separately): one process that builds the index and
   links one question; the build's seconds are the index, the rest is the process;
3. `check --db demo "SELECT 1"`: wall time end to end;
4. `--serve` (with the merged database): `serve --data <merged>` started in a fresh cache dir, and the first
   `POST /plan` ("How many singers do we have?", n=2, deadline_s=120) sent as soon as /health answers: its
   wall time, HTTP status, and what the plan says (status, warnings, timings);
5. `--warm` (trees that have it): `databases warm --data <spider>/database --db concert_singer`, then the first
   plan again in a fresh cache dir after it.

The 1-minute load average is read before and after every step (the machine is shared; a figure under load
says so). Prints a markdown table (one column per tree) and writes the raw figures to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "How many singers are from France?"
MERGED_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from sqlbox.databases import DatabaseRegistry
from sqlbox.index import schema_index
from sqlbox.linking import link
reg = DatabaseRegistry()
reg.register("spider_merged", sys.argv[1])
info, schema = reg.get("spider_merged"), reg.schema("spider_merged")
t1 = time.perf_counter()
lexical_s = None
import sqlbox.index as mod
if hasattr(mod, "build_state"):  # a tree with the staged build: when the lexical stage could link
    schema_index(info, schema, wait=False, wait_s=0)
    while not mod.build_state("spider_merged").startswith(("building (lexical", "ready")):
        time.sleep(0.05)
    lexical_s = time.perf_counter() - t1
idx = schema_index(info, schema)
t2 = time.perf_counter()
res = link("How many singers do we have?", schema, idx)
t3 = time.perf_counter()
print(json.dumps({"introspect_s": t1 - t0, "index_s": t2 - t1, "link_s": t3 - t2, "lexical_s": lexical_s,
                  "tables": len(idx.tables), "columns": len(idx.columns),
                  "linked": res.tables[:5], "prompt_tokens": res.prompt_tokens}))
"""


def load1() -> float:
    return os.getloadavg()[0]


def run(cmd: list[str], tree: Path, env: dict[str, str], timeout: float = 1800) -> dict:
    e = dict(os.environ, **env, PYTHONPATH=str(tree))
    l0 = load1()
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=tree, env=e, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    return {"wall_s": round(wall, 2), "rc": p.returncode, "load_before": round(l0, 2), "load_after": round(load1(), 2),
            "stdout": p.stdout, "stderr": p.stderr[-2000:]}


def fresh_cache(src: Path, keep: list[Path]) -> tuple[Path, float]:
    d = Path(tempfile.mkdtemp(prefix="sqlarbiter-cold-"))
    t = time.perf_counter()
    if (src / "checkpoints").is_dir():
        shutil.copytree(src / "checkpoints", d / "checkpoints")
    keep.append(d)
    return d, time.perf_counter() - t


def plan_step(tree: Path, cache: Path, spider_db: Path, db: str, question: str) -> dict:
    r = run([sys.executable, "-m", "cli.main", "plan", "--data", str(spider_db), "--db", db, question,
             "--no-store", "--json"], tree, {"SQLARBITER_CACHE_DIR": str(cache)})
    try:
        plan = json.loads(r["stdout"][r["stdout"].index("{"):])
        r["timings_ms"] = plan.get("timings_ms", {})
        r["warnings"] = plan.get("warnings", [])
        r["status"] = plan.get("status")
        r["chosen_sql"] = plan.get("chosen_sql")
    except (ValueError, json.JSONDecodeError):
        r["timings_ms"] = {}
    del r["stdout"]
    return r


def bench_trees(trees: list[Path], args, src_cache: Path, keep: list[Path], merged: Path | None) -> list[dict]:
    """Every step for every tree, interleaved step by step (tree A, tree B, then the next step), so both see
    about the same load."""
    outs = [{"tree": str(t)} for t in trees]
    spider_db = Path(args.data) / "database"
    caches = []
    for out in outs:
        cache, copy_s = fresh_cache(src_cache, keep)
        out["checkpoint_copy_s"] = round(copy_s, 2)
        caches.append(cache)

    def each(label: str, f) -> None:
        for tree, out, cache in zip(trees, outs, caches, strict=True):
            print(f"[{tree}] {label} ...", file=sys.stderr, flush=True)
            f(tree, out, cache)
            if args.out:  # partial figures survive a run cut short
                Path(args.out).write_text(json.dumps({"results": outs, "partial": True}, indent=2))

    each("first plan (cold)", lambda t, o, c: o.__setitem__("first_plan", plan_step(t, c, spider_db, args.db, args.question)))
    each("second plan", lambda t, o, c: o.__setitem__("second_plan", plan_step(t, c, spider_db, args.db, args.question)))

    def checks(t, o, c) -> None:
        runs = [run([sys.executable, "-m", "cli.main", "check", "--db", "demo", "SELECT 1"], t,
                    {"SQLARBITER_CACHE_DIR": str(c)}) for _ in range(3)]
        for r in runs:
            r.pop("stdout", None)
        o["check"] = {"runs": runs, "wall_s": sorted(r["wall_s"] for r in runs)[1]}

    each("check x3", checks)
    if merged is not None:
        def merged_index(t, o, c) -> None:
            c2, _ = fresh_cache(src_cache, keep)
            r = run([sys.executable, "-c", MERGED_PROBE, str(merged)], t, {"SQLARBITER_CACHE_DIR": str(c2)})
            try:
                r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
            except (ValueError, IndexError):
                pass
            del r["stdout"]
            o["merged_index"] = r

        each("merged index (cold)", merged_index)
        if args.serve:
            each("serve + first POST /plan on the merged database",
                 lambda t, o, c: o.__setitem__("serve_merged", serve_step(t, fresh_cache(src_cache, keep)[0], merged,
                                                                         args.port)))
    if args.warm:
        def warm(t, o, c) -> None:
            if not (t / "planner" / "warmup.py").is_file():
                return
            c3, _ = fresh_cache(src_cache, keep)
            w = run([sys.executable, "-m", "cli.main", "databases", "warm", "--data", str(spider_db), "--db", args.db],
                    t, {"SQLARBITER_CACHE_DIR": str(c3)})
            w["log"] = w.pop("stdout")[-1500:]
            o["warm"] = w
            o["plan_after_warm"] = plan_step(t, c3, spider_db, args.db, args.question)

        each("databases warm + first plan", warm)
    return outs


def serve_step(tree: Path, cache: Path, merged: Path, port: int, deadline_s: float = 120.0) -> dict:
    import httpx

    e = dict(os.environ, SQLARBITER_CACHE_DIR=str(cache), PYTHONPATH=str(tree))
    l0 = load1()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--data", str(merged), "--port", str(port),
                             "--log-level", "warning"], cwd=tree, env=e, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out: dict = {"load_before": round(l0, 2)}
    try:
        url = f"http://127.0.0.1:{port}"
        while time.perf_counter() - t0 < 300:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        out["startup_s"] = round(time.perf_counter() - t0, 2)
        t = time.perf_counter()
        try:
            r = httpx.post(f"{url}/plan", json={"question": "How many singers do we have?", "db_id": "spider_merged",
                                                "n": 2, "deadline_s": deadline_s}, timeout=deadline_s + 60)
            out["http"] = r.status_code
            body = r.json()
            out.update({k: body.get(k) for k in ("status", "warnings", "timings_ms", "chosen_sql")})
            if r.status_code != 200:
                out["error"] = str(body)[:500]
        except httpx.HTTPError as ex:
            out["http"] = f"{type(ex).__name__}"
        out["wall_s"] = round(time.perf_counter() - t, 2)
        out["deadline_s"] = deadline_s
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    out["load_after"] = round(load1(), 2)
    return out


def _fmt(r: dict | None, key: str = "wall_s") -> str:
    if not r:
        return "-"
    v = r.get(key)
    return "-" if v is None else f"{v:.1f} s (load {r['load_before']:.1f}->{r['load_after']:.1f})"


def table(results: list[dict]) -> str:
    head = "| step | " + " | ".join(Path(r["tree"]).name for r in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]

    def row(name: str, f) -> None:
        lines.append(f"| {name} | " + " | ".join(f(r) for r in results) + " |")

    row("first plan, cold cache (wall)", lambda r: _fmt(r["first_plan"]))
    row("  of which generate (ms)", lambda r: str(round(r["first_plan"]["timings_ms"].get("generate", 0))))
    row("  few_shot (ms)", lambda r: str(r["first_plan"]["timings_ms"].get("few_shot", "-")))
    row("second plan (wall)", lambda r: _fmt(r["second_plan"]))
    row("  of which generate (ms)", lambda r: str(round(r["second_plan"]["timings_ms"].get("generate", 0))))
    row("merged 843-table index build (s)", lambda r: (f"{r['merged_index'].get('index_s', float('nan')):.1f} "
                                                       f"(load {r['merged_index']['load_before']:.1f}->"
                                                       f"{r['merged_index']['load_after']:.1f})")
        if r.get("merged_index") else "-")
    row("  of which: lexical stage ready, linking possible (s)", lambda r: (
        f"{r['merged_index']['lexical_s']:.1f}" if r.get("merged_index", {}).get("lexical_s") else "-"))
    row("  process wall (introspect + index + link)", lambda r: _fmt(r.get("merged_index")))
    row("check --db demo 'SELECT 1' (median of 3, wall)", lambda r: f"{r['check']['wall_s']:.1f} s (load "
        f"{r['check']['runs'][0]['load_before']:.1f})")
    row("serve: first POST /plan, merged DB (wall, HTTP)", lambda r: (
        f"{_fmt(r['serve_merged'])}, HTTP {r['serve_merged'].get('http')}, {r['serve_merged'].get('status')}"
        if r.get("serve_merged") else "-"))
    row("databases warm (wall)", lambda r: _fmt(r.get("warm")))
    row("first plan after warm (wall)", lambda r: _fmt(r.get("plan_after_warm")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.first_plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=None, help="source tree to run (repeatable; default: this one)")
    ap.add_argument("--data", default=None, help="Spider folder (default: core.settings.spider_dir())")
    ap.add_argument("--db", default="concert_singer")
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--skip-merged", action="store_true", help="skip the merged-database index step")
    ap.add_argument("--warm", action="store_true", help="also: databases warm, then the first plan")
    ap.add_argument("--serve", action="store_true", help="also: serve the merged database, first POST /plan")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default=None, help="write the raw figures as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache dirs")
    args = ap.parse_args(argv)
    from core.settings import cache_dir, spider_dir

    args.data = args.data or str(spider_dir())
    src_cache = cache_dir()
    trees = [Path(t).resolve() for t in (args.tree or [str(Path(__file__).resolve().parent.parent)])]
    keep: list[Path] = []
    merged = None
    merged_s = None
    try:
        if not args.skip_merged:
            from sqlbox.merged import build_merged

            mdir, _ = fresh_cache(src_cache, keep)
            t = time.perf_counter()
            merged = build_merged(Path(args.data) / "database", mdir / "spider_merged.sqlite")
            merged_s = time.perf_counter() - t
        results = bench_trees(trees, args, src_cache, keep, merged)
    finally:
        if not args.keep:
            for d in keep:
                shutil.rmtree(d, ignore_errors=True)
    print(table(results))
    print(f"\n(merged database built in {merged_s:.1f} s, not counted)" if merged_s is not None else "")
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "merged_build_s": merged_s,
                                              "nproc": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
