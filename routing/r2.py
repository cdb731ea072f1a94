"""Route-and-Reason (R2: Shao et al., arXiv 2506.05901) for SQL: a decomposer splits the question into ordered
sub-questions, each a CTE step, and an allocator gives each step to a tier (a configured pair, cheap -> strong).

This module owns what is routing (the decomposer's model call and the composing of the chain run in the planner:
`planner.decompose`, `planner.stepwise`):

- `SubtaskFeatures` -> `vector()`: what the allocator sees of one subtask: its text embedding (the shipped MiniLM,
  `routing.features.Embedder`, projected to 32 dimensions by a fixed random projection), the schema-linking features
  of the tables it names (how many, their columns, whether a named table is among the question's linked tables),
  its step index and position, how many earlier steps it reads, and the decomposer's own confidence.
- `Allocator`: a small torch policy (one hidden layer of 64) over those features -> a distribution over tiers.
- Training in R2's two stages (`fit_supervised`, then `fit_grpo`, which `sqlarbiter route fit-r2` alternates):
  - supervised: cross-entropy on labels (the cheapest tier whose step, continued by the same tier, gives a correct
    query; `planner` computes them by running the tiers);
  - GRPO: per question, G allocations sampled from the policy; reward = EX - lam * cost (cost: the allocation's
    strong-token share, so lam is in units of EX per strong-only cost); advantage = (reward - the group's mean) /
    the group's standard deviation (0 when the group's rewards are all equal); loss = -mean(advantage * log pi(a))
    + beta * KL(pi || the supervised policy). torch computes every gradient; Adam steps once per question group.
- Artifacts: `<path>` (torch state dict + metadata, `weights_only=True`) and `<path>.json`, versioned, with the hash
  of the training questions and the training curve.
- The `r2` router: `decide` names the tiers; `stepwise = True`, the pipeline runs the decompose -> allocate ->
  compose loop.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.model import Plan, RouteDecision
from routing.router import ROUTERS, Escalation, RouteContext
from routing.trim import data_hash

R2_FORMAT_VERSION = 1
EMBED_PROJ = 32
HIDDEN = 64
CHEAP_FEATURES = ("index", "position", "n_steps", "n_needs", "n_tables", "n_columns", "tables_linked", "confidence",
                  "text_words")


@dataclass(frozen=True)
class SubtaskFeatures:
    text: str
    index: int  # 0-based
    n_steps: int
    n_needs: int
    n_tables: int
    n_columns: int  # columns of the tables it names
    tables_linked: float  # share of its tables among the question's linked tables (1.0 when it names none)
    confidence: float  # the decomposer's own confidence, [0, 1]

    def cheap(self) -> list[float]:
        return [float(self.index), self.index / max(self.n_steps - 1, 1), float(self.n_steps), float(self.n_needs),
                float(self.n_tables), math.log1p(self.n_columns), self.tables_linked, self.confidence,
                math.log1p(len(self.text.split()))]


def embed(texts: Sequence[str]):
    """MiniLM embeddings of the subtask texts, projected to EMBED_PROJ dimensions (fixed seed)."""
    import numpy as np

    from routing.features import Embedder, random_projection

    if not texts:
        return np.zeros((0, EMBED_PROJ), dtype=np.float32)
    e = Embedder.encode(list(texts))
    return (e @ random_projection(e.shape[1], EMBED_PROJ, seed=29)).astype(np.float32)


def vectors(feats: Sequence[SubtaskFeatures]):
    """The allocator's input rows: [cheap features | projected embedding]."""
    import numpy as np

    cheap = np.array([f.cheap() for f in feats], dtype=np.float32).reshape(len(feats), len(CHEAP_FEATURES))
    return np.concatenate([cheap, embed([f.text for f in feats])], axis=1)


