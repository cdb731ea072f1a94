"""Fixtures shared by the sqlbox tests."""

import pytest

from sqlbox.databases import registry_for


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SQLARBITER_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    mp.delenv("SQLARBITER_DATABASES", raising=False)
    reg = registry_for()
    yield reg
    mp.undo()
