"""Reading the pickled annotation files some datasets ship (the ITM release's `*.pkl`) safely.

The unpickler refuses every class and function (`find_class` always raises), so only what
pickle builds from its own opcodes loads: dicts, lists, tuples, sets, strings, bytes, numbers,
booleans and None. A pickle cannot run code this way.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from lighthead.pipelines.datasets.base import DatasetError


class PlainUnpickler(pickle.Unpickler):
    """An unpickler for plain data: any class or callable in the stream is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is accepted")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: only plain data is accepted")


def read_plain_pickle(path: Path, hint: str = "convert it to JSON with the same content") -> Any:
    """The plain data of a pickle file; anything else is a DatasetError naming the file."""
    try:
        with Path(path).open("rb") as f:
            return PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, TypeError,
            UnicodeDecodeError, RecursionError, MemoryError) as e:
        raise DatasetError(f"{path}: cannot read ({e}); {hint}") from None
