"""planner.config: file loading (TOML and YAML), built-in default, env overrides, validation messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from core.settings import REPO_ROOT
from planner.config import ConfigError, apply_env, load_config

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_builtin_default_without_file():
    cfg = load_config(env=NO_ENV)
    assert cfg.source == "built-in"
    assert list(cfg.generators) == ["embedded"] and list(cfg.discriminators) == ["embedded"]
    assert cfg.generators["embedded"].backend == "embedded" and cfg.generators["embedded"].role == "generator"
    assert cfg.discriminators["embedded"].role == "discriminator"
    assert list(cfg.pairs) == ["embedded"]
    assert cfg.router.name == "fixed"
    assert cfg.store_url is None and cfg.api_key is None
    assert cfg.defaults.policy == "check-rerank"


def test_example_file_is_valid():
    cfg = load_config(REPO_ROOT / "sqlarbiter.example.toml", env=NO_ENV)
    assert "embedded" in cfg.pairs
    assert cfg.limits.concurrency >= 1 and cfg.limits.queue_size >= 0


def test_toml_file_names_and_pair_order(tmp_path):
    p = write(tmp_path, """
        [generators.small]
        backend = "embedded"
        cost_per_1k_input = 0.1
        cost_per_1k_output = 0.2
        [generators.big]
        backend = "openai"
        url = "http://127.0.0.1:9/v1"
        model = "m"
        [discriminators.judge]
        backend = "embedded"
        [pairs.cheap]
        generator = "small"
        discriminator = "judge"
        [pairs.strong]
        generator = "big"
        discriminator = "judge"
        [defaults]
        n = 3
        policy = "vote"
    """)
    cfg = load_config(p, env=NO_ENV)
    assert list(cfg.pairs) == ["cheap", "strong"]  # file order = cheap -> strong
    assert cfg.generators["big"].name == "big" and cfg.generators["big"].url == "http://127.0.0.1:9/v1"
    assert cfg.generators["small"].cost(1000, 1000) == pytest.approx(0.3)
    assert cfg.defaults.n == 3 and cfg.defaults.policy == "vote"
    assert cfg.source == str(p)


def test_yaml_file(tmp_path):
    p = write(tmp_path, """
        generators: {g: {backend: embedded}}
        discriminators: {d: {backend: embedded}}
        pairs: {p: {generator: g, discriminator: d}}
        limits: {concurrency: 3}
    """, "c.yaml")
    cfg = load_config(p, env=NO_ENV)
    assert cfg.limits.concurrency == 3 and list(cfg.pairs) == ["p"]


def test_config_env_var_names_the_file(tmp_path):
    p = write(tmp_path, "[defaults]\nn = 2\n")
    cfg = load_config(env={"SQLARBITER_CONFIG": str(p)})
    assert cfg.defaults.n == 2 and cfg.source == str(p)


def test_env_overrides_and_shortcuts(tmp_path):
    env = {
        "SQLARBITER__DEFAULTS__N": "2",
        "SQLARBITER__DEFAULTS__TEMPERATURE": "0.3",
        "SQLARBITER__LIMITS__ENGINE": "sqlite",
        "SQLARBITER__WARMUP": "true",
        "SQLARBITER_STORE_URL": "sqlite:////tmp/x.db",
        "SQLARBITER_API_KEY": "s3cret",
        "SQLARBITER_DATABASES": f"{tmp_path}/a.sqlite:{tmp_path}/dir",
        "UNRELATED": "1",
    }
    cfg = load_config(env=env)
    assert cfg.defaults.n == 2 and cfg.defaults.temperature == 0.3
    assert cfg.limits.engine == "sqlite" and cfg.warmup is True
    assert cfg.store_url == "sqlite:////tmp/x.db" and cfg.api_key == "s3cret"
    assert cfg.databases == [f"{tmp_path}/a.sqlite", f"{tmp_path}/dir"]


def test_apply_env_plain_string_values():
    d = apply_env({}, {"SQLARBITER__ROUTER__NAME": "fixed", "SQLARBITER__ROUTER__PARAMS__PAIR": "embedded"})
    assert d == {"router": {"name": "fixed", "params": {"pair": "embedded"}}}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("""
         [generators.g]
         backend = "embedded"
         [discriminators.d]
         backend = "embedded"
         [pairs.fast]
         generator = "x"
         discriminator = "d"
         """, "pairs.fast.generator: unknown generator 'x'; known: g"),
        ("""
         [generators.g]
         backend = "embedded"
         [discriminators.d]
         backend = "embedded"
         [pairs.fast]
         generator = "g"
         discriminator = "nope"
         """, "pairs.fast.discriminator: unknown discriminator 'nope'; known: d"),
        ("[defaults]\npolicy = 'best'\n", "defaults.policy: unknown policy 'best'"),
        ("[router]\nname = 'magic'\n", "router.name: unknown router 'magic'"),
        ("[defaults]\nn = 0\n", "defaults.n"),
        ("[limits]\nengine = 'postgres'\n", "unknown engine 'postgres'"),
        ("[limits]\nconcurrency = 'many'\n", "limits.concurrency"),
        ("[defaults]\nbogus = 1\n", "defaults.bogus: Extra inputs are not permitted"),
        ("""
         [generators.g]
         backend = "warp-drive"
         [discriminators.d]
         backend = "embedded"
         [pairs.p]
         generator = "g"
         discriminator = "d"
         """, "generators.g.backend: unknown backend 'warp-drive'"),
    ],
)
def test_validation_messages_name_the_field(tmp_path, text, expected):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text), env=NO_ENV)
    assert expected in str(ei.value)


def test_missing_and_unparseable_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml", env=NO_ENV)
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(write(tmp_path, "[defaults\nn = 1"), env=NO_ENV)


def test_bad_env_override_is_reported():
    with pytest.raises(ConfigError, match="defaults.n"):
        load_config(env={"SQLARBITER__DEFAULTS__N": "lots"})
