"""TRIM: targeted stepwise routing (Kapoor et al., ICLR 2026; code: Vansh28Kapoor/TRIM), for SQL written as
CTE steps.

The cheap pair writes each step; a process reward (`planner.prm`) scores it; a policy decides whether the step is
handed off: then the cheap draft is discarded (its tokens still count), the strong pair writes only that step,
continuing the same prefix, and control returns to the cheap pair. The loop itself runs in the planner
(`planner.stepwise`, which owns the models); this module owns what is routing:

- `StepObservation`: TRIM-Agg's state, the same for every policy: the product of the step scores so far (the
  current one included), the current step's score, its tokens, its index and the minimum score so far.
- Policies: `ThresholdPolicy` (TRIM-Thr: hand off when the step's score is below k; k <= 0: cheap only, k >= 1:
  strong only, where the cheap draft is not even written) and `LearnedPolicy` (TRIM-Agg: an actor-critic with 64
  hidden units over the observation; `fit_policy` trains it with REINFORCE and a learned baseline (the critic),
  torch autograd and Adam, on episodes a caller runs; reward = +1 for a correct final query minus `price` per
  strong decoded token). Artifacts are versioned: `<path>` (torch state dict + metadata, loaded with
  `weights_only=True`) and `<path>.json` (the metadata), with the hash of the training questions.
- The `trim` router: its `decide` names the cheap and the strong pair (default: the first and the last configured
  pair) and the policy; `stepwise = True` in its registry entry tells the pipeline to run the step loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.model import Plan, RouteDecision
from routing.router import ROUTERS, Escalation, RouteContext
from sqlbox.steps import step_kind as step_kind_of

TRIM_FORMAT_VERSION = 1
HIDDEN = 64  # TRIM-Agg's actor-critic width
TOKEN_SCALE = 100.0  # step tokens enter the state as tokens / 100


@dataclass(frozen=True)
class StepObservation:
    """The state a policy sees after the cheap pair drafted step `index` (0-based) and the PRM scored it."""

    index: int
    score: float  # the current step's process reward, in [0, 1]
    tokens: int  # the cheap draft's decoded tokens
    product: float  # product of the scores of the accepted steps so far and this one
    minimum: float  # minimum of the same

    def vector(self) -> list[float]:
        return [self.product, self.score, self.tokens / TOKEN_SCALE, float(self.index), self.minimum]


FEATURES = ("product", "score", "tokens/100", "index", "minimum")


class ThresholdPolicy:
    """TRIM-Thr: hand off the step when its score is below `k`. k <= 0 never hands off (no PRM call needed);
    k >= 1 always does (the cheap pair drafts nothing)."""

    kind = "threshold"

    def __init__(self, k: float):
        self.k = float(k)

    @property
    def cheap_only(self) -> bool:
        return self.k <= 0.0

    @property
    def strong_only(self) -> bool:
        return self.k >= 1.0

    def hand_off(self, obs: StepObservation) -> bool:
        return self.strong_only or (not self.cheap_only and obs.score < self.k)

    def describe(self) -> dict[str, Any]:
        return {"policy": "threshold", "k": self.k}


class _ActorCritic:
    """Actor (P(hand off)) and critic (state value) heads on one 64-unit hidden layer each (torch)."""

    def __init__(self, seed: int = 0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        d = len(FEATURES)
        self.actor = nn.Sequential(nn.Linear(d, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
        self.critic = nn.Sequential(nn.Linear(d, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))

    def parameters(self):
        return list(self.actor.parameters()) + list(self.critic.parameters())

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.actor.load_state_dict(sd["actor"])
        self.critic.load_state_dict(sd["critic"])


class LearnedPolicy:
    """TRIM-Agg: hands off when the actor's P(hand off | observation) >= 0.5 (greedy at inference);
    `sample` draws the action during training."""

    kind = "learned"
    cheap_only = False
    strong_only = False

    def __init__(self, net: _ActorCritic | None = None, meta: dict[str, Any] | None = None, seed: int = 0):
        self.net = net or _ActorCritic(seed)
        self.meta = dict(meta or {})

    def p_hand_off(self, obs: StepObservation) -> float:
        import torch

        with torch.no_grad():
            x = torch.tensor([obs.vector()], dtype=torch.float32)
            return float(torch.sigmoid(self.net.actor(x))[0, 0])

    def hand_off(self, obs: StepObservation) -> bool:
        return self.p_hand_off(obs) >= 0.5

    def describe(self) -> dict[str, Any]:
        return {"policy": "learned", "artifact": self.meta.get("path"), "price": self.meta.get("price"),
                "data_hash": self.meta.get("data_hash")}

    # ------------------------------------------------------------------ artifacts
    def save(self, path: str | os.PathLike) -> Path:
        import torch

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format_version": TRIM_FORMAT_VERSION, "kind": "trim-policy", "features": list(FEATURES),
                "hidden": HIDDEN, "torch_version": torch.__version__}
        meta.pop("path", None)
        torch.save({"state_dict": self.net.state_dict(), "meta": json.dumps(meta)}, p)
        Path(str(p) + ".json").write_text(json.dumps(meta, indent=2) + "\n")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> LearnedPolicy:
        import torch

        from routing.carrot import ArtifactError

        p = Path(path)
        if not p.exists():
            raise ArtifactError(f"trim policy artifact {p} not found; train one with "
                                "`sqlarbiter route fit-trim` (docs/routing.md)")
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
            meta = json.loads(blob["meta"])
        except Exception as e:  # noqa: BLE001 - torch/pickle raise many kinds on a foreign file
            raise ArtifactError(f"{p}: not a trim policy artifact ({type(e).__name__}: {e})") from None
        if meta.get("kind") != "trim-policy" or meta.get("format_version") != TRIM_FORMAT_VERSION:
            raise ArtifactError(f"{p}: format {meta.get('kind')!r} v{meta.get('format_version')!r}; this version "
                                f"reads trim-policy v{TRIM_FORMAT_VERSION}: retrain it")
        net = _ActorCritic()
        net.load_state_dict(blob["state_dict"])
        return cls(net, {**meta, "path": str(p)})


def make_policy(policy: str = "threshold", k: float = 0.5, artifact: str | os.PathLike | None = None):
    """The policy a `trim` router runs: "threshold" (TRIM-Thr at k) or "learned" (a TRIM-Agg artifact)."""
    if policy == "threshold":
        if not math.isfinite(float(k)):
            raise ValueError("threshold k must be finite")
        return ThresholdPolicy(k)
    if policy == "learned":
        if artifact is None:
            raise ValueError("the learned trim policy needs `artifact` (from `sqlarbiter route fit-trim`)")
        return LearnedPolicy.load(artifact)
    raise ValueError(f"unknown trim policy {policy!r}; known: threshold, learned")


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Episode:
    """One question's run under a sampling policy: the decisions (observation, handed off) and the outcome."""

    decisions: list[tuple[StepObservation, bool]]
    correct: bool
    strong_tokens: int