class Allocator:
    """pi(tier | subtask): one hidden layer of 64 units over `vectors(...)`; tiers are indices into `tiers`."""

    def __init__(self, tiers: Sequence[str], seed: int = 0, meta: dict[str, Any] | None = None):
        import torch
        from torch import nn

        self.tiers = list(tiers)
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(len(CHEAP_FEATURES) + EMBED_PROJ, HIDDEN), nn.Tanh(),
                                 nn.Linear(HIDDEN, len(self.tiers)))
        self.meta = dict(meta or {})

    def logits(self, x):
        import torch

        return self.net(torch.as_tensor(x, dtype=torch.float32))

    def probs(self, feats: Sequence[SubtaskFeatures]):
        import torch

        with torch.no_grad():
            return torch.softmax(self.logits(vectors(feats)), dim=-1).numpy()

    def allocate(self, feats: Sequence[SubtaskFeatures]) -> list[str]:
        """The most probable tier per subtask (inference is greedy)."""
        return [self.tiers[int(i)] for i in self.probs(feats).argmax(axis=-1)] if feats else []

    def copy(self) -> Allocator:
        other = Allocator(self.tiers, meta=dict(self.meta))
        other.net.load_state_dict(self.net.state_dict())
        return other

    # ------------------------------------------------------------------ artifacts
    def save(self, path: str | os.PathLike) -> Path:
        import torch

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format_version": R2_FORMAT_VERSION, "kind": "r2-allocator", "tiers": self.tiers,
                "features": [*CHEAP_FEATURES, f"minilm@{EMBED_PROJ}"], "hidden": HIDDEN,
                "torch_version": torch.__version__}
        meta.pop("path", None)
        torch.save({"state_dict": self.net.state_dict(), "meta": json.dumps(meta, default=str)}, p)
        Path(str(p) + ".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> Allocator:
        import torch

        from routing.carrot import ArtifactError

        p = Path(path)
        if not p.exists():
            raise ArtifactError(f"r2 allocator artifact {p} not found; train one with `sqlarbiter route fit-r2`")
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
            meta = json.loads(blob["meta"])
        except Exception as e:  # noqa: BLE001 - torch raises many kinds on a foreign file
            raise ArtifactError(f"{p}: not an r2 allocator artifact ({type(e).__name__}: {e})") from None
        if meta.get("kind") != "r2-allocator" or meta.get("format_version") != R2_FORMAT_VERSION:
            raise ArtifactError(f"{p}: format {meta.get('kind')!r} v{meta.get('format_version')!r}; this version "
                                f"reads r2-allocator v{R2_FORMAT_VERSION}: retrain it")
        a = cls(meta["tiers"], meta={**meta, "path": str(p)})
        a.net.load_state_dict(blob["state_dict"])
        return a


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Labelled:
    """One training question: its subtasks' features and (supervised stage) the label tier index per subtask."""

    key: str
    feats: tuple[SubtaskFeatures, ...]
    labels: tuple[int, ...] = ()


def fit_supervised(alloc: Allocator, data: Sequence[Labelled], *, epochs: int = 200, lr: float = 0.01,
                   seed: int = 0) -> list[float]:
    """R2's first stage: cross-entropy of the labelled tiers (full batch, Adam). Returns the loss per epoch."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    rows = [(f, y) for d in data for f, y in zip(d.feats, d.labels, strict=True)]
    if not rows:
        return []
    x = torch.as_tensor(vectors([f for f, _ in rows]))
    y = torch.as_tensor(np.array([y for _, y in rows], dtype=np.int64))
    opt = torch.optim.Adam(alloc.net.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        loss = torch.nn.functional.cross_entropy(alloc.logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def group_advantages(rewards: Sequence[float]):
    """GRPO's advantages: (r - mean(r)) / std(r) within one question's group; all zeros when the rewards are equal.
    They sum to zero within the group."""
    import torch

    r = torch.as_tensor(list(rewards), dtype=torch.float32)
    sd = r.std(unbiased=False)
    if len(r) < 2 or float(sd) < 1e-8:
        return torch.zeros_like(r)
    return (r - r.mean()) / sd


# run(question index, allocation: tier names per subtask) -> (correct, strong-token share of the allocation)
AllocationRunner = Callable[[int, list[str]], tuple[bool, float]]


@dataclass
class GrpoReport:
    curve: list[dict[str, float]] = field(default_factory=list)  # per iteration: mean reward, EX, cost share


def fit_grpo(alloc: Allocator, data: Sequence[Labelled], run: AllocationRunner, *, group: int = 8, lam: float = 0.5,
             iterations: int = 10, lr: float = 0.005, beta: float = 0.05, seed: int = 0,
             progress: Callable[[int, dict[str, float]], None] | None = None) -> GrpoReport:
    """R2's second stage (module docstring): per iteration, for every question, `group` allocations sampled from the
    policy (a seeded torch generator), rewards EX - lam * cost from `run`, group-normalised advantages, one Adam step
    per question with a KL penalty (`beta`) to the policy as it was when GRPO started."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ref = alloc.copy()
    opt = torch.optim.Adam(alloc.net.parameters(), lr=lr)
    report = GrpoReport()
    xs = [torch.as_tensor(vectors(d.feats)) for d in data]
    for it in range(iterations):
        rewards_all, ex_all, cost_all = [], [], []
        for qi, d in enumerate(data):
            if not d.feats:
                continue
            logits = alloc.logits(xs[qi])
            dist = torch.distributions.Categorical(logits=logits)
            acts = torch.stack([torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=gen)[:, 0]
                                for _ in range(group)])  # [G, steps]
            rewards = []
            for g in range(group):
                ok, cost = run(qi, [alloc.tiers[int(a)] for a in acts[g]])
                rewards.append(float(ok) - lam * cost)
                ex_all.append(float(ok))
                cost_all.append(cost)
            adv = group_advantages(rewards)
            logp = dist.log_prob(acts).sum(dim=1)  # [G]
            with torch.no_grad():
                ref_logp = torch.log_softmax(ref.logits(xs[qi]), -1)
            kl = (torch.softmax(logits, -1) * (torch.log_softmax(logits, -1) - ref_logp)).sum(-1).mean()
            loss = -(adv * logp).mean() + beta * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            rewards_all += rewards
        row = {"iteration": it, "reward": sum(rewards_all) / max(len(rewards_all), 1),
               "ex": sum(ex_all) / max(len(ex_all), 1), "cost": sum(cost_all) / max(len(cost_all), 1)}
        report.curve.append(row)
        if progress is not None:
            progress(it, row)
    return report


