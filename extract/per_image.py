"""One bad image never stops a batched extraction job; a failed device always does.

`batch_or_each` runs a batch; when the batch raises, it runs each input alone, and an input
that still raises gets its exception as its result, for the caller to skip with `reason(exc)`.
The region runner and the global-image jobs (ResNet features, thumbnails) both use it.
Only `Exception` is caught: Ctrl-C (KeyboardInterrupt) still stops the job.

`is_fatal(exc)` tells the two kinds of failure apart. Out of memory (`torch.OutOfMemoryError`)
and ordinary errors (a shape the model cannot take, no proposals) belong to the input: the batch
is retried image by image. A failed kernel (`torch.AcceleratorError`: an illegal memory access,
a device-side assert; older torch raises a RuntimeError saying "CUDA error") leaves the CUDA
context unusable: every later batch and every retry would fail too, and the run would "finish"
with the rest of the dataset listed as skipped. Such an error stops the job with `DeviceError`,
one line; what was committed is kept and a rerun resumes.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import torch

T = TypeVar("T")

# torch >= 2.8 has AcceleratorError; isinstance(x, ()) is False, so older torch relies on the texts.
_ACCELERATOR_ERRORS: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(torch, "AcceleratorError", None),) if t is not None
)
# Texts of errors after which the context is unusable (torch, cuBLAS and cuDNN messages).
FATAL_TEXTS = (
    "CUDA error",
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "CUDNN_STATUS_EXECUTION_FAILED",
)


class DeviceError(RuntimeError):
    """The device failed (the CUDA context is unusable): the job stops instead of skipping the rest."""


def is_fatal(exc: BaseException) -> bool:
    """Whether `exc` poisons the device, so that no retry on it can succeed (see the module doc)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False  # the allocator recovers: a smaller batch (one image) may fit
    if isinstance(exc, _ACCELERATOR_ERRORS):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in FATAL_TEXTS)


def device_error(where: str, exc: BaseException) -> DeviceError:
    """The one-line error that stops a job after a fatal `exc` (raise it `from exc`)."""
    return DeviceError(
        f"{where}: the device failed ({reason(exc)}); the job stops, since every later batch "
        "would fail too. What was stored is kept: rerun the same command to resume "
        "(CUDA_LAUNCH_BLOCKING=1 locates the failing kernel)"
    )


def batch_or_each(
    n: int, whole: Callable[[], Sequence[T]], one: Callable[[int], T], where: str = "batch"
) -> list[T | Exception]:
    """`whole()`'s n results; if it raises, `one(k)` for k in range(n), each failure as its exception
    (a batch of one is not run twice: its failure is its result). A fatal error (`is_fatal`)
    raises `DeviceError` naming `where` instead of being retried or returned."""
    try:
        return list(whole())
    except Exception as exc:  # noqa: BLE001 - find the input(s) that fail: each alone
        if is_fatal(exc):
            raise device_error(where, exc) from exc
        if n == 1:
            return [exc.with_traceback(None)]
    results: list[T | Exception] = []
    for k in range(n):
        try:
            results.append(one(k))
        except Exception as exc:  # noqa: BLE001 - this input fails alone: the caller skips it
            if is_fatal(exc):
                raise device_error(where, exc) from exc
            # without its traceback, whose frames would keep the failed forward's tensors alive
            results.append(exc.with_traceback(None))
    return results


def reason(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a skipped list."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
