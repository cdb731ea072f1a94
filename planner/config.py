"""Service configuration: one TOML (or YAML) file, environment overrides, pydantic validation.

What it owns: the `Config` model (generators, discriminators, pairs, router, defaults, limits, databases,
store URL, API key) and `load_config(path=None) -> Config`.

Where the file comes from: the `path` argument, else the environment variable `SQLARBITER_CONFIG`, else no
file at all, which gives the built-in default: the embedded SmolLM2-135M model for both roles, one pair
`embedded`, the `demo` database, a SQLite store under `core.settings.data_dir()`.

Environment overrides (applied after the file, before validation):

- `SQLARBITER__SECTION__KEY=value` sets `config[section][key]` (any depth, `__` separates levels, names are
  lower-cased); the value is parsed as a TOML value when it parses (`4`, `0.5`, `true`, `"x"`, `[1, 2]`), else
  taken as a plain string. Example: `SQLARBITER__DEFAULTS__N=2`, `SQLARBITER__LIMITS__CONCURRENCY=4`.
- Shortcuts: `SQLARBITER_STORE_URL` (store URL), `SQLARBITER_API_KEY` (turns API-key auth on),
  `SQLARBITER_RUNS_DIR` (the eval runs folder), `SQLARBITER_DATABASES` (extra database files/dirs, separated by the OS path separator, added to the file's list).

See `sqlarbiter.example.toml` for a documented example of every section.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.specs import ModelSpec, PairSpec

ENV_PREFIX = "SQLARBITER__"


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RouterConfig(_Strict):
    """The default router (`name`, one of routing.router.ROUTERS) and its keyword parameters."""

    name: str = "fixed"
    params: dict[str, Any] = Field(default_factory=dict)


class Defaults(_Strict):
    """Per-request defaults; a request may override n and policy."""

    n: int = Field(4, ge=1, le=64, description="candidates generated per question")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(128, ge=1, le=8192, description="generator max new tokens per sample (sampling stops "
                            "earlier, where the SQL ends: the grammar's end, a closed ``` block or a `;`)")
    reasoning_budget: int | None = Field(
        None, ge=1, le=32768,
        description="discriminator max new tokens (its chain of thought). None (default): by device (`reasoning_"
        "budget_for`): the paper's 512 where the discriminator runs on a GPU or a server, CPU_REASONING_BUDGET on the "
        "CPU (chosen by measurement: BENCHMARKS.md, discriminator budgets). A spec's options.budget wins over this.",
    )
    score_per_cluster: bool = Field(
        True, description="the discriminator scores one representative per result cluster (members share a result) "
        "and its score is copied to the members (Score.represented_by); false: every distinct SQL is scored")
    seed: int | None = 0
    policy: str = "check-rerank"
    ranker: str | None = Field(None, description="path of a fitted ranker artifact (`sqlarbiter select fit`) for "
                               "the `ranker` policy and calibrated confidences; reloadable at run time")
    abstain_below: float | None = Field(None, ge=0.0, le=1.0, description="a plan whose confidence is below this "
                                        "gets status low_confidence (the best candidate is still shown)")
    dialect: str = "sqlite"
    schema_max_tokens: int | None = Field(2048, ge=64, description="token budget of the schema prompt")
    schema_sample_rows: int = Field(0, ge=0, le=10)
    schema_linking: Literal["off", "on", "auto"] = Field(
        "auto", description="schema linking (sqlbox.linking): off = the whole schema, truncated to schema_max_tokens; "
        "on = always the linked subset; auto = link only when the whole schema exceeds schema_max_tokens")
    linking_top_k: int = Field(20, ge=1, le=1000, description="tables the linker keeps before its foreign-key closure")
    few_shot: int = Field(3, ge=0, le=16, description="few-shot examples per prompt (the demo database ships 3; "
                          "SQLARBITER_FEW_SHOT adds a JSONL file); 0 turns them off")
    few_shot_retrieval: bool = Field(
        True, description="retrieve the examples most similar to the question (planner.fewshot: masked-question "
        "MiniLM similarity over Spider train for Spider databases and the SQLARBITER_FEW_SHOT file, cross-database); "
        "false: only the asked database's own examples (planner.examples)")


class Limits(_Strict):
    """Bounds that protect the service."""

    n_max: int = Field(16, ge=1, le=256, description="largest n a request may ask for")
    question_max_chars: int = Field(2000, ge=16, le=100_000)
    sql_max_chars: int = Field(20_000, ge=64, le=1_000_000, description="largest SQL accepted by POST /check")
    deadline_s: float = Field(120.0, gt=0, description="default per-request deadline over the whole plan")
    discriminate_s: float | None = Field(
        None, gt=0, description="time budget of one discriminator call: at it, reasoning stops and the verdict is "
        "forced; a call never runs past the plan's deadline less DISCRIMINATE_RESERVE_S either. None (default): by "
        "device (`discriminate_s_for`): CPU_DISCRIMINATE_S on the CPU, none on a GPU or server (only the deadline)")
    generate_s: float | None = Field(
        None, gt=0, description="time budget of one generator call, in seconds of decoding from the first decoded token "
        "(the prompt's prefill does not count): at it, decoding stops and the samples not finished are dropped (the "
        "Plan says how many); a call never runs past the plan's deadline less GENERATE_RESERVE_S "
        "either. None (default): by device (`generate_s_for`): CPU_GENERATE_S for a local generator on the CPU, none "
        "on a GPU or server (only the deadline)")
    max_deadline_s: float = Field(600.0, gt=0, description="largest deadline a request may ask for")
    concurrency: int = Field(1, ge=1, le=256, description="plans computed at once (model calls are blocking)")
    queue_size: int = Field(8, ge=0, le=10_000, description="plans waiting for a worker; beyond it: 429")
    check_concurrency: int | None = Field(
        None, ge=1, le=256, description="POST /check requests run at once (None: one per sandbox worker)")
    check_queue_size: int | None = Field(
        None, ge=0, le=10_000, description="POST /check requests waiting; beyond it: 429 (None: queue_size)")
    exec_timeout_s: float = Field(5.0, gt=0, description="per-candidate execution timeout")
    max_rows: int = Field(10_000, ge=1, description="row cap per execution")
    preview_rows: int = Field(20, ge=1, le=1000, description="rows kept in a preview")
    engine: str = Field("duckdb", description="execution engine for the executability check: duckdb | sqlite")
    isolation: Literal["process", "none"] = Field(
        "process", description="where candidate SQL is parsed and run: `process` = warm sandbox worker processes "
        "with OS limits (sqlbox.isolation; the service process never parses or runs it), `none` = in-process")
    sandbox_workers: int = Field(2, ge=1, le=256, description="sandbox worker processes (isolation = process)")
    sandbox_memory_mb: int = Field(2560, ge=1024, le=1_048_576,
                                   description="address-space limit (RLIMIT_AS) of each sandbox worker, MB")
    max_body_bytes: int = Field(2_000_000, ge=1024, le=1_000_000_000,
                                description="largest request body; larger ones are answered 413 unread")
    torch_threads: int | None = Field(
        1, ge=1, le=1024,
        description="torch intra-op threads for local models (process-wide; None = torch's default, one per core). "
        "Default 1: on the 2-core machine shared with other work, generation at 2 threads took 3x longer than at 1 "
        "(BENCHMARKS.md, CPU generation settings).",
    )

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        if v not in ("duckdb", "sqlite"):
            raise ValueError(f"unknown engine {v!r}; known: duckdb, sqlite")
        return v


class Config(_Strict):
    """The whole service configuration, validated."""

    generators: dict[str, ModelSpec]
    discriminators: dict[str, ModelSpec]
    pairs: dict[str, PairSpec]  # in file order: cheap -> strong (cascades run them in this order)
    router: RouterConfig = Field(default_factory=RouterConfig)
    routers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="parameters for routers a request may name (router name -> params)"
    )
    defaults: Defaults = Field(default_factory=Defaults)
    limits: Limits = Field(default_factory=Limits)
    databases: list[str] = Field(default_factory=list, description="database files, Spider-layout dirs, or server URLs (postgresql://..., mysql://...)")
    privileged_databases: list[str] = Field(
        default_factory=list, description="ids of server databases allowed to use a role that can do more than read "
        "(otherwise refused; every plan on them carries a warning); docs/databases.md")
    store_url: str | None = None  # SQLAlchemy URL; None = sqlite file under data_dir()
    api_key: str | None = None  # when set, every endpoint but /health and /docs needs it
    warmup: bool = False  # load the active models when the service starts
    runs_dir: str | None = Field(None, description="eval runs folder the playground's eval-runs page lists; "
                                 "None = core.settings.runs_dir() (./runs)")
    source: str | None = Field(None, description="where this config came from (file path or 'built-in')")

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Config:
        errors: list[str] = []
        # databases_only (`load_config(registries=False)`, the one-shot `check`): the router and backend names
        # are not checked, so their registries (sklearn, torch) are not imported
        light = bool(info.context and info.context.get("databases_only"))
        if not self.generators:
            errors.append("generators: at least one generator is required")
        if not self.discriminators:
            errors.append("discriminators: at least one discriminator is required")
        if not self.pairs:
            errors.append("pairs: at least one pair is required")
        for name, p in self.pairs.items():
            if p.generator not in self.generators:
                errors.append(f"pairs.{name}.generator: unknown generator {p.generator!r}; known: "
                              f"{', '.join(self.generators) or '(none)'}")
            if p.discriminator not in self.discriminators:
                errors.append(f"pairs.{name}.discriminator: unknown discriminator {p.discriminator!r}; known: "
                              f"{', '.join(self.discriminators) or '(none)'}")
        from planner.select import POLICIES

        if self.defaults.policy not in POLICIES:
            errors.append(f"defaults.policy: unknown policy {self.defaults.policy!r}; known: {', '.join(POLICIES.names())}")
        routers = known_routers() if not light else None
        for where, rname in [("router.name", self.router.name), *((f"routers.{r}", r) for r in self.routers)]:
            if routers is not None and rname not in routers:
                errors.append(f"{where}: unknown router {rname!r}; known: {', '.join(routers.names())}")
        from core.registry import check_options
        from routing.router import check_router_params

        if routers is not None and self.router.name in routers:
            errors += check_router_params(self.router.name, self.router.params, "router.params")
        for rname, params in self.routers.items():
            if routers is not None and rname in routers:
                errors += check_router_params(rname, params, f"routers.{rname}")
        gens, discs = known_backends() if not light else (None, None)
        for role, specs, reg in (("generators", self.generators, gens), ("discriminators", self.discriminators, discs)):
            if reg is None:
                continue  # backends not importable here (e.g. a stripped install): checked when first used
            for name, s in specs.items():
                backend = backend_name(s)
                if backend not in reg:
                    errors.append(f"{role}.{name}.backend: unknown backend {backend!r}; known: {', '.join(reg.names())}")
                elif (options := reg.info(backend).options) is not None:  # the backend's options, typed
                    errors += check_options(options, s.options, f"{role}.{name}.options")
        if self.defaults.n > self.limits.n_max:
            errors.append(f"defaults.n: {self.defaults.n} exceeds limits.n_max ({self.limits.n_max})")
        if self.limits.deadline_s > self.limits.max_deadline_s:
            errors.append("limits.deadline_s: exceeds limits.max_deadline_s")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    # convenience -----------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, ModelSpec]:
        """Generator and discriminator specs by name (what the router sees for costs)."""
        return {**self.generators, **self.discriminators}

    def spec(self, role: str, name: str) -> ModelSpec:
        specs = self.generators if role == "generator" else self.discriminators
        if name not in specs:
            raise ConfigError(f"unknown {role} {name!r}; known: {', '.join(specs)}")
        return specs[name]

    def router_params(self, name: str) -> dict[str, Any]:
        if name == self.router.name:
            return dict(self.router.params)
        return dict(self.routers.get(name, {}))


def backend_name(spec: ModelSpec) -> str:
    """The registry name a spec is created with (see generators/discriminators registries)."""
    return spec.backend


def known_routers():
    """The router registry with every router registered."""
    from routing.registry_all import ROUTERS

    return ROUTERS


def known_backends():
    """(GENERATORS, DISCRIMINATORS) with every backend registered."""
    from discriminators.registry_all import DISCRIMINATORS
    from generators.registry_all import GENERATORS

    return GENERATORS, DISCRIMINATORS


# ----------------------------------------------------------------------------------------------
# Loading


def builtin_dict() -> dict[str, Any]:
    """The configuration used when there is no file: the embedded model for both roles, pair `embedded`."""
    return {
        "generators": {"embedded": {"backend": "embedded"}},
        "discriminators": {"embedded": {"backend": "embedded", "options": {"mode": "cot"}}},
        "pairs": {"embedded": {"generator": "embedded", "discriminator": "embedded"}},
    }


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as e:  # tomllib.TOMLDecodeError and yaml.YAMLError both land here
        raise ConfigError(f"{path}: cannot parse: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/mapping")
    return data


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Apply SQLARBITER__A__B=... overrides and the documented shortcuts to a raw config dict (in place)."""
    env = os.environ if environ is None else environ
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        node = data
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = _parse_env_value(env[key])
    if env.get("SQLARBITER_STORE_URL"):
        data["store_url"] = env["SQLARBITER_STORE_URL"]
    if env.get("SQLARBITER_API_KEY"):
        data["api_key"] = env["SQLARBITER_API_KEY"]
    if env.get("SQLARBITER_RUNS_DIR"):
        data["runs_dir"] = env["SQLARBITER_RUNS_DIR"]
    if env.get("SQLARBITER_DATABASES"):
        from sqlbox.servers.targets import split_database_list

        extra = split_database_list(env["SQLARBITER_DATABASES"])
        data["databases"] = list(data.get("databases") or []) + extra
    return data


