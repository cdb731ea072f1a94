"""Route-and-Reason (issue 29), trained and studied live: the allocator's two stages on real step chains, and the r2
router beside cheap only, strong only, the cascade and TRIM on the live routing study's Spider dev sample.

`sqlarbiter route fit-r2` trains an allocator (`train_allocator`); `sqlarbiter eval routing-r2` runs the study
(`run_r2_study`). Both stand on `R2Env`, an environment over the planner:

- `decomposition(i)`: ONE call of the decomposer pair (`planner.decompose.decompose`, with the pair's retrieved
  Spider train examples as lists, as `planner.r2.run_r2` calls it), memoised per question; a refused list is kept
  (`refusal(i)`) and the question then has no subtasks: its answer is the whole-question path, the default (cheap)
  tier's chain (`planner.stepwise.run_chain` with `routing.trim.ThresholdPolicy(0.0)`), as in the pipeline.
- `features(i)`: the allocator's view of the subtasks (`planner.r2.subtask_features`).
- `run(i, allocation) -> (EX, cost)`: the decomposition composed with one tier per subtask
  (`planner.decompose.compose`, under one shared `StepMemo`: decoding is greedy, so each distinct (tier, question,
  prefix) is written once however many allocations share it), judged by `StepStudy.judge` (sandbox + Spider
  evaluator). A composed chain that is not usable falls back to the whole-question path (as the pipeline does);
  the strong tokens the failed attempt spent still count.
- **cost** (`strong_cost`): the allocation's strong decoded tokens / the strong decoded tokens of the SAME
  decomposition composed with every subtask strong (the strong-only composed chain) for that question. So the
  all-strong allocation costs exactly 1.0, the all-cheap one 0.0; a mixed allocation whose chain runs longer than the
  all-strong one can exceed 1. The decomposer's own call is left out: it is the same for every allocation. (In the
  study table, the r2 rows' strong tokens DO include the decomposer's call when the decomposer is the strong tier,
  and their share is relative to the whole-question strong only chain, like every other row.)

Training (`train_allocator`), R2's two stages:

1. supervised labels (`supervised_labels`): for subtask k, the cheapest tier t such that the allocation "steps < k
   by the cheap tier, steps >= k by t" gives a correct query (EX, fallback included: the answer the r2 route would
   give); when no tier does, the strongest tier (docs/routing.md says why). Cross-entropy (`routing.r2.fit_supervised`).
2. GRPO (`routing.r2.fit_grpo`): G allocations per question sampled from the policy, reward EX - lam * cost,
   group-normalised advantages, KL to the policy the stage started from.
3. `rounds` > 1 alternates: each question's label allocation is replaced by the GRPO policy's greedy allocation when
   that earns a strictly higher reward (`improved_labels`), the GRPO policy is fine-tuned on those labels, and GRPO runs
   again from there (its KL anchor moves with it). The default is one round (see docs/routing.md).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.model import Question
from eval.routing_live import (
    DEFAULT_TAUS,
    Outcome,
    StepStudy,
    StudyQuestion,
    cascade_outcome,
    cpt,
    delta_ibc,
    plot_curve,
    sample_size,
    summarize,
)
from planner.decompose import (
    ComposedChain,
    Decomposition,
    DecompositionError,
    compose,
    decompose,
    decomposition_examples,
)
from planner.stepwise import ChainRun, StepMemo
from routing.r2 import Allocator, Labelled, SubtaskFeatures, fit_grpo, fit_supervised, stamp
from routing.trim import ThresholdPolicy

DEFAULT_GROUP = 8
DEFAULT_LAM = 0.25
DEFAULT_ITERATIONS = 10
DEFAULT_ROUNDS = 1
DEFAULT_EPOCHS = 200
DEFAULT_KS = (0.5,)
R2_FAMILY = "r2 "  # the study rows of the r2 router (CPT's family): "r2 no allocator", "r2 supervised", "r2 grpo"


def strong_cost(strong_tokens: int, reference: int) -> float:
    """The cost of an allocation (module docstring): its strong decoded tokens / the strong-only composed chain's.
    With no reference tokens (the strong-only chain decoded nothing): 0.0 when the allocation decoded none either,
    else 1.0."""
    if reference > 0:
        return strong_tokens / reference
    return 0.0 if strong_tokens <= 0 else 1.0


class AllocationEnv(Protocol):
    """What training needs of an environment: the tiers (cheap -> strong), the subtasks' features of question i
    (empty: no usable decomposition, nothing to allocate) and `run(i, allocation) -> (EX, cost)`."""

    tiers: list[str]

    def key(self, i: int) -> str: ...

    def features(self, i: int) -> list[SubtaskFeatures]: ...

    def run(self, i: int, allocation: Sequence[str]) -> tuple[bool, float]: ...


# ---------------------------------------------------------------------------------------------- the live environment
@dataclass
class R2Result:
    """One allocation on one question."""

    allocation: tuple[str, ...]
    ex: bool
    executable: bool
    cost: float
    strong_tokens: int  # decoded by the strong tier (the composed attempt, even when it fell back)
    cheap_tokens: int  # decoded by the cheap tier (the composed attempt + the whole-question fallback)
    discarded_tokens: int  # cheap tokens of a composed attempt that was abandoned for the fallback
    prompt_tokens: dict[str, int]
    strong_steps: int
    steps: int  # steps of the chain that answered
    path: str  # "composed" | "whole"
    fallback: str | None  # why the whole-question path answered (a refused list, an unusable composed chain)
    text: str | None


class R2Env:
    """The r2 route over the planner's tiers on study questions (module docstring). `study`: an entered
    `eval.routing_live.StepStudy` (its tiers, judge and whole-question chains); `decomposer`: the pair that decomposes
    (one of the study's two tiers: it writes with that tier's backend and schema prompt); `shots`: retrieved
    examples for the decomposer (None: the pair's `few_shot`, as the pipeline); `decompose_fn` (tests): replaces
    the decomposer's model call, StudyQuestion -> Decomposition (or raises DecompositionError)."""

    def __init__(self, study: Any, questions: Sequence[StudyQuestion], *, decomposer: str | None = None,
                 max_steps: int = 6, step_tokens: int | None = None, shots: int | None = None,
                 decompose_fn: Callable[[StudyQuestion], Decomposition] | None = None):
        s = study.settings
        self.study, self.questions = study, list(questions)
        self.tiers = [s.cheap, s.strong]
        self.decomposer = decomposer or s.strong
        if self.decomposer not in self.tiers:
            raise ValueError(f"the decomposer must be one of the study's tiers ({', '.join(self.tiers)}), "
                             f"not {self.decomposer!r}")
        self.max_steps, self.step_tokens = int(max_steps), int(step_tokens or s.step_tokens)
        self.shots, self.decompose_fn = shots, decompose_fn
        self._decomp: dict[int, Decomposition | None] = {}
        self._refused: dict[int, DecompositionError] = {}
        self._feats: dict[int, list[SubtaskFeatures]] = {}
        self._results: dict[tuple[int, tuple[str, ...]], R2Result] = {}
        self._reference: dict[int, int] = {}
        self.memo = StepMemo()  # the composed steps of every question and allocation (keyed by tier, request, prefix)
        self.decompose_s = 0.0
        self.compose_s = 0.0

    # ------------------------------------------------------------------ the decomposition
    def key(self, i: int) -> str:
        return self.questions[i].key

    def _tier(self, q: StudyQuestion, pair: str) -> Any:
        cheap, strong = self.study.tiers(q)
        return {cheap.pair: cheap, strong.pair: strong}[pair]

    def decomposition(self, i: int) -> Decomposition | None:
        """The question's decomposition (one decomposer call, memoised); None when the list was refused."""
        if i in self._decomp:
            return self._decomp[i]
        q = self.questions[i]
        t0 = time.monotonic()
        try:
            if self.decompose_fn is not None:
                d = self.decompose_fn(q)
            else:
                planner = self.study.planner
                tier = self._tier(q, self.decomposer)
                question = Question(text=q.question, db_id=q.db_id, id=q.key)
                dialect = planner.dialect(q.db_id)
                k = planner.config.pairs[self.decomposer].few_shot if self.shots is None else self.shots
                examples = decomposition_examples(planner.few_shot(question, None, k=k), dialect)
                d = decompose(tier.backend, q.question, tier.request.schema, planner.registry.schema(q.db_id),
                              examples, dialect, max_steps=self.max_steps)
        except DecompositionError as e:
            self._refused[i] = e
            d = None
        self.decompose_s += time.monotonic() - t0
        self._decomp[i] = d
        return d

    def refusal(self, i: int) -> DecompositionError | None:
        self.decomposition(i)
        return self._refused.get(i)

    def decomposer_tokens(self, i: int) -> tuple[int, int]:
        """(prompt, decoded) tokens of the decomposer's call for question i."""
        d = self.decomposition(i)
        src: Any = d if d is not None else self._refused.get(i)
        return (int(getattr(src, "prompt_tokens", 0) or 0), int(getattr(src, "completion_tokens", 0) or 0))

    def features(self, i: int) -> list[SubtaskFeatures]:
        if i not in self._feats:
            d = self.decomposition(i)
            if d is None:
                self._feats[i] = []
            else:
                from planner.r2 import subtask_features

                q = self.questions[i]
                planner = self.study.planner
                linked = planner.link_schema(Question(text=q.question, db_id=q.db_id, id=q.key))
                self._feats[i] = subtask_features(d, planner.registry.schema(q.db_id),
                                                  linked.tables if linked is not None else None)
        return self._feats[i]

    def n_steps(self, i: int) -> int:
        d = self.decomposition(i)
        return 0 if d is None else len(d)

    # ------------------------------------------------------------------ running an allocation
    def _schema(self, q: StudyQuestion) -> Any:
        return self.study.planner.registry.schema(q.db_id)

    def _compose(self, i: int, allocation: tuple[str, ...]) -> ComposedChain:
        q = self.questions[i]
        d = self.decomposition(i)
        assert d is not None
        t0 = time.monotonic()
        chain = compose(d, [self._tier(q, t) for t in allocation], schema=self._schema(q),
                        dialect=self.study.planner.dialect(q.db_id), step_tokens=self.step_tokens,
                        memo=self.memo)
        self.compose_s += time.monotonic() - t0
        return chain

    def whole(self, i: int) -> ChainRun:
        """The whole-question path: the default (cheap) tier's chain, no decomposition."""
        return self.study.chain(self.questions[i], ThresholdPolicy(0.0))

    def reference(self, i: int) -> int:
        """Strong decoded tokens of the strong-only composed chain (the cost's denominator)."""
        if i not in self._reference:
            n = self.n_steps(i)
            self._reference[i] = self._compose(i, (self.tiers[-1],) * n).tokens(self.tiers[-1]) if n else 0
        return self._reference[i]

    def result(self, i: int, allocation: Sequence[str]) -> R2Result:
        """The r2 route's answer to question i under `allocation` (one tier per subtask; [] for a refused list)."""
        alloc = tuple(allocation)
        memo_key = (i, alloc)
        if memo_key in self._results:
            return self._results[memo_key]
        q = self.questions[i]
        d = self.decomposition(i)
        cheap, strong = self.tiers
        strong_t = cheap_t = discarded = strong_steps = 0
        prompt: dict[str, int] = {}
        text, fallback, path, steps = None, None, "whole", 0
        if d is None:
            e = self._refused.get(i)
            fallback = f"the decomposition was refused ({e.kind}: {e.reason})" if e else "no decomposition"
        else:
            if len(alloc) != len(d):
                raise ValueError(f"{len(alloc)} tiers for the {len(d)} subtasks of {q.key}")
            unknown = [t for t in alloc if t not in self.tiers]
            if unknown:
                raise ValueError(f"unknown tier {unknown[0]!r}; tiers: {', '.join(self.tiers)}")
            chain = self._compose(i, alloc)
            strong_t, cheap_t = chain.tokens(strong), chain.tokens(cheap)
            strong_steps = sum(s["pair"] == strong for s in chain.steps)
            for p, u in chain.usage.items():
                prompt[p] = prompt.get(p, 0) + u.prompt_tokens
            if chain.text is not None:
                text, path, steps = chain.text, "composed", len(chain.texts)
            else:
                fallback = f"the composed chain is not usable ({chain.fallback or 'no chain'})"
                discarded = cheap_t
        if text is None:
            w = self.whole(i)
            text, steps = w.text, len(w.texts)
            for p, u in w.usage.items():
                prompt[p] = prompt.get(p, 0) + u.prompt_tokens
                if p == strong:
                    strong_t += u.completion_tokens
                else:
                    cheap_t += u.completion_tokens
        executable, ex = self.study.judge(q, text)
        cost = strong_cost(strong_t, self.reference(i))
        r = R2Result(allocation=alloc, ex=bool(ex), executable=bool(executable), cost=cost, strong_tokens=strong_t,
                     cheap_tokens=cheap_t, discarded_tokens=discarded, prompt_tokens=prompt,
                     strong_steps=strong_steps, steps=steps, path=path, fallback=fallback, text=text)
        self._results[memo_key] = r
        return r

    def run(self, i: int, allocation: Sequence[str]) -> tuple[bool, float]:
        r = self.result(i, allocation)
        return r.ex, r.cost

    def outcome(self, i: int, name: str, allocation: Sequence[str]) -> Outcome:
        """The allocation as a study row (`eval.routing_live.Outcome`): the decomposer's call is counted on its
        pair (decoded and prompt tokens); `handoffs` = subtasks written by the strong tier."""
        r = self.result(i, allocation)
        dp, dd = self.decomposer_tokens(i)
        cheap, strong = self.tiers
        prompt = dict(r.prompt_tokens)
        prompt[self.decomposer] = prompt.get(self.decomposer, 0) + dp
        return Outcome(key=self.key(i), policy=name, ex=r.ex, executable=r.executable,
                       strong_tokens=r.strong_tokens + (dd if self.decomposer == strong else 0),
                       cheap_tokens=r.cheap_tokens + (dd if self.decomposer == cheap else 0),
                       discarded_tokens=r.discarded_tokens, prompt_tokens=prompt, prm_calls=0,
                       handoffs=r.strong_steps, steps=r.steps, fallback=r.fallback, text=r.text)

    def memo_stats(self) -> dict[str, int]:
        return {"hits": self.memo.hits, "misses": self.memo.misses}


# ---------------------------------------------------------------------------------------------- training
def supervised_labels(env: AllocationEnv, i: int) -> tuple[int, ...]:
    """R2's supervised labels for question i (tier indices): for subtask k, the cheapest tier t whose allocation
    "steps < k cheap, steps >= k by t" gives a correct query; the strongest tier when none does."""
    n = len(env.features(i))
    cheap = env.tiers[0]
    labels = []
    for k in range(n):
        label = len(env.tiers) - 1
        for ti, t in enumerate(env.tiers):
            ok, _ = env.run(i, [cheap] * k + [t] * (n - k))
            if ok:
                label = ti
                break
        labels.append(label)
    return tuple(labels)


def reward(env: AllocationEnv, i: int, allocation: Sequence[str], lam: float) -> float:
    ok, cost = env.run(i, allocation)
    return float(ok) - lam * cost


def improved_labels(env: AllocationEnv, i: int, labels: Sequence[int], alloc: Allocator, lam: float) -> tuple[int, ...]:
    """The alternation's relabelling: the policy's greedy allocation replaces the label allocation when it earns a
    strictly higher reward EX - lam * cost; otherwise the labels stay."""
    feats = env.features(i)
    if not feats:
        return tuple(labels)
    greedy = alloc.allocate(feats)
    current = [env.tiers[y] for y in labels]
    if reward(env, i, greedy, lam) > reward(env, i, current, lam):
        return tuple(env.tiers.index(t) for t in greedy)
    return tuple(labels)


@dataclass
class R2Training:
    """What `train_allocator` returns: the allocator after each stage (name -> a copy: "supervised", "grpo", then
    "supervised (round 2)", "grpo (round 2)", ...), the final one, the labels per question key and round, the GRPO
    curve (per iteration, with its round), the supervised losses, the training data (for `stamp`)."""

    stages: dict[str, Allocator] = field(default_factory=dict)
    final: Allocator | None = None
    labels: list[dict[str, list[str]]] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    sft_losses: list[list[float]] = field(default_factory=list)
    data: list[Labelled] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # questions with no decomposition (nothing to allocate)
    elapsed_s: float = 0.0


def _stage_name(stage: str, rnd: int) -> str:
    return stage if rnd == 0 else f"{stage} (round {rnd + 1})"


def train_allocator(env: AllocationEnv, indices: Sequence[int] | None = None, *, group: int = DEFAULT_GROUP,
                    lam: float = DEFAULT_LAM, iterations: int = DEFAULT_ITERATIONS, rounds: int = DEFAULT_ROUNDS,
                    epochs: int = DEFAULT_EPOCHS, seed: int = 0, n_questions: int | None = None,
                    progress: Callable[[str, int, dict[str, float]], None] | None = None) -> R2Training:
    """R2's two stages on `env`'s questions `indices` (default: 0..n_questions-1): supervised labels and
    cross-entropy, then GRPO; `rounds` > 1 alternates (module docstring). Deterministic under `seed` for a
    deterministic env. `progress(stage, step, row)` is called after every label question and GRPO iteration."""
    if rounds < 1 or group < 2 or iterations < 0 or epochs < 0:
        raise ValueError("rounds >= 1, group >= 2, iterations >= 0 and epochs >= 0")
    t0 = time.monotonic()
    if indices is None:
        if n_questions is None:
            raise ValueError("indices or n_questions")
        indices = range(n_questions)
    out = R2Training()
    keep: list[int] = []
    labels: list[tuple[int, ...]] = []
    for j, i in enumerate(indices):
        feats = env.features(i)
        if not feats:
            out.skipped.append(env.key(i))
        else:
            keep.append(i)
            labels.append(supervised_labels(env, i))
        if progress is not None:
            progress("labels", j, {"kept": len(keep)})
    alloc = Allocator(env.tiers, seed=seed)
    for rnd in range(rounds):
        data = [Labelled(env.key(i), tuple(env.features(i)), y) for i, y in zip(keep, labels, strict=True)]
        out.labels.append({d.key: [env.tiers[y] for y in d.labels] for d in data})
        out.sft_losses.append(fit_supervised(alloc, data, epochs=epochs, seed=seed + rnd))
        out.stages[_stage_name("supervised", rnd)] = alloc.copy()

        def tick(it: int, row: dict[str, float], rnd: int = rnd) -> None:
            if progress is not None:
                progress(_stage_name("grpo", rnd), it, row)

        rep = fit_grpo(alloc, data, lambda qi, a: env.run(keep[qi], a), group=group, lam=lam,
                       iterations=iterations, seed=seed + rnd, progress=tick)
        out.curve += [{"round": rnd + 1, **row} for row in rep.curve]
        out.stages[_stage_name("grpo", rnd)] = alloc.copy()
        out.data = data
        if rnd < rounds - 1:
            labels = [improved_labels(env, i, y, alloc, lam) for i, y in zip(keep, labels, strict=True)]
    out.final = alloc
    out.elapsed_s = round(time.monotonic() - t0, 1)
    return out


def plot_grpo_curve(curve: Sequence[dict[str, float]], path: Path, title: str) -> Path:
    """The GRPO training curve: mean reward, EX and cost per iteration (iterations of every round in a row)."""
    from eval.plots import plt, save_figure  # eval.plots sets the Agg backend first

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    xs = list(range(1, len(curve) + 1))
    for k, style in (("reward", "o-"), ("ex", "s--"), ("cost", "^:")):
        ax.plot(xs, [r[k] for r in curve], style, label={"reward": "reward (EX - lam*cost)", "ex": "EX",
                                                         "cost": "cost (strong-token share)"}[k], alpha=0.85)
    rounds = [r.get("round", 1) for r in curve]
    for j in range(1, len(rounds)):
        if rounds[j] != rounds[j - 1]:
            ax.axvline(j + 0.5, color="grey", lw=0.8, ls="--")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("GRPO iteration")
    ax.set_ylabel("mean over sampled allocations")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def curve_path(artifact: str | Path) -> Path:
    """Where the GRPO curve of an artifact goes: beside it, `<stem>.grpo.png`."""
    p = Path(artifact)
    return p.with_name(p.stem + ".grpo.png")


def save_training(tr: R2Training, out: str | Path, *, lam: float, group: int, iterations: int, rounds: int,
                  seed: int, **meta: Any) -> dict[str, Path]:
    """Save the final allocator at `out` (stamped with the training data's hash and the settings), the supervised
    stage's beside it (`<stem>.supervised<suffix>`), and the GRPO curve (`curve_path(out)`)."""
    assert tr.final is not None
    out = Path(out)
    common = {"lam": lam, "group": group, "iterations": iterations, "rounds": rounds, "seed": seed,
              "cost": "strong decoded tokens / the strong-only composed chain's (eval.r2_live.strong_cost)",
              "labels": tr.labels, "skipped": tr.skipped, **meta}
    stamp(tr.final, tr.data, stage="grpo", grpo_curve=tr.curve,
          sft_loss=[ls[-1] if ls else None for ls in tr.sft_losses], **common)
    sup = tr.stages["supervised"]
    stamp(sup, tr.data, stage="supervised", sft_loss=tr.sft_losses[0][-1] if tr.sft_losses[0] else None, **common)
    paths = {"artifact": tr.final.save(out),
             "supervised": sup.save(out.with_name(out.stem + ".supervised" + (out.suffix or ".pt"))),
             "curve": plot_grpo_curve(tr.curve, curve_path(out),
                                      f"R2 GRPO: {len(tr.data)} questions, G={group}, lam={lam:g}, {rounds} round(s)")}
    tr.final.meta["path"] = str(paths["artifact"])
    return paths


def label_summary(tr: R2Training) -> dict[str, Any]:
    """Counts of the labelled tiers per round, and of the steps per training question."""
    return {"labels": [dict(Counter(t for ts in rnd.values() for t in ts)) for rnd in tr.labels],
            "steps": dict(Counter(len(d.feats) for d in tr.data)), "questions": len(tr.data),
            "skipped": len(tr.skipped)}


def tqdm_progress(enabled: bool) -> tuple[Callable[[str, int, dict[str, float]], None], Callable[[], None]]:
    """A progress callback for `train_allocator` (one tqdm bar per stage) and its closer."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def tick(stage: str, step: int, row: dict[str, float]) -> None:
        if not enabled:
            return
        if stage not in bars:
            for b in bars.values():
                b.close()
            bars.clear()
            bars[stage] = tqdm(desc=f"r2 {stage}")
        bars[stage].update(1)
        bars[stage].set_postfix({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()
                                 if k != "iteration"})

    def close() -> None:
        for b in bars.values():
            b.close()

    return tick, close


# ---------------------------------------------------------------------------------------------- the study
def decomposer_summary(env: R2Env, indices: Sequence[int]) -> dict[str, Any]:
    """The decomposer on these questions: valid share, refusals by kind, steps per question (overall and by
    Spider hardness), tokens per call."""
    n = len(indices)
    valid = [i for i in indices if env.decomposition(i) is not None]
    kinds = Counter(env.refusal(i).kind for i in indices if env.refusal(i) is not None)
    by_h: dict[str, list[int]] = {}
    for i in valid:
        by_h.setdefault(env.questions[i].hardness or "?", []).append(env.n_steps(i))
    toks = [env.decomposer_tokens(i) for i in indices]
    return {"n": n, "valid": len(valid), "valid_share": (len(valid) / n) if n else None,
            "refusals": dict(kinds.most_common()),
            "steps_per_question": (sum(env.n_steps(i) for i in valid) / len(valid)) if valid else None,
            "steps_hist": dict(sorted(Counter(env.n_steps(i) for i in valid).items())),
            "steps_by_hardness": {h: round(sum(v) / len(v), 2) for h, v in sorted(by_h.items())},
            "prompt_tokens": (sum(p for p, _ in toks) / n) if n else None,
            "decoded_tokens": (sum(d for _, d in toks) / n) if n else None}


def run_r2_study(planner: Any, settings: Any, questions: Sequence[StudyQuestion], train: Sequence[StudyQuestion],
                 out: Path, *, decomposer: str | None = None, ks: Sequence[float] = DEFAULT_KS,
                 taus: Sequence[float] = DEFAULT_TAUS, group: int = DEFAULT_GROUP, lam: float = DEFAULT_LAM,
                 iterations: int = DEFAULT_ITERATIONS, rounds: int = DEFAULT_ROUNDS, epochs: int = DEFAULT_EPOCHS,
                 max_steps: int = 6, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """The r2 study (`sqlarbiter eval routing-r2`): train the allocator on `train` (Spider train, other databases),
    then on `questions` run cheap only, strong only, the cascade (tau sweep), TRIM-Thr at `ks`, r2 with no allocator
    (every step to the default, cheap tier), r2 after each training stage, and the decomposition composed all strong;
    write outcomes.jsonl, report.json, report.md, curve.png, the allocators (r2.pt, r2.supervised.pt) and the GRPO
    curve (r2.grpo.png) under `out`."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    with StepStudy(planner, settings) as study, (out / "outcomes.jsonl").open("w") as f:
        tr_env = R2Env(study, train, decomposer=decomposer, max_steps=max_steps)
        tick, close = tqdm_progress(progress)
        t_train = time.monotonic()
        tr = train_allocator(tr_env, group=group, lam=lam, iterations=iterations, rounds=rounds, epochs=epochs,
                             seed=seed, n_questions=len(train), progress=tick)
        close()
        train_s = time.monotonic() - t_train
        paths = save_training(tr, out / "r2.pt", lam=lam, group=group, iterations=iterations, rounds=rounds,
                              seed=seed, decomposer=tr_env.decomposer, settings=settings.to_dict(),
                              questions=[q.key for q in train])
        env = R2Env(study, questions, decomposer=decomposer, max_steps=max_steps)
        cheap, strong = env.tiers
        t_test = time.monotonic()
        for i, q in enumerate(tqdm(questions, desc="r2 study", disable=not progress)):
            rows: list[Outcome] = []
            runs: dict[str, ChainRun] = {}
            for name, pol in [("cheap only", ThresholdPolicy(0.0)), ("strong only", ThresholdPolicy(1.0)),
                              *[(f"trim k={k:g}", ThresholdPolicy(k)) for k in ks]]:
                runs[name] = study.chain(q, pol)
                rows.append(study.outcome(q, name, runs[name]))
            rows += [cascade_outcome(study, q, tau, runs["cheap only"], runs["strong only"]) for tau in taus]
            feats = env.features(i)
            n = len(feats)
            rows.append(env.outcome(i, "r2 no allocator", [cheap] * n))
            for stage, alloc in tr.stages.items():
                rows.append(env.outcome(i, f"r2 {stage}", alloc.allocate(feats) if feats else []))
            rows.append(env.outcome(i, "decomposed strong only", [strong] * n))
            for o in rows:
                outcomes.append(o)
                f.write(json.dumps({**o.row(), "hardness": q.hardness, "db_id": q.db_id,
                                    "decomposition_steps": n}) + "\n")
            f.flush()
        test_s = time.monotonic() - t_test
    table = summarize(outcomes)
    c, s = table["cheap only"], table["strong only"]
    report = {"questions": len(questions), "train_questions": len(train), "settings": settings.to_dict(),
              "pairs": {p: planner.config.pairs[p].model_dump() for p in (settings.cheap, settings.strong)},
              "decomposer": env.decomposer, "lam": lam, "group": group, "iterations": iterations, "rounds": rounds,
              "epochs": epochs, "seed": seed, "ks": list(ks), "taus": list(taus),
              "table": table, "cpt95_r2": cpt(table, family=R2_FAMILY), "cpt95_trim": cpt(table, family="trim"),
              "cpt95_cascade": cpt(table, family="cascade"), "delta_ibc": delta_ibc(table),
              "sample_size_per_arm": sample_size(c["ex"] / 100, s["ex"] / 100),
              "decomposer_test": decomposer_summary(env, range(len(questions))),
              "decomposer_train": decomposer_summary(tr_env, range(len(train))),
              "training": {**label_summary(tr), "grpo_curve": tr.curve,
                           "sft_loss": [ls[-1] if ls else None for ls in tr.sft_losses],
                           "artifact": str(paths["artifact"]), "supervised_artifact": str(paths["supervised"]),
                           "curve_png": str(paths["curve"]), "data_hash": tr.final.meta.get("data_hash") if tr.final else None},
              "memo": {"chains": {"hits": study.memo.hits, "misses": study.memo.misses},
                       "composed": {"train": tr_env.memo_stats(), "test": env.memo_stats()}},
              "seconds": {"train": round(train_s, 1), "test": round(test_s, 1),
                          "train_per_question": round(train_s / len(train), 1) if train else None,
                          "test_per_question": round(test_s / len(questions), 1) if questions else None,
                          "decompose_test": round(env.decompose_s, 1), "compose_test": round(env.compose_s, 1)},
              "elapsed_s": round(time.monotonic() - t0, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    points = [k for k in table if k.startswith(R2_FAMILY) or k == "decomposed strong only"]
    plot_curve(table, out / "curve.png", f"{len(questions)} Spider questions: {settings.cheap} -> {settings.strong} "
                                         "(r2, TRIM, cascade)", points=points)
    (out / "report.md").write_text(report_md(report))
    return report


def _f(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def report_md(r: dict[str, Any]) -> str:
    t = r["table"]
    tr, dt = r["training"], r["decomposer_test"]
    lines = [f"questions: {r['questions']} Spider dev; the allocator trained on {r['train_questions']} Spider train "
             f"questions of other databases ({tr['questions']} with a valid decomposition); decomposer: "
             f"{r['decomposer']}; GRPO G={r['group']}, lam={r['lam']:g}, {r['iterations']} iterations, "
             f"{r['rounds']} round(s)", "",
             "| policy | EX % | executable % | strong tokens/q | strong share | cheap tokens/q | hand-offs (strong "
             "steps)/q | steps/q | fallbacks | dIBC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k, v in t.items():
        di = r["delta_ibc"].get(k)
        lines.append(f"| {k} | {v['ex']:.1f} | {v['executable']:.1f} | {v['strong_tokens']:.1f} | "
                     f"{_f(v['strong_share'])} | {v['cheap_tokens']:.1f} | {v['handoffs']:.2f} | {v['steps']:.2f} | "
                     f"{v['fallbacks']} | {_f(di, '+.2f')} |")
    lines += ["", f"CPT(95 %): r2 {_f(r['cpt95_r2'])}, TRIM-Thr {_f(r['cpt95_trim'])}, cascade "
                  f"{_f(r['cpt95_cascade'])} (None: strong only does not beat cheap only, or the family never "
                  "reaches the goal)",
              f"decomposer on the test questions: {dt['valid']}/{dt['n']} valid "
              f"({_f(dt['valid_share'], '.0%') if dt['valid_share'] is not None else '-'}); refused: "
              + (", ".join(f"{k} {v}" for k, v in dt["refusals"].items()) or "none")
              + f"; steps per valid list {_f(dt['steps_per_question'], '.2f')} {dt['steps_hist']}, by hardness "
                f"{dt['steps_by_hardness']}",
              f"labels (supervised stage, per round): {tr['labels']}; GRPO reward first -> last iteration: "
              + (f"{tr['grpo_curve'][0]['reward']:.3f} -> {tr['grpo_curve'][-1]['reward']:.3f}"
                 if tr["grpo_curve"] else "-") + f" ({tr['curve_png']})",
              "r2 rows: strong tokens include the decomposer's call when the decomposer is the strong tier; "
              "'decomposed strong only' is the decomposition composed with every step strong (the training cost's "
              "reference).",
              f"a two-sided test at 5 % with 80 % power needs {r['sample_size_per_arm']} questions per arm to separate "
              "cheap only from strong only at these rates.",
              f"time: training {r['seconds']['train']} s ({r['seconds']['train_per_question']} s/question), study "
              f"{r['seconds']['test']} s ({r['seconds']['test_per_question']} s/question)"]
    return "\n".join(lines) + "\n"
