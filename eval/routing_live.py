"""The live routing study below the question: TRIM's policies, run on real models, on Spider questions.

`sqlarbiter eval routing-live` (cli/commands/eval.py) runs it. Unlike `eval.routing` (logged outcomes of
published systems), every candidate here is written by the configured pairs, step by step, through the same step
loop `/plan` runs (`planner.stepwise.run_chain`, with the planner's tiers, process reward and executor):

- policies: cheap only and strong only (TRIM-Thr at k=0 and k=1), the question-level `cascade` (the cheap chain,
  escalated to the strong chain by the service's own rule `routing.cascade.escalate_reason`, swept over tau: the
  final chain's process reward stands for the top soft score; one candidate, so the vote margin is 1), a TRIM-Thr
  sweep over k, and TRIM-Agg (`routing.trim.fit_policy`, trained on questions of OTHER databases: Spider train,
  with the same models and prices);
- per policy: EX (the Spider evaluator, `eval.exec_match.spider_verdicts`), executable share (the chain runs in
  the project's sandboxed executor), strong decoded tokens and their share of strong-only's, prompt tokens per tier,
  discarded cheap drafts, PRM calls, hand-offs, fallbacks;
- the cost-quality curve (x: strong-token share, y: EX) as a PNG; CPT(95 %): the smallest strong-token share at which
  the envelope of the TRIM policies recovers 95 % of the gap between cheap only and strong only (None when strong
  only does not beat cheap only); dIBC: a policy's gain per unit of strong cost, (EX - EX_cheap) / share, relative
  to strong only's, (EX_strong - EX_cheap) / 1 (TRIM's incremental benefit per cost);
- the sample size a two-sided test at 5 % with 80 % power needs to separate cheap only from strong only at the
  measured rates (so a reader knows whether the curve can separate policies at all).

Decoding is greedy, so every policy sees the same step for the same prefix: `StepMemo` pays for each distinct
(tier, prefix) once. Results stream to outcomes.jsonl; report.json, report.md and curve.png sum them up.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.model import Question
from core.settings import spider_dir
from planner.stepwise import ChainRun, StepMemo, Tier, run_chain, step_request, tier_grammar
from routing.trim import Episode, LearnedPolicy, StepObservation, ThresholdPolicy, TrimSettings, fit_policy

DEFAULT_KS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_TAUS = (0.2, 0.4, 0.5, 0.6, 0.8)


@dataclass(frozen=True)
class StudyQuestion:
    key: str  # split#index
    db_id: str
    question: str
    gold: str
    hardness: str | None = None


def sample_questions(split: str, n: int, seed: int, *, data: str | Path | None = None,
                     exclude_dbs: Sequence[str] = ()) -> list[StudyQuestion]:
    """A fixed-seed sample of `n` Spider questions of `split` ("dev" or "train"), leaving out `exclude_dbs`."""
    from eval.hardness import spider_hardness

    root = Path(data) if data else spider_dir()
    name = {"dev": "dev.json", "train": "train_spider.json"}[split]
    rows = json.loads((root / name).read_text())
    idx = [i for i, r in enumerate(rows) if r["db_id"] not in set(exclude_dbs)]
    pick = sorted(random.Random(seed).sample(idx, min(n, len(idx))))
    out = []
    for i in pick:
        r = rows[i]
        try:
            hard = spider_hardness(r["query"])
        except Exception:  # noqa: BLE001 - hardness is a label for the report, never a reason to drop a question
            hard = None
        out.append(StudyQuestion(key=f"{split}#{i}", db_id=r["db_id"], question=r["question"], gold=r["query"],
                                 hardness=hard))
    return out


@dataclass
class Outcome:
    """One policy on one question."""

    key: str
    policy: str
    ex: bool
    executable: bool
    strong_tokens: int
    cheap_tokens: int
    discarded_tokens: int
    prompt_tokens: dict[str, int]
    prm_calls: int
    handoffs: int
    steps: int
    fallback: str | None
    text: str | None

    def row(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class StepStudy:
    """The planner's two tiers on study questions, with a shared memo; `run(q, policy)` is one chain."""

    planner: Any
    settings: TrimSettings
    prm: Any = None
    memo: StepMemo = field(default_factory=StepMemo)
    _tiers: dict[str, tuple[Tier, Tier]] = field(default_factory=dict)
    _judged: dict[tuple[str, str], tuple[bool, bool]] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _backends: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> StepStudy:
        from planner.prm import ProcessReward

        cfg = self.planner.config
        for pair in (self.settings.cheap, self.settings.strong):
            gen = cfg.pairs[pair].generator
            if gen not in self._backends:
                self._backends[gen] = self._stack.enter_context(self.planner.generators.acquire(gen))[1]
        disc = None
        if self.settings.use_verdict:
            _, disc = self._stack.enter_context(
                self.planner.step_discriminator(cfg.pairs[self.settings.cheap].discriminator, self.settings.prm_mode,
                                                self.settings.step_kind))
        self.prm = ProcessReward(discriminator=disc, executor=self.planner.executor,
                                 use_verdict=self.settings.use_verdict, use_execution=self.settings.use_execution,
                                 kind=self.settings.step_kind)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def tiers(self, q: StudyQuestion) -> tuple[Tier, Tier]:
        if q.key not in self._tiers:
            question = Question(text=q.question, db_id=q.db_id, id=q.key)
            prompt = self.planner.schema_prompt(q.db_id, question)
            out = []
            for pair in (self.settings.cheap, self.settings.strong):
                gen = self.planner.config.pairs[pair].generator
                b = self._backends[gen]
                kind = self.settings.step_kind
                out.append(Tier(pair, gen, b, step_request(self.planner, question, pair, prompt, None, kind),
                                tier_grammar(self.planner, q.db_id, b, kind)))
            self._tiers[q.key] = (out[0], out[1])
        return self._tiers[q.key]

    def chain(self, q: StudyQuestion, policy: Any = None, act: Callable[[StepObservation], bool] | None = None) -> ChainRun:
        cheap, strong = self.tiers(q)
        return run_chain(cheap, strong, self.prm, policy, self.settings, db_id=q.db_id, memo=self.memo, act=act)

    def judge(self, q: StudyQuestion, text: str | None) -> tuple[bool, bool]:
        """(executable in the project's sandbox, EX against the gold by the Spider evaluator), cached per text."""
        if not text:
            return False, False
        key = (q.key, text)
        if key not in self._judged:
            from eval.exec_match import spider_verdicts

            res = self.planner.executor.execute(q.db_id, text, dialect=self.planner.dialect(q.db_id))
            db_path = self.planner.registry.get(q.db_id).path
            (v,) = spider_verdicts(db_path, q.gold, [text])
            self._judged[key] = (bool(res.ok), bool(v.ex) and bool(res.ok))
        return self._judged[key]

    def final_score(self, q: StudyQuestion, run: ChainRun) -> float | None:
        """The process reward of the whole chain (the cascade's stand-in for the top soft score)."""
        if not run.texts or self.prm is None:
            return None
        key = (q.db_id, q.question, *run.texts)
        if key not in self.memo.rewards:
            self.memo.rewards[key] = self.prm.score(question=q.question, schema=self.tiers(q)[0].request.schema,
                                                    evidence=None, db_id=q.db_id, dialect=self.planner.dialect(q.db_id),
                                                    step_texts=list(run.texts), prev_rows=None)
        return float(self.memo.rewards[key].score)

    def outcome(self, q: StudyQuestion, name: str, run: ChainRun) -> Outcome:
        ok, ex = self.judge(q, run.text)
        s = self.settings
        cu = run.usage.get(s.cheap)
        return Outcome(key=q.key, policy=name, ex=ex, executable=ok, strong_tokens=run.strong_tokens,
                       cheap_tokens=cu.completion_tokens if cu else 0,
                       discarded_tokens=cu.discarded_tokens if cu else 0,
                       prompt_tokens={p: u.prompt_tokens for p, u in run.usage.items()}, prm_calls=run.prm_calls,
                       handoffs=run.handoffs, steps=len(run.texts), fallback=run.fallback, text=run.text)


