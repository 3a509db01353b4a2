"""store/registry.py: names map to entries, duplicates and unknown names are errors naming the
known ones, and an entry can be removed again."""

from __future__ import annotations

import pytest

from lighthead.store.registry import Registry


def test_register_get_unregister():
    reg: Registry[int] = Registry("widget")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2 and "a" in reg
    with pytest.raises(KeyError, match="widget 'a' is registered twice"):
        reg.register("a")(3)
    assert reg.unregister("a") == 1 and reg.names() == ["b"]
    with pytest.raises(KeyError, match="unknown widget 'a'; known: b"):
        reg.unregister("a")
    reg.register("a")(4)  # a removed name may be registered again
    assert reg.get("a") == 4
