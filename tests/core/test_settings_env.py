"""Every SQLARBITER_* environment variable goes through the configuration: it is in `core.settings.ENV` and the
README's table, and only `core.settings` and the config loader read the environment for one."""

from __future__ import annotations

import re

import pytest

from core import settings
from core.settings import ENV, REPO_ROOT

PACKAGES = ("api", "benchmarks", "cli", "core", "discriminators", "eval", "generators", "planner", "routing", "sqlbox")
READERS = {"core/settings.py", "planner/config.py"}


def sources():
    for pkg in PACKAGES:
        for p in (REPO_ROOT / pkg).rglob("*.py"):
            yield p.relative_to(REPO_ROOT).as_posix(), p.read_text(encoding="utf-8")


def test_every_variable_named_in_code_is_in_the_table_and_the_readme():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    named = {m for _, text in sources() for m in re.findall(r"[\"'`$](SQLARBITER_[A-Z][A-Z_]*)", text)}
    assert named - set(ENV) == set()
    for name in ENV:
        assert f"| `{name}` |" in readme, name


def test_only_the_settings_and_the_config_loader_read_them():
    direct = re.compile(r"(environ(\.get)?[\[(]|getenv\()\s*[\"']SQLARBITER_")
    offenders = [path for path, text in sources() if path not in READERS and direct.search(text)]
    assert offenders == []


def test_env_refuses_an_undocumented_name(monkeypatch):
    monkeypatch.setenv("SQLARBITER_INDEX_CACHE", "0")
    assert settings.env_flag("SQLARBITER_INDEX_CACHE") is False
    monkeypatch.delenv("SQLARBITER_INDEX_CACHE")
    assert settings.env_flag("SQLARBITER_INDEX_CACHE") is True
    with pytest.raises(KeyError, match="not a documented"):
        settings.env("SQLARBITER_TYPO")
