"""Run checkpoints that load without unpickling: tensors in safetensors, the rest as JSON.

A run folder may come from anyone (a colleague's run, a sweep on a shared cluster), so loading
one must not be able to run code. `torch.load` unpickles, and a pickle can call any function;
a checkpoint here is therefore one `.safetensors` file:

- the tensors: the head's weights under `head/<name>`, every other tensor (optimiser moments,
  RNG states, numpy's Mersenne-Twister key) under `state/<n>`;
- the header's metadata: `format` (`lighthead-run-checkpoint`), `version`, and `state`, a JSON
  text holding everything else (optimiser hyper-parameters, scheduler and GradScaler states,
  the loop state, Python's RNG state), every dict, tuple, tensor and numpy value written as a
  small tagged object (`{"map": {...}}`, `{"dict": [[k, v], ...]}` for non-string keys,
  `{"tuple": [...]}`, `{"tensor": "state/3"}`, `{"ndarray": "state/4", "dtype": "<u4"}`).

Loading parses the header (safetensors refuses anything else: a pickle, a truncated file) and
rebuilds only those types; whatever is not a checkpoint of this format raises
`RunCheckpointError` naming the file. Written under a temporary name and renamed, so a kill
never leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "lighthead-run-checkpoint"
VERSION = 1


class RunCheckpointError(ValueError):
    """A run checkpoint is missing, unreadable, truncated or not of our format; names the file."""


class _Encoder:
    """Turns a state tree into JSON-able data, moving tensors and arrays aside."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def _tensor(self, t: torch.Tensor) -> str:
        key = f"state/{len(self.tensors)}"
        # A private contiguous CPU copy: safetensors refuses views that share storage.
        self.tensors[key] = t.detach().cpu().contiguous().clone()
        return key

    def encode(self, obj: Any) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, (int, float)):  # Python and numpy scalars alike, as plain numbers
            return obj
        if isinstance(obj, (np.integer, np.floating, np.bool_)):
            return {"np_scalar": obj.item(), "dtype": obj.dtype.str}
        if isinstance(obj, torch.Tensor):
            return {"tensor": self._tensor(obj)}
        if isinstance(obj, np.ndarray):
            return {"ndarray": self._tensor(torch.from_numpy(np.ascontiguousarray(obj))), "dtype": obj.dtype.str}
        if isinstance(obj, list):
            return [self.encode(x) for x in obj]
        if isinstance(obj, tuple):
            return {"tuple": [self.encode(x) for x in obj]}
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj):
                return {"map": {k: self.encode(v) for k, v in obj.items()}}
            return {"dict": [[self.encode(k), self.encode(v)] for k, v in obj.items()]}
        raise TypeError(
            f"cannot store a {type(obj).__name__} in a run checkpoint (tensors, numbers, strings, "
            "lists, tuples and dicts only)"
        )


def _decode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [_decode(x, tensors, where) for x in obj]
    if isinstance(obj, dict) and len(obj) in (1, 2):
        (tag, value), *rest = obj.items()
        if tag == "map" and isinstance(value, dict) and not rest:
            return {k: _decode(v, tensors, where) for k, v in value.items()}
        if tag == "dict" and isinstance(value, list) and not rest:
            out = {}
            for pair in value:
                if not (isinstance(pair, list) and len(pair) == 2):
                    break
                out[_decode(pair[0], tensors, where)] = _decode(pair[1], tensors, where)
            else:
                return out
        if tag == "tuple" and isinstance(value, list) and not rest:
            return tuple(_decode(x, tensors, where) for x in value)
        if tag == "tensor" and not rest and value in tensors:
            return tensors[value]
        dtype = _numeric_dtype(rest[0][1]) if rest and rest[0][0] == "dtype" else None
        if tag == "ndarray" and value in tensors and dtype is not None:
            return tensors[value].numpy().astype(dtype, copy=True)
        if tag == "np_scalar" and isinstance(value, (int, float, bool)) and dtype is not None:
            return dtype.type(value)
    raise RunCheckpointError(f"{where}: malformed checkpoint state near {json.dumps(obj)[:80]!r}")


def _numeric_dtype(text: Any) -> np.dtype | None:
    """A numpy dtype from its string, numbers and booleans only (never object arrays)."""
    try:
        dtype = np.dtype(str(text))
    except (TypeError, ValueError):
        return None
    return dtype if dtype.kind in "biuf" else None


def save(path: str | os.PathLike, head_state: dict[str, torch.Tensor], state: dict[str, Any] | None = None) -> None:
    """Write `head_state` (a module's state_dict) and the JSON-able-with-tensors `state` to `path`."""
    from safetensors.torch import save as to_bytes

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in head_state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"head state {name!r} is a {type(value).__name__}, not a tensor")
        tensors[f"head/{name}"] = value.detach().cpu().contiguous().clone()
    encoder = _Encoder()
    meta = {"format": FORMAT, "version": str(VERSION)}
    if state is not None:
        meta["state"] = json.dumps(encoder.encode(state), allow_nan=True)
    tensors.update(encoder.tensors)
    write_file(path, to_bytes(tensors, metadata=meta))


def write_file(path: Path, data: bytes) -> None:
    """Atomic write; an OSError without a file name (a failed write: disk full) gets `path`."""
    from lighthead.store import manifest

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest.atomic_write(path, data, fsync=False)
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(head state_dict, state or None) of a checkpoint written by `save`, on the CPU.

    Raises RunCheckpointError naming the file for a missing, truncated, foreign or doctored file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        legacy = path.with_suffix(".pt")
        if legacy.is_file():
            raise RunCheckpointError(
                f"{legacy}: checkpoint in the old pickle format, which is not loaded because unpickling can run "
                f"code; retrain the run (the new format is {path.name})"
            )
        raise RunCheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise RunCheckpointError(f"{path}: not a lighthead run checkpoint (format {meta.get('format')!r})")
            if meta.get("version") != str(VERSION):
                raise RunCheckpointError(
                    f"{path}: run checkpoint version {meta.get('version')!r}, this code reads {VERSION}"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except RunCheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        # a pickle, a truncated or a foreign file: refused before anything in it is interpreted
        raise RunCheckpointError(
            f"{path}: not a readable run checkpoint (truncated or another format: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    head = {k[len("head/") :]: v for k, v in tensors.items() if k.startswith("head/")}
    state = None
    if "state" in meta:
        try:
            raw = json.loads(meta["state"])
        except ValueError as e:
            raise RunCheckpointError(f"{path}: checkpoint state is not valid JSON ({e})") from None
        state = _decode(raw, tensors, str(path))
    return head, state