def _fill_specs(data: dict[str, Any]) -> None:
    """Model and pair tables are keyed by name; copy the key into `name` and the role into `role`."""
    for section, role in (("generators", "generator"), ("discriminators", "discriminator")):
        specs = data.get(section)
        if isinstance(specs, dict):
            for name, spec in specs.items():
                if isinstance(spec, dict):
                    spec.setdefault("name", name)
                    spec.setdefault("role", role)
    pairs = data.get("pairs")
    if isinstance(pairs, list):  # [[pairs]] array form: each entry has a name
        data["pairs"] = {p.get("name", f"pair{i}"): p for i, p in enumerate(pairs) if isinstance(p, dict)}
        pairs = data["pairs"]
    if isinstance(pairs, dict):
        for name, p in pairs.items():
            if isinstance(p, dict):
                p.setdefault("name", name)


def _format_validation(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid configuration ({source}): " + "; ".join(lines)


def config_from_dict(data: dict[str, Any], *, source: str = "dict", env: dict[str, str] | None = None,
                     registries: bool = True) -> Config:
    """Validate a raw dict (after env overrides) into a Config; a generators/discriminators/pairs section absent
    from `data` takes the built-in default (the embedded model, pair `embedded`)."""
    data = {k: v for k, v in data.items()}
    for section, default in builtin_dict().items():  # a section left out takes the built-in default
        if not data.get(section):
            data[section] = default
    data = apply_env(data, env)
    _fill_specs(data)
    data.setdefault("source", source)
    try:
        return Config.model_validate(data, context=None if registries else {"databases_only": True})
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source)) from None


