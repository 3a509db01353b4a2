"""What every part shares: the other bench modules, the time budget's Part and Skip,
the measured Device and the synchronised timer."""

from __future__ import annotations

import importlib
import math
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_bench(name: str) -> ModuleType:
    """Another bench module, `bench.<name>`."""
    return importlib.import_module(f"bench.{name}")


budget = load_bench("budget")
Part, Skip = budget.Part, budget.Skip


class Device:
    """The measured device: synchronising, memory peaks and free memory (CPU: none / RAM)."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        """Free cached blocks and restart the peak count (before each case)."""
        if self.cuda:
            self.sync()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> float | None:
        """MiB: the most this process held at once since `reset` (None on a CPU)."""
        return self.torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else None

    def allocated(self) -> int:
        return self.torch.cuda.memory_allocated(self.device) if self.cuda else 0

    def free(self) -> float:
        """Bytes free for new tensors: the device's free memory (CPU: MemAvailable, else unbounded)."""
        if self.cuda:
            self.torch.cuda.empty_cache()
            return float(self.torch.cuda.mem_get_info(self.device)[0])
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
        except OSError:
            pass
        return math.inf

    def fits(self, need: float, what: str) -> None:
        """Skip (raise) when `need` bytes (with a 20% margin) exceed the free memory."""
        free = self.free()
        if need * 1.2 > free:
            raise Skip(f"{what} needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")

    def clear(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


def timed(fn, dev: Device) -> float:
    """Seconds of one call of fn, the device synchronised on both ends."""
    dev.sync()
    t0 = time.perf_counter()
    fn()
    dev.sync()
    return time.perf_counter() - t0


# Torch ops that make the host wait for a GPU: scalar reads (`.item()`, `bool(t)`), `nonzero`
# (boolean indexing), and new tensors from host data (`torch.tensor(list, device=...)`).
SYNC_OPS = ("aten._local_scalar_dense.default", "aten.nonzero.default", "aten.lift_fresh.default")


def count_syncs(fn, dev: Device) -> tuple[int, str]:
    """(host syncs during fn(), how they were counted).

    On a GPU: the warnings of `torch.cuda.set_sync_debug_mode("warn")`, one per synchronising
    CUDA call. On a CPU nothing waits, so a proxy: the torch ops that would wait on a GPU
    (SYNC_OPS, seen by a TorchDispatchMode) plus `.cpu()` calls."""
    import warnings

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    if dev.cuda:
        dev.sync()
        before = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode(before)
        return sum("synchroniz" in str(w.message) for w in caught), "torch.cuda sync debug mode"

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func) in SYNC_OPS:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        Count.n += 1
        return cpu(self, *args, **kwargs)

    torch.Tensor.cpu = counting_cpu
    try:
        with Count():
            fn()
    finally:
        torch.Tensor.cpu = cpu
    return Count.n, "CPU proxy: scalar reads, nonzero, tensors from host data, .cpu() calls"
