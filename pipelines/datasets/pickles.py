"""Reading the pickled annotation files some datasets ship (the ITM release's `*.pkl`) safely.

The store's restricted unpickler with an empty allow-list (`store.safe_pickle.PLAIN_DATA`)
refuses every class and function, so only what pickle builds from its own opcodes loads:
dicts, lists, tuples, sets, strings, bytes, numbers, booleans and None. A pickle cannot run
code this way.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from lighthead.pipelines.datasets.base import DatasetError
from lighthead.store.safe_pickle import PLAIN_DATA, UnsafePickle, restricted_load


def read_plain_pickle(path: Path, hint: str = "convert it to JSON with the same content") -> Any:
    """The plain data of a pickle file; anything else is a DatasetError naming the file."""
    try:
        with Path(path).open("rb") as f:
            return restricted_load(f, PLAIN_DATA, "refusing to load {module}.{name}: only plain data is accepted")
    except UnsafePickle as e:
        why = str(e) if e.module else "refusing a persistent id: only plain data is accepted"
        raise DatasetError(f"{path}: cannot read ({why}); {hint}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        IndexError,
        KeyError,
        TypeError,
        UnicodeDecodeError,
        RecursionError,
        MemoryError,
    ) as e:
        raise DatasetError(f"{path}: cannot read ({e}); {hint}") from None