# env(i, act) runs question i with `act(obs) -> hand off?` deciding each step, and returns its Episode
EpisodeRunner = Callable[[int, Callable[[StepObservation], bool]], Episode]


@dataclass
class FitReport:
    curve: list[dict[str, float]] = field(default_factory=list)  # per epoch: mean reward, EX, strong tokens


def data_hash(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def reward(ep: Episode, price: float) -> float:
    """TRIM-Agg's reward: +1 for a correct final answer, minus `price` per strong decoded token."""
    return float(ep.correct) - price * ep.strong_tokens


def fit_policy(env: EpisodeRunner, n_questions: int, *, keys: Sequence[str] | None = None, price: float = 0.002,
               epochs: int = 100, lr: float = 0.01, seed: int = 0, entropy: float = 0.05,
               progress: Callable[[int, dict[str, float]], None] | None = None) -> tuple[LearnedPolicy, FitReport]:
    """Train a TRIM-Agg policy by REINFORCE with a learned baseline: per epoch, one episode per question with
    actions sampled from the actor (a seeded torch generator: the same seed, the same episodes); the actor's loss
    is -log pi(a|s) * (R - V(s)) (V: the critic, fitted to R by squared error), minus an entropy bonus. torch
    computes every gradient; Adam steps once per epoch. Deterministic under `seed` when `env` is (greedy decoding,
    memoised steps)."""
    import torch

    torch.manual_seed(seed)
    net = _ActorCritic(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    report = FitReport()
    for epoch in range(epochs):
        logps, ents, values, returns = [], [], [], []
        rewards, correct, strong = [], 0, 0
        for i in range(n_questions):
            taken: list[tuple[Any, Any, Any]] = []

            def act(obs: StepObservation, _taken=taken) -> bool:
                x = torch.tensor([obs.vector()], dtype=torch.float32)
                p = torch.sigmoid(net.actor(x))[0, 0]
                a = bool(torch.rand((), generator=gen) < p.detach())
                lp = torch.log(p + 1e-8) if a else torch.log(1 - p + 1e-8)
                ent = -(p * torch.log(p + 1e-8) + (1 - p) * torch.log(1 - p + 1e-8))
                _taken.append((lp, ent, net.critic(x)[0, 0]))
                return a

            ep = env(i, act)
            r = reward(ep, price)
            rewards.append(r)
            correct += ep.correct
            strong += ep.strong_tokens
            for lp, ent, v in taken:
                logps.append(lp)
                ents.append(ent)
                values.append(v)
                returns.append(r)
        if logps:
            lp_t, ent_t, v_t = torch.stack(logps), torch.stack(ents), torch.stack(values)
            r_t = torch.tensor(returns, dtype=torch.float32)
            adv = (r_t - v_t).detach()
            if len(adv) > 1:  # normalised advantages keep one epoch's step size independent of the reward's scale
                adv = (adv - adv.mean()) / (adv.std() + 1e-6)
            loss = -(lp_t * adv).mean() + torch.nn.functional.mse_loss(v_t, r_t) - entropy * ent_t.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        row = {"epoch": epoch, "reward": sum(rewards) / max(len(rewards), 1), "ex": correct / max(n_questions, 1),
               "strong_tokens": strong / max(n_questions, 1), "decisions": len(logps)}
        report.curve.append(row)
        if progress is not None:
            progress(epoch, row)
    meta = {"created_at": datetime.now(UTC).isoformat(), "price": price, "epochs": epochs, "lr": lr, "seed": seed,
            "n_questions": n_questions, "data_hash": data_hash(list(keys or [])), "curve": report.curve,
            "algorithm": "REINFORCE with a learned baseline (actor-critic, torch autograd, Adam)"}
    return LearnedPolicy(net, meta), report


# ---------------------------------------------------------------------------------------------- the router
@dataclass(frozen=True)
class TrimSettings:
    """What the step loop needs from the router's configuration (recorded in `route.details["trim"]`)."""

    cheap: str
    strong: str
    max_steps: int = 6
    step_tokens: int = 128
    use_verdict: bool = True
    use_execution: bool = True
    prm_mode: str = "logit"
    step_kind: str = "cte"  # "cte" (SQL written as CTE steps) | "prose" (reasoning paragraphs, then the SQL)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@ROUTERS.register("trim", summary="TRIM: the cheap pair writes each CTE step, the strong pair rewrites only the "
                                  "steps the process reward doubts", stepwise=True)
class TrimRouter:
    """Params: cheap, strong (pair names; default: the first and the last configured pair), policy ("threshold" |
    "learned"), k (the threshold, default 0.5), artifact (the learned policy), max_steps (6), step_tokens (decoded
    tokens per step, 128), use_verdict / use_execution (the process reward's parts), prm_mode ("logit": one forward
    pass, or "cot"), step_kind ("cte": each step is a CTE of the query; "prose": each step is a paragraph of
    reasoning before the query, split at blank lines as TRIM's code does; `sqlbox.steps.STEP_KINDS`)."""

    name = "trim"

    def __init__(self, cheap: str | None = None, strong: str | None = None, policy: str = "threshold", k: float = 0.5,
                 artifact: str | None = None, max_steps: int = 6, step_tokens: int = 128, use_verdict: bool = True,
                 use_execution: bool = True, prm_mode: str = "logit", step_kind: str = "cte"):
        if max_steps < 1 or step_tokens < 1:
            raise ValueError("max_steps and step_tokens must be >= 1")
        if prm_mode not in ("logit", "cot"):
            raise ValueError(f"prm_mode must be logit or cot, not {prm_mode!r}")
        self.step_kind = step_kind_of(step_kind).name
        self.cheap, self.strong = cheap, strong
        self.policy = make_policy(policy, k, artifact)
        self.max_steps, self.step_tokens = int(max_steps), int(step_tokens)
        self.use_verdict, self.use_execution, self.prm_mode = bool(use_verdict), bool(use_execution), prm_mode

    def settings(self, pairs: Sequence[str]) -> TrimSettings:
        names = list(pairs)
        cheap = self.cheap or names[0]
        strong = self.strong or names[-1]
        for p in (cheap, strong):
            if p not in names:
                raise ValueError(f"trim names unknown pair {p!r}; configured: {', '.join(names)}")
        return TrimSettings(cheap=cheap, strong=strong, max_steps=self.max_steps, step_tokens=self.step_tokens,
                            use_verdict=self.use_verdict, use_execution=self.use_execution, prm_mode=self.prm_mode,
                            step_kind=self.step_kind)

    def decide(self, ctx: RouteContext) -> RouteDecision:
        s = self.settings(ctx.pairs)
        first = ctx.pairs[s.cheap]
        return RouteDecision(
            router=self.name, pair=s.cheap, generator=first.generator, discriminator=first.discriminator,
            steps=[s.cheap] if s.cheap == s.strong else [s.cheap, s.strong],
            reason=f"trim: {s.cheap} writes each step, {s.strong} rewrites the doubtful ones "
                   f"({json.dumps(self.policy.describe())})",
            details={"trim": {**s.to_dict(), **self.policy.describe()}})

    def should_escalate(self, plan: Plan, step: int, steps: Sequence[str]) -> Escalation:
        return Escalation(False, "trim hands off within the query, step by step")

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        return None  # the learned policy is trained offline (`sqlarbiter route fit-trim`)
