"""Fixtures shared by the sqlbox tests."""

import pytest

from sqlbox.databases import default_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SQLARBITER_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    mp.delenv("SQLARBITER_DATABASES", raising=False)
    reg = default_registry()
    yield reg
    mp.undo()
