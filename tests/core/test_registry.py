import pytest

from core.registry import Registry, UnknownName


def test_register_create_and_unknown_name_lists_choices():
    reg: Registry = Registry("widget")

    @reg.register("a")
    class A:
        def __init__(self, x=1):
            self.x = x

    assert reg.create("a", x=3).x == 3
    assert "a" in reg and reg.names() == ["a"]
    with pytest.raises(UnknownName, match="unknown widget 'b'; choose one of: a"):
        reg.get("b")
    with pytest.raises(ValueError):
        reg.register("a")(object)