def load_config(path: str | os.PathLike[str] | None = None, *, env: dict[str, str] | None = None,
                registries: bool = True) -> Config:
    """Load, override from the environment and validate the configuration. See the module docstring.
    `registries=False`: router and backend names unchecked (a command that only reads `databases`)."""
    environ = os.environ if env is None else env
    if path is None and environ.get("SQLARBITER_CONFIG"):
        path = environ["SQLARBITER_CONFIG"]
    if path is None:
        return config_from_dict({}, source="built-in", env=environ, registries=registries)
    p = Path(path).expanduser()
    data = _read_file(p)
    return config_from_dict(data, source=str(p), env=environ, registries=registries)


# ---- discriminator budgets by device (issue 31; measured: BENCHMARKS.md, "Discriminator budgets")
GPU_REASONING_BUDGET = 512  # the paper's budget, on a GPU or behind a server
CPU_REASONING_BUDGET = 64  # the embedded CPU default: where Hit@1/MRR stopped improving on the Qwen x5 pool
CPU_DISCRIMINATE_S = 4.0  # seconds of reasoning per discriminator call on the CPU
DISCRIMINATE_RESERVE_S = 1.0  # a call's deadline leaves this much of the plan's deadline for forcing and select
LOCAL_DISCRIMINATORS = ("embedded", "transformers", "cot", "logit")

