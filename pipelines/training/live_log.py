"""Live logging of a training run for those who watch it while it trains (`--set log=...`).

- "none" (default): nothing beyond `metrics.json` (rewritten after every epoch) and the epoch lines;
- "tensorboard": TensorBoard event files in `<run>/tensorboard` (`tensorboard --logdir runs/`),
  needs the optional extra: `pip install 'lighthead[tensorboard]'`.

Per epoch (the step is the epoch number, as in `metrics.json`): `train/<part>` for the loss and
every loss part the head reports, `train/samples_per_s`, and `val/<metric>` for every numeric
validation metric; at the end `test/<metric>` at the best epoch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LOGS = ("none", "tensorboard")
TENSORBOARD_DIR = "tensorboard"
MISSING = "--set log=tensorboard needs the tensorboard package: pip install 'lighthead[tensorboard]'"
# Per-epoch entries logged under train/ besides the loss parts; the rest is bookkeeping.
SKIP = ("epoch", "samples", "seconds", "val")


def check_log(log: str) -> None:
    if log not in LOGS:
        raise ValueError(f"log must be one of {', '.join(LOGS)}, got {log!r}")


class NullLog:
    """Logs nothing (log=none)."""

    def epoch(self, entry: dict[str, Any]) -> None:
        pass

    def test(self, metrics: dict[str, Any] | None, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLog(NullLog):
    """Scalars of each epoch into TensorBoard event files, flushed after every epoch."""

    def __init__(self, log_dir: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module raises this when the tensorboard package is missing
            raise ValueError(MISSING) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def _scalars(self, prefix: str, values: dict[str, Any], step: int, skip: tuple[str, ...] = ()) -> None:
        for key, value in values.items():
            if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def epoch(self, entry: dict[str, Any]) -> None:
        self._scalars("train", entry, entry["epoch"], SKIP)
        if isinstance(entry.get("val"), dict):
            self._scalars("val", entry["val"], entry["epoch"])
        self.writer.flush()  # watchers see each epoch as soon as it ends

    def test(self, metrics: dict[str, Any] | None, step: int) -> None:
        if metrics:
            self._scalars("test", metrics, step)

    def close(self) -> None:
        self.writer.close()


def open_log(log: str, run_dir: str | os.PathLike) -> NullLog:
    """The live log `log` names for a run in `run_dir`; fails at once (before training) when
    its package is missing."""
    check_log(log)
    if log == "tensorboard":
        return TensorBoardLog(Path(run_dir) / TENSORBOARD_DIR)
    return NullLog()
