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
