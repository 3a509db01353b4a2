"""Which GPU a process uses, and making it that process's current CUDA device.

Parts of an extraction and trials of a sweep run in dask workers. A local cluster names its
workers 0..n-1, so with a plain "cuda" worker i takes GPU i mod n, n the GPUs this process
sees (torch counts them after CUDA_VISIBLE_DEVICES: a batch job given one GPU sees one, and
every worker there takes it). The GPU follows the worker, not the task: two tasks that run at
once are on two workers, hence on two GPUs while there are as many GPUs as workers. "cuda:i"
is kept as given. A process given "cuda:i" then makes GPU i its current device, so that what
uses the current device (new streams, `torch.cuda.current_device()`, pinned memory, a library
that calls `.cuda()`) does not start a second context on GPU 0.
"""

from __future__ import annotations

import re
from typing import Any


def worker_index(name: Any) -> int | None:
    """A dask worker's index from its name: 3, "3" or "SLURMCluster-3" -> 3; None for a name
    without one (e.g. an address, "tcp://10.0.0.5:40331")."""
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    match = re.fullmatch(r"(?:.*-)?(\d+)", str(name))
    return int(match.group(1)) if match else None


def device_for_worker(device: str | None, index: int | None, gpus: int) -> str | None:
    """The device worker `index` uses when asked for `device`, with `gpus` GPUs visible to it:
    a plain "cuda" with several GPUs -> "cuda:<index mod gpus>"; anything else as given
    ("cpu", "cuda:1", "cuda" with one GPU or outside a worker)."""
    if device != "cuda" or index is None or gpus <= 1:
        return device
    return f"cuda:{index % gpus}"


def current_worker_index() -> int | None:
    """The index of the dask worker running this code (None outside one)."""
    try:
        from distributed import get_worker

        return worker_index(get_worker().name)
    except (ImportError, ValueError):  # no dask, or not inside a worker
        return None


def use_device(device: str | None) -> str | None:
    """Resolve `device` for this process (a dask worker takes its GPU, see `device_for_worker`)
    and make a "cuda:i" the current CUDA device. Returns the device to use."""
    if device is None or not device.startswith("cuda"):
        return device
    import torch

    device = device_for_worker(device, current_worker_index(), torch.cuda.device_count())
    index = torch.device(device).index
    if index is not None:
        torch.cuda.set_device(index)
    return device
