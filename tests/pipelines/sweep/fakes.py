"""Tiny pure-python training functions with the signature of `lighthead.pipelines.training.loop.train`.

They let the engine tests (retries, skipping, kills) run in milliseconds per trial. Each call
appends one line to `<store>/calls.log`, so a test can count how often a trial ran.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path


def _log(store: str, overrides: dict[str, str]) -> None:
    line = json.dumps(overrides, sort_keys=True) + "\n"
    fd = os.open(Path(store) / "calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())  # one O_APPEND write: lines from two workers never mix
    finally:
        os.close(fd)


def calls(store: Path) -> list[dict[str, str]]:
    path = Path(store) / "calls.log"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def score(overrides: dict[str, str]) -> float:
    """A known optimum: lr = 1e-3, lam = 0.5."""
    import math

    lr = float(overrides.get("lr", 1e-3))
    lam = float(overrides.get("lam", 0.5))
    return 100.0 - 10.0 * (math.log10(lr) + 3.0) ** 2 - 40.0 * (lam - 0.5) ** 2


def quadratic_train(
    head, store, out, dataset=None, epochs=None, overrides=None, device=None, resume=False, progress=True
):
    """Writes config.json, metrics.json and a checkpoint like the real trainer."""
    overrides = overrides or {}
    _log(store, overrides)
    time.sleep(0.05)  # a trial takes a moment; the scheduler hands each worker two at once anyway
    out = Path(out)
    metrics = {
        "val": {"accuracy": score(overrides) / 100.0, "macro_f1": score(overrides)},
        "test": {"macro_f1": score(overrides) - 1.0},
        "epochs": epochs or 1,
    }
    (out / "config.json").write_text(json.dumps({"head": head, "overrides": overrides}))
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "checkpoint.pt").write_bytes(b"weights")
    return metrics


def killer_train(head, store, out, **kw):
    """Kills its own worker process the first time it sees lam=0.9, then trains normally."""
    overrides = kw.get("overrides", {})
    marker = Path(store) / "killed"
    if overrides.get("lam") == "0.9" and not marker.exists():
        _log(store, overrides)
        marker.write_text(str(os.getpid()))
        (Path(out) / "partial.pt").write_bytes(b"half")  # what a dying trial leaves behind
        os.kill(os.getpid(), signal.SIGKILL)
    return quadratic_train(head, store, out, **kw)


def failing_train(head, store, out, **kw):
    """Raises for lam=0.9 every time; trains otherwise."""
    overrides = kw.get("overrides", {})
    if overrides.get("lam") == "0.9":
        _log(store, overrides)
        raise RuntimeError("diverged: loss is nan")
    return quadratic_train(head, store, out, **kw)


def gpu_hog_train(head, store, out, device=None, **kw):
    """Leaves 1 GiB of CUDA memory reachable only through a reference cycle, as real runs can."""
    import torch

    x = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device=device)  # 1 GiB
    cycle: dict = {"x": x}
    cycle["self"] = cycle  # freed by the garbage collector only, not by reference counting
    del x
    (Path(out) / "device.txt").write_text(str(device))
    return quadratic_train(head, store, out, device=device, **kw)
