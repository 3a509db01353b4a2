"""Loading a bench module in a test: `bench/` is a package run from the repository root."""

from __future__ import annotations

import importlib
from types import ModuleType


def load_bench_script(name: str) -> ModuleType:
    """`bench.<name>`."""
    return importlib.import_module(f"bench.{name}")
