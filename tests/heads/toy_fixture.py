"""The toy head of `tests/heads/toy_head.py`, registered for the length of a test only.

Importing `toy_head` registers "toy" in the head registry, as any head module does. Tests that
enumerate every head (README table, fidelity tables, benches) must not meet a test-only head,
so `toy_head_registered()` imports the module afresh and restores the registry afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from types import ModuleType
from typing import Iterator

MODULE = "tests.heads.toy_head"


@contextlib.contextmanager
def toy_head_registered() -> Iterator[ModuleType]:
    """The toy head's module, its head registered as "toy" until the block ends."""
    import lighthead.heads  # noqa: F401  (every real head registered first)
    from lighthead.heads.base import HEADS

    before = HEADS.names()
    sys.modules.pop(MODULE, None)
    try:
        yield importlib.import_module(MODULE)
    finally:
        if "toy" in HEADS:
            HEADS.unregister("toy")
        sys.modules.pop(MODULE, None)
        assert HEADS.names() == before, "the toy head's module registered something else too"
