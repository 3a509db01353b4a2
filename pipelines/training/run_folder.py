"""The run folder: its layout, its files and who may write it.

A run folder (`lighthead train heads ... --out RUN`) holds::

    RUN/
      config.json        head, dataset, store, the resolved head and loop configs, overrides (RUN_CONFIG)
      data_info.json     the data's sizes the head was built with
      metrics.json       per-epoch history, the selected epoch, validation and test metrics (METRICS)
      checkpoints/best.safetensors   the selected epoch's weights
      checkpoints/last.safetensors   everything to resume: weights, optimisers, schedulers, loop
                                     state and RNG states (file format: `training/checkpoint.py`)
      .lock              while one process writes the folder (`run_lock`)

Every file is written atomically and read with checks that name the file and the key; sweeps
read their trials' folders through the same functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

CONFIG, DATA_INFO, METRICS_FILE = "config.json", "data_info.json", "metrics.json"
CHECKPOINTS = "checkpoints"
BEST, LAST = "best.safetensors", "last.safetensors"  # the best epoch's weights; everything to resume


# JSON types of the run files' top-level keys: config.json's (all required) and metrics.json's.
RUN_CONFIG = {"head": str, "dataset": str, "store": str, "config": dict, "loop": dict}
METRICS = {
    "history": list,
    "best_epoch": int,
    "epochs_done": int,
    "selection_metric": str,
    "val": (dict, type(None)),
    "test": (dict, type(None)),
}


def read_json(
    path: Path, required: Mapping[str, Any] | None = None, optional: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A run file (config.json, metrics.json, data_info.json, a sweep's trial.json): a JSON object.

    required / optional: top-level key -> JSON type (dict, list, str, int, float, or a tuple of
    them) that key must have (optional keys only when present). A missing, non-UTF-8, broken,
    too deeply nested or wrong-typed file raises an error naming the file (and the key).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found (is {path.parent} a run folder?)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); the file is damaged") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); the file is damaged or truncated") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply for a run file; the file is damaged") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a JSON {_json_type(obj)}, not an object; the file is damaged")
    for key, kinds in {**(optional or {}), **(required or {})}.items():
        if key not in obj:
            if required and key in required:
                raise ValueError(f"{path}: no {key!r} entry; the file is damaged or not a run file")
            continue
        if not _is_json(obj[key], kinds):
            raise ValueError(
                f"{path}: {key!r} is a JSON {_json_type(obj[key])}, expected {_type_names(kinds)}; the file is damaged"
            )
    return obj


def read_run_config(path: Path) -> dict[str, Any]:
    """A run's config.json (RUN_CONFIG's keys with their types; `overrides` an object when present)."""
    return read_json(path, RUN_CONFIG, {"overrides": dict})


def read_metrics(path: Path) -> dict[str, Any]:
    """A run's metrics.json: METRICS's keys typed when present, every history entry an object with a
    numeric `epoch` (what the curves and sweep reports read)."""
    summary = read_json(path, optional=METRICS)
    for i, entry in enumerate(summary.get("history") or []):
        if not isinstance(entry, dict) or not _is_json(entry.get("epoch"), int):
            raise ValueError(
                f"{path}: history[{i}] is not an epoch entry (an object with an integer 'epoch'); the file is damaged"
            )
    return summary


def config_from_json(config_class: type, values: Any, path: Path, what: str) -> Any:
    """`config_class(**values)` from a run file's `what` entry (e.g. config.json's "config"): every key
    a field, every value of the field's type (JSON lists back to tuples); else an error naming the file."""
    from lighthead.heads.build import config_fields

    fields = config_fields(config_class)
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(
                f"{path}: {what}.{key} is not a setting of {config_class.__name__} (written by another version?)"
            )
        if not _fits(value, fields[key]):
            raise ValueError(
                f"{path}: {what}.{key} is a JSON {_json_type(value)}, which does not fit "
                f"{config_class.__name__}.{key}; the file is damaged"
            )
        out[key] = tuple(value) if isinstance(value, list) and "tuple" in str(fields[key]) else value
    try:
        return config_class(**out)
    except (TypeError, ValueError) as e:  # a field missing, or a value its checks refuse
        raise ValueError(f"{path}: {what}: {e}") from None


