"""One bad image never stops a batched extraction job.

`batch_or_each` runs a batch; when the batch raises, it runs each input alone, and an input
that still raises gets its exception as its result, for the caller to skip with `reason(exc)`.
The region runner and the global-image jobs (ResNet features, thumbnails) both use it.
Only `Exception` is caught: Ctrl-C (KeyboardInterrupt) still stops the job.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def batch_or_each(n: int, whole: Callable[[], Sequence[T]], one: Callable[[int], T]) -> list[T | Exception]:
    """`whole()`'s n results; if it raises, `one(k)` for k in range(n), each failure as its exception
    (a batch of one is not run twice: its failure is its result)."""
    try:
        return list(whole())
    except Exception as exc:  # noqa: BLE001 - find the input(s) that fail: each alone
        if n == 1:
            return [exc]
    results: list[T | Exception] = []
    for k in range(n):
        try:
            results.append(one(k))
        except Exception as exc:  # noqa: BLE001 - this input fails alone: the caller skips it
            results.append(exc)
    return results


def reason(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a skipped list."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
