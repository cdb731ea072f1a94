"""The package layering: import-linter's contracts (pyproject.toml) hold, and the import graph, lazy imports
inside functions included, has no cycle: neither between packages nor between modules (inside a package too)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
grimp = pytest.importorskip("grimp", reason="import-linter (and grimp) is part of the test extra")

from core.layers import PACKAGES, module_graph, package_cycles, package_graph  # noqa: E402


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports is not installed (pip install -e '.[test]')"
    r = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_package_graph_has_no_cycle():
    graph = package_graph()
    assert set(graph) == set(PACKAGES)
    assert graph["core"] == set(), "core imports no other project package"
    assert package_cycles(graph) == []


def test_cycle_detection_finds_a_cycle():
    assert package_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_module_graph_has_no_cycle():
    graph = module_graph()
    assert {m.split(".")[0] for m in graph} == set(PACKAGES)
    # `DatabaseRegistry.verify` imports sqlbox.privileges inside the method: lazy imports are in the graph
    assert "sqlbox.privileges" in graph["sqlbox.databases"]
    cycles = package_cycles(graph)
    assert cycles == [], "module import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
