"""Extension metadata is typed (one dataclass per registry), a router parameter or a backend option the
extension does not declare is a config error naming the field, and a mistyped option too."""

from __future__ import annotations

import dataclasses

import pytest

from core.registry import Registry, check_options
from planner.config import ConfigError, config_from_dict, known_backends, known_routers


def cfg(data):
    return config_from_dict(data, env={})


@pytest.mark.parametrize("data, needle", [
    ({"routers": {"cascade": {"tau": 0.5, "thresold": 0.2}}}, "routers.cascade.thresold: unknown parameter of router 'cascade'"),
    ({"router": {"name": "cascade", "params": {"tauu": 0.4}}}, "router.params.tauu: unknown parameter of router 'cascade'"),
    ({"routers": {"bandit": {"engine": "x"}}}, "routers.bandit.engine: unknown parameter"),  # passed by the pipeline
    ({"routers": {"fixed": {"pairs": "x"}}}, "routers.fixed.pairs: unknown parameter of router 'fixed'; known: pair"),
])
def test_an_unknown_router_parameter_is_a_config_error_naming_it(data, needle):
    with pytest.raises(ConfigError, match="invalid configuration") as e:
        cfg(data)
    assert needle in str(e.value)


def test_known_router_parameters_pass():
    c = cfg({"router": {"name": "cascade", "params": {"tau": 0.4, "vote_margin": 0.1}},
             "routers": {"bandit": {"alpha": 0.3, "embeddings": False}, "fixed": {"pair": "embedded"}}})
    assert c.router_params("cascade") == {"tau": 0.4, "vote_margin": 0.1}


OPENAI = {"backend": "openai", "url": "http://127.0.0.1:9/v1", "model": "m"}


@pytest.mark.parametrize("data, needle", [
    ({"generators": {"g": {**OPENAI, "options": {"retries": 0}}}},
     "generators.g.options.retries: unknown option; known: timeout, max_retries"),
    ({"generators": {"g": {**OPENAI, "options": {"timeout": "fast"}}}},
     "generators.g.options.timeout: expected float, got 'fast'"),
    ({"generators": {"g": {**OPENAI, "options": {"endpoint": "chats"}}}},
     "generators.g.options.endpoint: expected 'chat' | 'completions', got 'chats'"),
    ({"generators": {"g": {"backend": "embedded", "options": {"constrained": "yes"}}}},
     "generators.g.options.constrained: expected bool, got 'yes'"),
    ({"discriminators": {"embedded": {"backend": "embedded", "options": {"mode": "cott"}}}},
     "discriminators.embedded.options.mode: expected 'cot' | 'logit', got 'cott'"),
    ({"discriminators": {"embedded": {"backend": "embedded", "options": {"budgte": 64}}}},
     "discriminators.embedded.options.budgte: unknown option"),
    ({"discriminators": {"embedded": {"backend": "embedded", "options": {"batch_size": 1.5}}}},
     "discriminators.embedded.options.batch_size: expected int, got 1.5"),
])
def test_a_bad_backend_option_is_a_config_error_naming_it(data, needle):
    if "generators" in data:
        data = {**data, "pairs": {"p": {"generator": "g", "discriminator": "embedded"}}}
    with pytest.raises(ConfigError) as e:
        cfg(data)
    assert needle in str(e.value)


def test_valid_backend_options_pass_and_read_typed():
    from core.runtime.openai_http import HTTPOptions
    from core.specs import options_of
    from generators.openai import OpenAIGeneratorOptions

    c = cfg({"generators": {"g": {**OPENAI, "options": {"timeout": 5, "max_retries": 0, "constrained": True}}},
             "discriminators": {"embedded": {"backend": "embedded", "options": {"mode": "logit", "check": True}}},
             "pairs": {"p": {"generator": "g", "discriminator": "embedded"}}})
    o = options_of(OpenAIGeneratorOptions, c.generators["g"])
    assert (o.timeout, o.max_retries, o.constrained, o.endpoint) == (5, 0, True, "chat")
    assert options_of(HTTPOptions, c.generators["g"]).concurrency == 8  # a default


def test_every_registry_declares_typed_metadata():
    from eval.datasets import DATASETS, DatasetSpec
    from planner.select import POLICIES, PolicyInfo
    from routing.router import RouterInfo

    gens, discs = known_backends()
    for reg, info_type in ((POLICIES, PolicyInfo), (DATASETS, DatasetSpec), (known_routers(), RouterInfo)):
        assert reg.info_type is info_type and all(isinstance(reg.info(n), info_type) for n in reg.names())
    for reg in (gens, discs):  # every built-in backend declares its options dataclass
        for n in reg.names():
            if reg.get(n).__module__.startswith("tests."):  # doubles other test modules registered (test-scripted)
                continue
            assert dataclasses.is_dataclass(reg.info(n).options), n
    assert POLICIES.info("hybrid").without_scores == "vote" and not POLICIES.info("vote").needs_scores
    assert known_routers().info("cascade").cascades and known_routers().info("bandit").learns


def test_registering_an_undeclared_field_fails_at_registration():
    @dataclasses.dataclass(frozen=True)
    class Info:
        summary: str
        fast: bool = False

    reg: Registry = Registry("widget", Info)
    reg.register("a", summary="A", fast=True)(object)
    assert reg.info("a") == Info("A", True)
    with pytest.raises(TypeError, match="widget 'b'.*fsat"):
        reg.register("b", summary="B", fsat=True)


def test_check_options_names_each_problem():
    @dataclasses.dataclass(frozen=True)
    class Opts:
        size: int = 1
        name: str | None = None

    assert check_options(Opts, {"size": 2, "name": None}) == []
    assert check_options(Opts, {"size": True, "nmae": "x"}, "m.options") == [
        "m.options.size: expected int, got True", "m.options.nmae: unknown option; known: size, name"]
