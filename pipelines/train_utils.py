"""Helpers of the training loop: checkpoints, atomic JSON, the rich progress bar."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_json(path: Path, obj: Any) -> None:
    """Write JSON to `path` with the store's atomic write (a crash never leaves half a file)."""
    from lighthead.store.manifest import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(obj, indent=1, default=_jsonable) + "\n").encode(), fsync=False)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item") and getattr(x, "ndim", 0) == 0:  # numpy / torch scalars
        return x.item()
    if hasattr(x, "tolist"):  # arrays, tensors
        return x.tolist()
    return str(x)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, head: torch.nn.Module, optimizers: list | None = None,
                    scaler: Any = None, state: dict[str, Any] | None = None) -> None:
    """Head weights; with optimizers also their states, schedulers, scaler, loop state and RNGs."""
    ckpt: dict[str, Any] = {"head": head.state_dict()}
    if optimizers is not None:
        ckpt["optimizers"] = [opt.state_dict() for opt, _ in optimizers]
        ckpt["schedulers"] = [None if s is None else s.state_dict() for _, s in optimizers]
        ckpt["scaler"] = scaler.state_dict() if scaler is not None else None
        ckpt["state"] = state
        ckpt["rng"] = rng_state()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, head: torch.nn.Module, optimizers: list | None = None,
                    scaler: Any = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote; returns the loop state (empty for weights-only files)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # Our own files (optimiser states, RNG tuples): not loadable with weights_only.
    ckpt = torch.load(path, map_location=device, weights_only=False)
    head.load_state_dict(ckpt["head"])
    if optimizers is not None and "optimizers" in ckpt:
        for (opt, sched), o_state, s_state in zip(optimizers, ckpt["optimizers"], ckpt["schedulers"]):
            opt.load_state_dict(o_state)
            if sched is not None and s_state is not None:
                sched.load_state_dict(s_state)
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
    return ckpt.get("state") or {}


class EpochProgress:
    """A rich progress bar over one epoch's batches showing the running loss and samples/s."""

    def __init__(self, description: str, total: int, enabled: bool = True):
        self.description, self.total, self.enabled = description, total, enabled
        self._progress = None
        self._task = None

    def __enter__(self) -> "EpochProgress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("loss {task.fields[loss]:.4f}"),
                                      TextColumn("{task.fields[rate]:.0f} samples/s"), TimeElapsedColumn(),
                                      transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, loss=float("nan"), rate=0.0)
        return self

    def advance(self, loss: float, rate: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=loss, rate=rate)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    @staticmethod
    def report(entry: dict[str, Any], metric: str) -> None:
        """One line per epoch: loss parts, throughput and the validation metric."""
        from rich.console import Console

        parts = " ".join(f"{k} {v:.4f}" for k, v in entry.items()
                         if k not in ("epoch", "samples", "seconds", "samples_per_s", "val") and isinstance(v, float))
        val = entry.get("val")
        tail = f" | val {metric} {val[metric]:.2f}" if val and metric in val else ""
        Console(stderr=True, soft_wrap=True).print(f"epoch {entry['epoch']}: {parts} | {entry['samples_per_s']:.0f} samples/s{tail}")