def stamp(alloc: Allocator, data: Sequence[Labelled], **meta: Any) -> None:
    """Record the training data's hash and the settings in the allocator's metadata (saved with the artifact)."""
    alloc.meta.update({"created_at": datetime.now(UTC).isoformat(), "data_hash": data_hash([d.key for d in data]),
                       "n_questions": len(data), **meta})


# ---------------------------------------------------------------------------------------------- the router
@ROUTERS.register("r2", summary="Route-and-Reason: decompose into CTE steps, give each step to a tier by a trained "
                                "allocator", stepwise=True)
class R2Router:
    """Params: tiers (pair names, cheap -> strong; default: every configured pair in order), decomposer (the pair
    whose generator decomposes; default: the last tier), artifact (a trained allocator; without one every step goes
    to `default_tier`), default_tier (default: the first tier), max_steps (6), step_tokens (128)."""

    name = "r2"

    def __init__(self, tiers: Sequence[str] | None = None, decomposer: str | None = None, artifact: str | None = None,
                 default_tier: str | None = None, max_steps: int = 6, step_tokens: int = 128):
        if max_steps < 1 or step_tokens < 1:
            raise ValueError("max_steps and step_tokens must be >= 1")
        self.tiers = list(tiers) if tiers else None
        self.decomposer = decomposer
        self.allocator = Allocator.load(artifact) if artifact else None
        self.default_tier = default_tier
        self.max_steps, self.step_tokens = int(max_steps), int(step_tokens)

    def resolve(self, pairs: Sequence[str]) -> tuple[list[str], str, str]:
        """(tiers, decomposer pair, default tier), checked against the configured pairs."""
        names = list(pairs)
        tiers = self.tiers or names
        decomposer = self.decomposer or tiers[-1]
        default = self.default_tier or tiers[0]
        for p in [*tiers, decomposer, default]:
            if p not in names:
                raise ValueError(f"r2 names unknown pair {p!r}; configured: {', '.join(names)}")
        if self.allocator is not None and self.allocator.tiers != tiers:
            raise ValueError(f"the allocator was trained for tiers {self.allocator.tiers}, not {tiers}")
        return tiers, decomposer, default

    def decide(self, ctx: RouteContext) -> RouteDecision:
        tiers, decomposer, default = self.resolve(ctx.pairs)
        first = ctx.pairs[decomposer]
        return RouteDecision(
            router=self.name, pair=decomposer, generator=first.generator, discriminator=first.discriminator,
            steps=list(dict.fromkeys([decomposer, *tiers])),
            reason=f"r2: {decomposer} decomposes; each step goes to one of {', '.join(tiers)} "
                   + ("by the trained allocator" if self.allocator else f"(no allocator: all to {default})"),
            details={"r2": {"tiers": tiers, "decomposer": decomposer, "default_tier": default,
                            "artifact": (self.allocator.meta.get("path") if self.allocator else None),
                            "max_steps": self.max_steps, "step_tokens": self.step_tokens}})

    def should_escalate(self, plan: Plan, step: int, steps: Sequence[str]) -> Escalation:
        return Escalation(False, "r2 allocates within the query, step by step")

    def update(self, ctx: RouteContext, pair: str, correct: bool, cost: float) -> None:
        return None  # trained offline (`sqlarbiter route fit-r2`)
