"""One trial of a sweep, as a dask task: train one config into its own folder, atomically.

The task receives paths and small dicts only (the store directory, the sweep directory, the
trial's overrides), never arrays: each worker opens the store itself. A trial trains into
`DIR/trials/.tmp-<id>-<nonce>/` and renames it to `DIR/trials/<id>/` when training returns,
so a folder named after a trial id is always complete (config.json, metrics.json,
checkpoint, trial.json) and a rerun can skip it. A worker killed mid-trial leaves only a
`.tmp-*` folder, which the next attempt ignores and the sweep removes.
"""

from __future__ import annotations

import gc
import importlib
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from lighthead.pipelines.json_files import atomic_json
from lighthead.pipelines.placement import use_device
from lighthead.pipelines.sweep.spec import Trial
from lighthead.pipelines.training.run_folder import read_json, read_metrics

# The function `lighthead train heads` calls; trials call the same one.
DEFAULT_TRAIN = "lighthead.pipelines.training.loop:train"

TrainFn = str | Callable[..., dict]

TRIALS = "trials"  # sub-folder of the sweep directory holding one folder per trial
TMP_PREFIX = ".tmp-"  # unfinished trials train under this prefix


def trial_dir(out: Path | str, trial_id: str) -> Path:
    return Path(out) / TRIALS / trial_id


def is_finished(path: Path | str) -> bool:
    """A trial folder is finished once it exists under its id with its metrics."""
    path = Path(path)
    return (path / "metrics.json").is_file() and (path / "trial.json").is_file()


def resolve_train_fn(fn: TrainFn) -> Callable[..., dict]:
    """`"package.module:function"` (or `"package.module.function"`) or a callable."""
    if callable(fn):
        return fn
    module, sep, attr = fn.partition(":")
    if not sep:
        module, _, attr = fn.rpartition(".")
    if not module or not attr:
        raise ValueError(f"bad training function {fn!r}: expected package.module:function")
    return getattr(importlib.import_module(module), attr)


def _limit_threads(threads: int | None) -> None:
    """Give the trial its share of the cores.

    A dask nanny sets OMP/MKL/OpenBLAS thread counts to 1 before starting a worker, which
    would leave a CPU trial on one core whatever the machine has.
    """
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")  # import only if training already did: fakes stay cheap
    if torch is not None:
        torch.set_num_threads(threads)


def _free_memory() -> None:
    """A long-lived worker keeps CUDA memory cached across tasks unless told to let go."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"


def run_trial(
    trial: dict[str, Any],
    store: str,
    out: str,
    train_fn: TrainFn = DEFAULT_TRAIN,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train one trial (a `Trial.to_json()` dict) into `out/trials/<id>/`; return its record.

    Skips training when the trial's folder is already finished. Raises whatever training
    raises (dask retries the task), after removing the partial folder.
    """
    t = Trial.from_json(trial)
    final = trial_dir(out, t.id)
    if is_finished(final):
        return read_trial(final) | {"status": "skipped"}
    tmp = final.parent / f"{TMP_PREFIX}{t.id}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    start = time.time()
    try:
        _limit_threads(threads)
        fn = resolve_train_fn(train_fn)
        metrics = fn(
            t.head,
            store,
            tmp,
            dataset=t.dataset,
            epochs=t.epochs,
            overrides=dict(t.overrides),
            device=use_device(device),
            resume=False,
            progress=False,
        )
        metrics = dict(metrics or {})
        # The training function writes both; a minimal one may not, and a trial folder
        # must always hold them.
        if not (tmp / "metrics.json").is_file():
            atomic_json(tmp / "metrics.json", metrics)
        if not (tmp / "config.json").is_file():
            atomic_json(tmp / "config.json", t.to_json())
        record = t.to_json() | {
            "wall_s": round(time.time() - start, 3),
            "worker": _worker_name(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        atomic_json(tmp / "trial.json", record)
        try:
            os.rename(tmp, final)  # atomic on one filesystem: the trial appears whole
        except OSError:
            if not is_finished(final):  # not a concurrent twin that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _free_memory()
    return record | {"status": "done", "metrics": metrics}


def read_trial(path: Path | str) -> dict[str, Any]:
    """A finished trial's record: trial.json plus its metrics.json under "metrics"."""
    path = Path(path)
    # a damaged or wrong-typed file is named, not a bare JSONDecodeError or TypeError
    record = read_json(path / "trial.json", optional={"wall_s": (int, float), "id": str})
    record["metrics"] = read_metrics(path / "metrics.json")
    return record
