"""How many CPU threads torch uses when training or evaluating the small heads.

    use_threads(None)  # OMP_NUM_THREADS if set, else min(4, half the usable physical cores)
    use_threads(2)     # exactly 2

Why not torch's own default (one thread per physical core): the heads are small, so a step
is many short operations, and an OpenMP team waits at the end of each for its slowest thread.
When another job holds one of the cores, that thread is descheduled and every operation
stalls: on a busy 2-core machine the demo's mFSR step ran at 26 samples/s with one thread and
2.6 with two. Leaving half the cores free keeps one other job from doing that, and past a few
threads small heads gain little.
"""

from __future__ import annotations

import os

MAX_DEFAULT = 4  # small heads gain little from more threads than this


def usable_cores() -> int:
    """Physical cores this process may run on (CPU affinity and SMT siblings accounted for)."""
    logical = os.cpu_count() or 1
    try:
        import psutil  # comes with dask.distributed

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    # a taskset / cgroup limit of N logical CPUs holds at most N physical cores' worth of work
    return max(1, min(physical, allowed))


def env_threads() -> int | None:
    """OMP_NUM_THREADS as a number of threads (its first level when it lists several), or None."""
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not raw:
        return None
    first = raw.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise ValueError(f"OMP_NUM_THREADS={raw!r}: expected a positive number of threads")
    return int(first)


def default_threads(cap: int = MAX_DEFAULT) -> int:
    """OMP_NUM_THREADS when set (the user's word wins), else min(cap, half the usable cores)."""
    env = env_threads()
    if env is not None:
        return env
    return max(1, min(cap, usable_cores() // 2))


def use_threads(threads: int | None = None, cap: int = MAX_DEFAULT) -> int:
    """Set torch's intra-op thread count to `threads` (None: `default_threads(cap)`); returns it.

    Inter-op threads are left alone: only TorchScript's `fork` uses them, and torch allows
    setting them once per process, before any parallel work.
    """
    import torch

    n = default_threads(cap) if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n