def cascade_outcome(study: StepStudy, q: StudyQuestion, tau: float, cheap_run: ChainRun, strong_run: ChainRun) -> Outcome:
    """The question-level cascade on the two chains, by the service's rule (`routing.cascade`)."""
    from routing.cascade import escalate_reason

    ok, _ = study.judge(q, cheap_run.text)
    score = study.final_score(q, cheap_run) if ok else None
    signals = {"executes": ok, "top_score": score, "margin": 1.0, "n_clusters": 1 if ok else 0}
    why = escalate_reason(signals, tau, 0.0)
    if why is None:
        o = study.outcome(q, f"cascade tau={tau:g}", cheap_run)
        return o
    o = study.outcome(q, f"cascade tau={tau:g}", strong_run)
    cu = cheap_run.usage.get(study.settings.cheap)
    o.cheap_tokens += cu.completion_tokens if cu else 0
    o.discarded_tokens += cu.completion_tokens if cu else 0  # the cheap chain is thrown away
    o.handoffs = len(strong_run.texts)
    return o


# ---------------------------------------------------------------------------------------------- metrics
def summarize(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    by: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by.setdefault(o.policy, []).append(o)
    strong = by.get("strong only") or []
    strong_mean = (sum(o.strong_tokens for o in strong) / len(strong)) if strong else None
    table: dict[str, dict[str, Any]] = {}
    for name, os_ in by.items():
        n = len(os_)
        st = sum(o.strong_tokens for o in os_) / n
        table[name] = {"n": n, "ex": 100.0 * sum(o.ex for o in os_) / n,
                       "executable": 100.0 * sum(o.executable for o in os_) / n,
                       "strong_tokens": st, "strong_share": (st / strong_mean) if strong_mean else None,
                       "cheap_tokens": sum(o.cheap_tokens for o in os_) / n,
                       "discarded_tokens": sum(o.discarded_tokens for o in os_) / n,
                       "prm_calls": sum(o.prm_calls for o in os_) / n,
                       "handoffs": sum(o.handoffs for o in os_) / n, "steps": sum(o.steps for o in os_) / n,
                       "fallbacks": sum(o.fallback is not None for o in os_)}
    return table


def cpt(table: dict[str, dict[str, Any]], target: float = 0.95, family: str = "trim") -> float | None:
    """CPT(target): the smallest strong-token share at which the envelope of the `family` policies (plus cheap only
    at 0 and strong only at 1) reaches EX_cheap + target * (EX_strong - EX_cheap), interpolating linearly between
    envelope points. None when strong only does not beat cheap only."""
    c, s = table.get("cheap only"), table.get("strong only")
    if not c or not s or s["ex"] <= c["ex"]:
        return None
    goal = c["ex"] + target * (s["ex"] - c["ex"])
    pts = sorted({(0.0, c["ex"]), (1.0, s["ex"])} | {(v["strong_share"], v["ex"]) for k, v in table.items()
                                                     if k.startswith(family) and v["strong_share"] is not None})
    env, best = [], -1.0
    for x, y in pts:  # envelope: best EX at cost <= x
        best = max(best, y)
        env.append((x, best))
    prev = None
    for x, y in env:
        if y >= goal:
            if prev is None or prev[1] >= goal:
                return x
            x0, y0 = prev
            return x0 + (goal - y0) * (x - x0) / (y - y0)
        prev = (x, y)
    return None


def delta_ibc(table: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """dIBC per policy: ((EX - EX_cheap) / strong share) / (EX_strong - EX_cheap) - 1 (None without cost or gap)."""
    c, s = table.get("cheap only"), table.get("strong only")
    out: dict[str, float | None] = {}
    if not c or not s or s["ex"] == c["ex"]:
        return {k: None for k in table}
    base = s["ex"] - c["ex"]
    for k, v in table.items():
        share = v.get("strong_share")
        out[k] = None if not share else ((v["ex"] - c["ex"]) / share) / base - 1.0
    return out


def sample_size(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Questions per arm a two-sided two-proportion test needs to tell p1 from p2 (normal approximation)."""
    from statistics import NormalDist

    if p1 == p2:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return math.ceil(z * z * (p1 * (1 - p1) + p2 * (1 - p2)) / (p1 - p2) ** 2)


def plot_curve(table: dict[str, dict[str, Any]], path: Path, title: str, points: Sequence[str] = ()) -> Path:
    """The cost-quality curve; `points`: more policies of `table` drawn as single markers (e.g. the r2 rows)."""
    from eval.plots import plt, save_figure  # eval.plots sets the Agg backend first

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    fams = {"trim k=": ("o-", "TRIM-Thr (k sweep)"), "cascade": ("s--", "cascade (tau sweep)")}
    for pre, (style, label) in fams.items():
        pts = sorted((v["strong_share"], v["ex"]) for k, v in table.items() if k.startswith(pre)
                     and v["strong_share"] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, alpha=0.8)
    extra = [(k, "PDXh<>p"[j % 7]) for j, k in enumerate(points)]
    for k, marker in (("cheap only", "v"), ("strong only", "^"), ("trim learned", "*"), *extra):
        if k in table and table[k]["strong_share"] is not None:
            ax.plot([table[k]["strong_share"]], [table[k]["ex"]], marker, markersize=11, label=k)
    ax.set_xlabel("strong decoded tokens (share of strong only)")
    ax.set_ylabel("EX (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def trim_settings_for(planner, cheap: str | None, strong: str | None, *, max_steps: int | None = None,
                      step_tokens: int | None = None, prm: str | None = None, step_kind: str | None = None):
    """The TrimSettings of the configured `trim` router (its params), with the command line's overrides."""
    import dataclasses

    from routing.trim import TrimRouter

    params = dict(planner.config.router_params("trim"))
    for k in ("policy", "artifact", "k"):
        params.pop(k, None)
    r = TrimRouter(**params)
    s = r.settings(planner.config.pairs)
    upd = {k: v for k, v in {"cheap": cheap, "strong": strong, "max_steps": max_steps, "step_tokens": step_tokens,
                             "step_kind": step_kind}.items() if v is not None}
    if prm is not None:
        upd.update(use_verdict=prm in ("both", "verdict"), use_execution=prm in ("both", "execution"))
    s = dataclasses.replace(s, **upd)
    for p in (s.cheap, s.strong):
        if p not in planner.config.pairs:
            raise ValueError(f"unknown pair {p!r}; configured: {', '.join(planner.config.pairs)}")
    return s


# ---------------------------------------------------------------------------------------------- TRIM-Agg training
def episode_runner(study: StepStudy, questions: Sequence[StudyQuestion]) -> Callable[..., Episode]:
    """`routing.trim.EpisodeRunner` over `questions`: question i's chain with `act` deciding each hand-off, and its
    outcome (EX by the Spider evaluator, strong decoded tokens)."""

    def env(i: int, act: Callable[[StepObservation], bool]) -> Episode:
        q = questions[i]
        run = study.chain(q, act=act)
        _, ex = study.judge(q, run.text)
        decisions = [(StepObservation(index=s["index"], score=s["observation"]["score"], tokens=s["observation"]["tokens"],
                                      product=s["observation"]["product"], minimum=s["observation"]["minimum"]),
                      bool(s["handed_off"])) for s in run.steps if "observation" in s]
        return Episode(decisions=decisions, correct=ex, strong_tokens=run.strong_tokens)

    return env


def train_policy(study: StepStudy, questions: Sequence[StudyQuestion], *, price: float = 0.002, epochs: int = 100,
                 seed: int = 0, out: Path | None = None, progress: bool = True) -> tuple[LearnedPolicy, list[dict]]:
    """Train TRIM-Agg (`routing.trim.fit_policy`) on `questions`' chains; saved to `out` when given."""
    from tqdm import tqdm

    bar = tqdm(total=epochs, desc="train TRIM-Agg", disable=not progress)

    def tick(epoch: int, row: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward']:.3f}", ex=f"{row['ex']:.2f}")

    learned, rep = fit_policy(episode_runner(study, questions), len(questions), keys=[q.key for q in questions],
                              price=price, epochs=epochs, seed=seed, progress=tick)
    bar.close()
    learned.meta["settings"] = study.settings.to_dict()
    if out is not None:
        learned.meta["path"] = str(learned.save(out))
    return learned, rep.curve


# ---------------------------------------------------------------------------------------------- the study
def run_live_study(planner: Any, settings: TrimSettings, questions: Sequence[StudyQuestion], out: Path, *,
                   ks: Sequence[float] = DEFAULT_KS, taus: Sequence[float] = DEFAULT_TAUS,
                   train: Sequence[StudyQuestion] = (), price: float = 0.002, epochs: int = 100, seed: int = 0,
                   policy_out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every policy on `questions` (module docstring); write outcomes.jsonl, report.json, report.md, curve.png
    under `out`. With `train`, TRIM-Agg is trained on those questions first (saved to `policy_out`)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    learned = None
    curve: list[dict[str, float]] = []
    with StepStudy(planner, settings) as study, (out / "outcomes.jsonl").open("w") as f:
        if train:
            learned, curve = train_policy(study, train, price=price, epochs=epochs, seed=seed, out=policy_out,
                                          progress=progress)
        policies: list[tuple[str, Any]] = [("cheap only", ThresholdPolicy(0.0)), ("strong only", ThresholdPolicy(1.0))]
        policies += [(f"trim k={k:g}", ThresholdPolicy(k)) for k in ks]
        if learned is not None:
            policies.append(("trim learned", learned))
        for q in tqdm(questions, desc="live study", disable=not progress):
            runs: dict[str, ChainRun] = {}
            for name, pol in policies:
                runs[name] = study.chain(q, pol)
                o = study.outcome(q, name, runs[name])
                outcomes.append(o)
                f.write(json.dumps({**o.row(), "hardness": q.hardness, "db_id": q.db_id}) + "\n")
            for tau in taus:
                o = cascade_outcome(study, q, tau, runs["cheap only"], runs["strong only"])
                outcomes.append(o)
                f.write(json.dumps({**o.row(), "hardness": q.hardness, "db_id": q.db_id}) + "\n")
            f.flush()
    table = summarize(outcomes)
    c, s = table["cheap only"], table["strong only"]
    n_needed = sample_size(c["ex"] / 100, s["ex"] / 100)
    report = {"questions": len(questions), "train_questions": len(train), "settings": settings.to_dict(),
              "pairs": {p: planner.config.pairs[p].model_dump() for p in (settings.cheap, settings.strong)},
              "table": table, "cpt95": cpt(table), "cpt95_cascade": cpt(table, family="cascade"),
              "delta_ibc": delta_ibc(table), "sample_size_per_arm": n_needed, "training_curve": curve,
              "memo": {"hits": study.memo.hits, "misses": study.memo.misses, "calls": study.memo.calls()}, "seed": seed, "price": price,
              "elapsed_s": round(time.monotonic() - t0, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot_curve(table, out / "curve.png", f"{len(questions)} Spider questions: {settings.cheap} -> {settings.strong}")
    (out / "report.md").write_text(report_md(report))
    return report


def report_md(r: dict[str, Any]) -> str:
    t = r["table"]
    lines = [f"questions: {r['questions']} (TRIM-Agg trained on {r['train_questions']} of other databases)", "",
             "| policy | EX % | executable % | strong tokens/q | strong share | cheap tokens/q | discarded/q | "
             "PRM calls/q | hand-offs/q | steps/q | fallbacks | dIBC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, v in t.items():
        di = r["delta_ibc"].get(k)
        share = "-" if v["strong_share"] is None else f"{v['strong_share']:.3f}"
        lines.append(f"| {k} | {v['ex']:.1f} | {v['executable']:.1f} | {v['strong_tokens']:.1f} | {share} | "
                     f"{v['cheap_tokens']:.1f} | {v['discarded_tokens']:.1f} | {v['prm_calls']:.2f} | "
                     f"{v['handoffs']:.2f} | {v['steps']:.2f} | {v['fallbacks']} | "
                     f"{'-' if di is None else f'{di:+.2f}'} |")
    c, s = t["cheap only"], t["strong only"]
    lines += ["", f"CPT(95 %) of TRIM-Thr: {r['cpt95']}; of the cascade: {r['cpt95_cascade']}",
              f"cheap only {c['ex']:.1f} % vs strong only {s['ex']:.1f} % EX: a two-sided test at 5 % with 80 % power "
              f"needs {r['sample_size_per_arm']} questions per arm to separate them."]
    return "\n".join(lines) + "\n"