def _fits(value: Any, tp: Any) -> bool:
    """Whether a JSON value can stand for a config field of type `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin in (tuple, list):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return all(_fits(v, args[0]) for v in value) if args else True
    if tp in (bool, int, float, str, dict):
        return _is_json(value, tp)
    return True  # Any, or a type JSON cannot tell apart


def _is_json(value: Any, kinds: Any) -> bool:
    """isinstance for JSON values: a bool is no number, an int is a float."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def _json_type(value: Any) -> str:
    for tp, name in (
        (bool, "boolean"),
        (int, "number"),
        (float, "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
        (type(None), "null"),
    ):
        if isinstance(value, tp):
            return name
    return type(value).__name__


def _type_names(kinds: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }
    return " or ".join(names.get(t, t.__name__) for t in (kinds if isinstance(kinds, tuple) else (kinds,)))


RUN_LOCK = ".lock"  # in a run or sweep folder while one process writes it; deleted when it ends


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if absent) for the `with` body; a second
    process gets ValueError `<folder>: in use by ...` at once, before it writes anything.

    The store writers' flock (`store.manifest.try_lock`): the kernel releases it when its
    process dies, so a killed run never blocks the next one. A folder this call created and
    nobody wrote into is removed again."""
    from lighthead.store.manifest import try_lock

    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_LOCK
    fd = try_lock(path)
    if fd is None:
        try:
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
        except OSError:
            holder = "another process"
        raise ValueError(f"{folder}: in use by {holder}; wait for it to end or choose another folder")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0
        )
        yield folder
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still held: `try_lock` retries on a lock file that was replaced
        os.close(fd)
        with contextlib.suppress(OSError):
            for p in created:
                p.rmdir()  # only succeeds when empty: nothing was written


def rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Python's, numpy's and torch's CPU RNG states, and on a CUDA `device` that GPU's state
    ("cuda_device"; only the training device: a resume may run on a machine with fewer GPUs).
    A CPU run never touches CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    device = torch.device(device)
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Restore `rng_state`'s record; on a CUDA `device` its saved GPU state, if any. Records of
    earlier runs hold every GPU's state as "cuda" (a list by device index): the training
    device's entry is used, and none when that GPU did not exist then."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    device = torch.device(device)
    if device.type != "cuda":
        return  # a CPU run (or a GPU run resumed on a CPU) leaves CUDA alone
    saved = state.get("cuda_device")
    if saved is None and state.get("cuda"):
        index = device.index if device.index is not None else torch.cuda.current_device()
        saved = state["cuda"][index] if index < len(state["cuda"]) else None
    if saved is not None:
        torch.cuda.set_rng_state(saved, device)


def save_checkpoint(
    path: Path,
    head: torch.nn.Module,
    optimizers: list | None = None,
    scaler: Any = None,
    state: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Head weights; with optimizers also their states, schedulers, scaler, loop state and RNGs
    (the CPU's, and the training `device`'s on a GPU).

    Written as safetensors + JSON (`training/checkpoint.py`): loading never unpickles.
    """
    from lighthead.pipelines.training import checkpoint

    extra = None
    if optimizers is not None:
        extra = {
            "optimizers": [opt.state_dict() for opt, _ in optimizers],
            "schedulers": [None if s is None else s.state_dict() for _, s in optimizers],
            "scaler": scaler.state_dict() if scaler is not None else None,
            "state": state,
            "rng": rng_state(device),
        }
    checkpoint.save(path, head.state_dict(), extra)


def load_checkpoint(
    path: Path,
    head: torch.nn.Module,
    optimizers: list | None = None,
    scaler: Any = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote; returns the loop state (empty for weights-only files).

    A missing, truncated, doctored or mismatched file raises RunCheckpointError naming it.
    """
    from lighthead.pipelines.training.checkpoint import RunCheckpointError, load

    weights, extra = load(path)
    try:
        head.load_state_dict(weights)
        if optimizers is not None and extra is not None:
            for (opt, sched), o_state, s_state in zip(optimizers, extra["optimizers"], extra["schedulers"]):
                opt.load_state_dict(o_state)
                if sched is not None and s_state is not None:
                    sched.load_state_dict(s_state)
            if scaler is not None and extra.get("scaler"):
                scaler.load_state_dict(extra["scaler"])
            set_rng_state(extra["rng"], device)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunCheckpointError(f"{path}: does not match this run's head and optimisers ({first})") from None
    return (extra or {}).get("state") or {}


def check_same_run(out: Path, run_config: dict) -> None:
    """A resumed run must keep its head, data and config (only epochs may grow)."""
    old = read_run_config(out / "config.json")
    run_config = json.loads(json.dumps(run_config, default=list))  # tuples -> lists, as stored
    diffs = [k for k in ("head", "dataset") if old.get(k) != run_config[k]]
    diffs += [f"config.{k}" for k, v in run_config["config"].items() if k != "epochs" and old["config"].get(k) != v]
    # the live log changes nothing in the results: a resume may switch it
    diffs += [f"loop.{k}" for k, v in run_config["loop"].items() if k != "log" and old["loop"].get(k) != v]
    if diffs:
        raise ValueError(f"--resume with a different setup than {out}/config.json: {', '.join(diffs)}")


def weights_to_load(run: Path) -> Path:
    """The checkpoint an evaluation loads: the best epoch's, else (a run stopped before one was
    selected) the last one."""
    ckpt = run / CHECKPOINTS / BEST
    if not ckpt.is_file() and (run / CHECKPOINTS / LAST).is_file():
        ckpt = run / CHECKPOINTS / LAST
    return ckpt