# ---- the generator's time budget by device (issue 31; measured: BENCHMARKS.md, "Generation within a time budget")
CPU_GENERATE_S = 4.0  # seconds of decoding per generator call on the CPU (from the first decoded token)
GENERATE_RESERVE_S = 2.0  # a call's deadline leaves this much of the plan's deadline for execute/discriminate/select
LOCAL_GENERATORS = ("embedded", "transformers")


def generate_s_for(config: Config, spec: Any) -> float | None:
    """The per-call time budget of a generator: `limits.generate_s`, or by device (CPU_GENERATE_S for a local
    generator whose device resolves to the CPU, None elsewhere: only the plan's deadline bounds a call)."""
    t = config.limits.generate_s
    if t is not None:
        return float(t)
    if backend_name(spec) not in LOCAL_GENERATORS:
        return None
    from core.runtime.checkpoint import choose_device

    return CPU_GENERATE_S if choose_device((spec.options or {}).get("device", "auto")) == "cpu" else None


def discriminator_on_cpu(spec: Any) -> bool:
    """A local discriminator (embedded/transformers/cot/logit) whose device resolves to the CPU; a server-backed one
    counts as a GPU."""
    if backend_name(spec) not in LOCAL_DISCRIMINATORS:
        return False
    from core.runtime.checkpoint import choose_device

    return choose_device((spec.options or {}).get("device", "auto")) == "cpu"


def reasoning_budget_for(config: Config, spec: Any) -> int:
    """The token budget of a discriminator spec without its own options.budget: `defaults.reasoning_budget`, or by
    device (CPU_REASONING_BUDGET on the CPU, GPU_REASONING_BUDGET elsewhere)."""
    b = config.defaults.reasoning_budget
    if b is not None:
        return int(b)
    return CPU_REASONING_BUDGET if discriminator_on_cpu(spec) else GPU_REASONING_BUDGET


def discriminate_s_for(config: Config, spec: Any) -> float | None:
    """The per-call time budget: `limits.discriminate_s`, or by device (CPU_DISCRIMINATE_S on the CPU, None
    elsewhere: only the plan's deadline bounds a call)."""
    t = config.limits.discriminate_s
    if t is not None:
        return float(t)
    return CPU_DISCRIMINATE_S if discriminator_on_cpu(spec) else None
