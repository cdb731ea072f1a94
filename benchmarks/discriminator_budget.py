"""Discriminator quality against its budget (issue 31): Hit@1, MRR and macro F1 (both conventions of
`eval.metrics`) and the wall time of one discriminator call, at token budgets 32/64/128/256/512 and at time budgets
of 2/4/8 s per call (with the token budget 512), all with verdict forcing (the default profile: schema, chat template,
early stop, forcing), on the shared Qwen2.5-Coder-7B x5 pool.

How: greedy decoding is deterministic, so a call with budget b generates exactly the first b tokens of a call with
a larger budget. Each question's distinct candidates are decoded ONCE, for real, as the pipeline's discriminate
stage does it (one `BatchedGreedy.run_many` call per question, budget 512, early stop, forcing), recording the time of
every decode step from the call's start (prefill included). Every setting is then derived from that call:
- token budget b: each row keeps its first b tokens; a row that had not ended by then is forced at b (one forward
  over prompt + kept tokens + the forcing text: the forcing path of `BatchedGreedy.reference`) and parsed by the
  discriminator's own `_trace`;
- time budget T: the engine stops at the first step whose time from the call's start is >= T; the rows are cut at
  that step's token count and forced the same way.
The wall time of a setting is the recorded time of its last step plus one decode step (the forcing forward over the
cache), or the whole call's time when the setting cuts nothing. `--check K` re-runs the first K questions for real
at token budget 32 and at the smallest time budget and reports the difference to the derived scores.

    python -m benchmarks.discriminator_budget --questions 24 --json runs/disc_budget.json --png docs/img/x.png
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

POOL = "spider_dev_samples/qwen2.5-coder-7b-instruct_T0.8_x5_200q.jsonl"
TOKENS = (32, 64, 128, 256, 512)
SECONDS = (2.0, 4.0, 8.0)


def workload(k: int, start: int = 0) -> list[dict]:
    """The first `k` questions of the pool (from position `start`, in pool order) whose distinct candidates are
    mixed: at least one correct and one wrong by Spider EX (`eval.exec_match`) against the gold SQL."""
    from core.settings import candidates_dir, spider_dir
    from eval.exec_match import verdicts
    from sqlbox.databases import DatabaseRegistry
    from sqlbox.schema import schema_to_prompt

    dev = json.loads((spider_dir() / "dev.json").read_text())
    reg = DatabaseRegistry()
    reg.register_dir(spider_dir() / "database")
    out: list[dict] = []
    schemas: dict[str, str] = {}
    for pos, line in enumerate((candidates_dir() / POOL).read_text().splitlines()):
        if pos < start:
            continue
        row = json.loads(line)
        sqls = list(dict.fromkeys(s for s in row["candidates"] if s and s.strip()))
        ex = dev[row["idx"]]
        db = spider_dir() / "database" / row["db_id"] / f"{row['db_id']}.sqlite"
        labels = [v.ex for v in verdicts("spider", db, ex["query"], sqls)]
        if not (any(labels) and not all(labels)):
            continue
        if row["db_id"] not in schemas:
            schemas[row["db_id"]] = schema_to_prompt(reg.schema(row["db_id"]), max_tokens=2048)
        out.append({"pos": pos, "idx": row["idx"], "db_id": row["db_id"], "question": ex["question"], "sqls": sqls,
                    "labels": labels, "schema": schemas[row["db_id"]]})
        if len(out) == k:
            break
    return out


class Forcer:
    """Verdict forcing at a cut: (P(true), P(false)) after prompt + kept tokens + the forcing text."""

    def __init__(self, disc, eng):
        self.disc, self.eng = disc, eng

    def probs(self, prompt: list[int], gen: list[int]) -> tuple[float, float] | None:
        import torch

        f = self.disc._force_ids(gen, False)
        if not f:
            return None
        with torch.inference_mode():
            x = torch.tensor([list(prompt) + list(gen) + list(f)], device=self.eng.device)
            last = self.eng.model(input_ids=x, attention_mask=torch.ones_like(x), logits_to_keep=1).logits[0, -1]
            return self.eng._verdict_probs(last[None])[0]


def cut_tokens_for_time(step_s: list[float], seconds: float) -> int | None:
    """Tokens a call with time budget `seconds` generates: the engine stops after the first step at or past it
    (None: the call ended before the budget)."""
    for t, s in enumerate(step_s[:-1]):
        if s >= seconds:
            return t + 1
    return None


def derive(disc, forcer: Forcer, q: dict, cut: int | None, reason: str) -> list:
    """The traces of question q's rows when its call is cut after `cut` tokens (None: not cut)."""
    from discriminators.batching import DecodeResult

    out = []
    for row, (prompt, r) in enumerate(zip(q["prompts"], q["results"], strict=True)):
        if cut is None or len(r.tokens) <= cut:
            out.append(disc._trace(prompt, r))
            continue
        key = (row, cut)
        gen = r.tokens[:cut]
        cache = q.setdefault("_forced", {})
        if key not in cache:
            cache[key] = forcer.probs(prompt, gen)
        rr = DecodeResult(gen, r.token_logprobs[:cut], prompt_tokens=r.prompt_tokens, forced=cache[key],
                          ran_out=reason)
        out.append(disc._trace(prompt, rr))
    return out


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(p * (len(xs) - 1)))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=24)
    p.add_argument("--start", type=int, default=0, help="pool position to start the selection at")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--check", type=int, default=2, help="questions re-run for real to check the derivation")
    p.add_argument("--json", default=None)
    p.add_argument("--resume", default=None, help="a pickle of the recorded decodes: reused, and extended")
    p.add_argument("--png", default=None)
    a = p.parse_args(argv)

    import os

    import torch

    from core.runtime.checkpoint import load_checkpoint
    from core.runtime.embedded import embedded_checkpoint
    from discriminators.base import DiscriminationRequest
    from discriminators.cot import CotDiscriminator
    from eval.metrics import discriminator_metrics

    torch.set_num_threads(a.threads)
    t_sel = time.perf_counter()
    qs = workload(a.questions, a.start)
    print(f"{len(qs)} mixed questions selected in {time.perf_counter() - t_sel:.0f} s: "
          f"pool positions {[q['pos'] for q in qs]}", file=sys.stderr, flush=True)
    lm = load_checkpoint(embedded_checkpoint(), name="SmolLM2-135M-Instruct")
    disc = CotDiscriminator(loaded=lm, budget=max(TOKENS), batch_size=16)  # default profile: forcing, early stop
    eng = disc.engine()
    forcer = Forcer(disc, eng)
    warm = CotDiscriminator(loaded=lm, budget=4)
    warm.score(DiscriminationRequest(question=qs[0]["question"], schema=qs[0]["schema"], sqls=qs[0]["sqls"][:1]))
    t_all = time.perf_counter()
    resume = Path(a.resume) if a.resume else None
    done = pickle.loads(resume.read_bytes()) if resume and resume.is_file() else {}
    for i, q in enumerate(qs):
        if q["pos"] in done:  # a decode recorded by an earlier (interrupted) run: same call, same greedy tokens
            q.update(done[q["pos"]])
            continue
        req = DiscriminationRequest(question=q["question"], schema=q["schema"], sqls=q["sqls"])
        t0 = time.perf_counter()
        pre, sufs = disc.prompt_parts(req)
        with lm.lock:
            res, st = eng.run_many([disc._job(pre, sufs)], disc.batch_size)
        q["wall"] = time.perf_counter() - t0
        q["prompts"] = [pre + s for s in sufs]
        q["results"] = res[0]
        q["step_s"] = st.extra["step_s"][0]
        q["steps"] = len(q["step_s"])
        q["load"] = os.getloadavg()[0]
        print(f"[{i + 1}/{len(qs)}] pool {q['pos']} ({len(sufs)} rows): {q['wall']:.1f} s, {q['steps']} steps, "
              f"load {q['load']:.1f}", file=sys.stderr, flush=True)
        if resume:
            done[q["pos"]] = {k: q[k] for k in ("wall", "prompts", "results", "step_s", "steps", "load")}
            resume.write_bytes(pickle.dumps(done))
    decode_s = time.perf_counter() - t_all

    settings = [(f"{b} tokens", "tokens", b) for b in TOKENS] + [(f"{s:g} s (512 tokens)", "time", s) for s in SECONDS]
    rows = []
    per_setting: dict[str, dict] = {}
    for name, kind, val in settings:
        groups, sqls, walls = [], [], []
        kinds: dict[str, int] = {}
        ran_out = 0
        for q in qs:
            dt = statistics.median([b - a for a, b in zip(q["step_s"], q["step_s"][1:], strict=False)] or [0.0])
            if kind == "tokens":
                cut = val if any(len(r.tokens) > val for r in q["results"]) else None
                why = "tokens"
            else:
                cut = cut_tokens_for_time(q["step_s"], val)
                why = "time"
            traces = derive(disc, forcer, q, cut, why)
            # wall of the call: the recorded time of its last step plus the forcing forward (one decode step)
            walls.append(q["wall"] if cut is None else min(q["wall"], q["step_s"][cut - 1] + dt))
            groups.append([(t.score, y) for t, y in zip(traces, q["labels"], strict=True)])
            sqls.append(q["sqls"])
            for t in traces:
                kinds[t.verdict_kind] = kinds.get(t.verdict_kind, 0) + 1
                ran_out += t.ran_out is not None
            q.setdefault("scores", {})[name] = [t.score for t in traces]
        m = discriminator_metrics(groups, sqls=sqls)
        pm = m["paper"]
        r = {"setting": name, "kind": kind, "value": val, "hit_at_1": m["hit_at_1"], "mrr": m["mrr"],
             "macro_f1": m["macro_f1"], "paper_hit_at_1": pm.get("hit_at_1"), "paper_mrr": pm.get("mrr"),
             "paper_macro_f1": pm.get("macro_f1"), "wall_mean": statistics.mean(walls), "wall_p50": _pct(walls, .5),
             "wall_p95": _pct(walls, .95), "wall_max": max(walls), "verdicts": kinds, "ran_out": ran_out}
        rows.append(r)
        per_setting[name] = r
        print(f"{name:>22}: Hit@1 {r['hit_at_1']:.3f} MRR {r['mrr']:.3f} F1 {r['macro_f1']:.3f} | paper Hit@1 "
              f"{r['paper_hit_at_1']:.3f} MRR {r['paper_mrr']:.3f} F1 {r['paper_macro_f1']:.3f} | wall mean "
              f"{r['wall_mean']:.1f} p95 {r['wall_p95']:.1f} max {r['wall_max']:.1f} | {kinds} ran out {ran_out}",
              flush=True)

    check = []
    for q in qs[:a.check]:  # the derivation against real calls
        req = DiscriminationRequest(question=q["question"], schema=q["schema"], sqls=q["sqls"])
        real = CotDiscriminator(loaded=lm, budget=32, batch_size=16).score(req)
        d = max(abs(s.score - x) for s, x in zip(real, q["scores"]["32 tokens"], strict=True))
        check.append({"pos": q["pos"], "setting": "32 tokens", "max_abs_score_diff": d})
        tb = CotDiscriminator(loaded=lm, budget=512, batch_size=16, time_budget_s=SECONDS[0])
        t0 = time.perf_counter()
        realt = tb.score(req)
        wt = time.perf_counter() - t0
        cut = cut_tokens_for_time(q["step_s"], SECONDS[0])
        check.append({"pos": q["pos"], "setting": f"{SECONDS[0]:g} s", "real_wall": wt,
                      "real_tokens": [s.reasoning_tokens for s in realt], "real_ran_out": [s.ran_out for s in realt],
                      "derived_cut": cut, "derived_wall": per_setting[f"{SECONDS[0]:g} s (512 tokens)"]["wall_max"]})
        print("check:", check[-2:], flush=True)

    out = {"questions": [{k: q.get(k) for k in ("pos", "idx", "db_id", "question", "sqls", "labels", "wall", "steps",
                                                 "load")}
                         for q in qs], "rows": rows, "check": check, "decode_s": decode_s,
           "load_avg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"), "threads": a.threads}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    if a.png:
        plot(rows, a.png, len(qs))
    return 0


def plot(rows: list[dict], path: str, n: int) -> Path:
    """Quality (Hit@1, MRR: project convention) against mean wall seconds per call, one point per setting."""
    from eval.plots import _save, plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, marker in (("tokens", "o"), ("time", "s")):
        rs = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["wall_mean"])
        for key, color in (("hit_at_1", "tab:blue"), ("mrr", "tab:orange")):
            ax.plot([r["wall_mean"] for r in rs], [r[key] for r in rs], marker=marker, color=color,
                    linestyle="-" if kind == "tokens" else ":",
                    label=f"{'Hit@1' if key == 'hit_at_1' else 'MRR'}, {'token' if kind == 'tokens' else 'time'} budget")
            for r in rs:
                ax.annotate(r["setting"].split(" (")[0], (r["wall_mean"], r[key]), textcoords="offset points",
                            xytext=(3, 4), fontsize=7)
    ax.set_xlabel("mean wall seconds per discriminator call (one question's candidates)")
    ax.set_ylabel("project convention (mixed questions)")
    ax.set_title(f"SmolLM2-135M discriminator on the Qwen x5 pool, {n} mixed questions, CPU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


if __name__ == "__main__":
    sys.exit(main())
