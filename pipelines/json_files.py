"""Files the pipelines write whole: JSON (run, sweep and report files) and small text files,
each written atomically (a crash leaves the old file or the new one, never half of one), its
folder made first, and a failed write an OSError naming the file (`store.manifest.atomic_write`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lighthead.store.manifest import atomic_write


def to_json_value(x: Any) -> Any:
    """json.dumps' fallback: numpy and torch scalars and arrays as numbers and lists, else str."""
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    import torch  # only reached for what numpy does not cover

    if isinstance(x, torch.Tensor):
        return x.tolist()
    return str(x)


def write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically, making its folder first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"), fsync=False)


def atomic_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically (numpy/torch values converted)."""
    write_text(path, json.dumps(obj, indent=1, default=to_json_value) + "\n")
