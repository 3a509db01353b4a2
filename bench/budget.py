"""Time budgets and result rows for unattended benchmarks (used by bench/gpu.py).

A `Part` is one measured area (detector, text, ...) with a wall-clock budget. It plans its
cases up front; each case runs under a hard time limit (SIGALRM interrupts it between Python
bytecodes, so a case stops within moments of its limit even mid-loop); a case that runs out
of time, memory or luck becomes a row saying so, and every planned case that never ran is
listed as skipped with the reason. So a table always has one row per planned case.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


class BudgetSpent(BaseException):
    """Raised inside a case when its time limit passes (a BaseException, like KeyboardInterrupt,
    so that code retrying on `except Exception` does not swallow it)."""


class Skip(Exception):
    """Raised by a case that decides not to run (e.g. it would not fit in memory); the message says why."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise BudgetSpent in this (main) thread after `seconds` of wall time."""
    if seconds <= 0:
        raise BudgetSpent
    if not math.isfinite(seconds):
        yield
        return

    def alarm(signum, frame):
        raise BudgetSpent

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Row:
    """One line of the results table."""

    part: str  # the measured area: "gpu tests", "detector", ...
    case: str  # what was measured, e.g. "fp32, 36 boxes, batch 4"
    figure: float | None = None  # the measured rate (None: not measured)
    unit: str = ""  # e.g. "images/s"
    peak_mib: float | None = None  # torch.cuda.max_memory_allocated of the case (None on a CPU)
    note: str = ""  # how it was measured, or why it was not


@dataclass
class Part:
    """A measured area with a wall-clock budget and its planned cases."""

    name: str
    seconds: float  # budget of the whole part
    peak: Callable[[], float | None] = lambda: None  # reset-then-read of the memory peak, see `gpu.memory_peak`
    reset: Callable[[], None] = lambda: None
    rows: list[Row] = field(default_factory=list)
    log: bool = False  # print each row as it comes (progress of a long run)
    errors: int = 0  # cases that failed for another reason than time or memory
    start: float = field(default_factory=time.perf_counter)
    planned: list[str] = field(default_factory=list)
    reason: str = ""  # why planned cases that never ran were skipped (default: the time budget)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def plan(self, cases: list[str]) -> None:
        """Cases this part means to run, in order (each gets a row in the end)."""
        self.planned.extend(c for c in cases if c not in self.planned)

    def row(self, case: str) -> Row | None:
        return next((r for r in self.rows if r.case == case), None)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        if self.log:
            figure = "" if row.figure is None else f"{format_figure(row.figure)} {row.unit}  "
            peak = "" if row.peak_mib is None else f"peak {row.peak_mib:,.0f} MiB  "
            print(f"[{self.name}] {row.case}: {figure}{peak}{row.note}", flush=True)
        return row

    def skip(self, case: str, why: str) -> None:
        if self.row(case) is None:
            self.add(Row(self.name, case, note=f"skipped: {why}"))

    def _spent(self) -> str:
        return f"the time budget of this part ({self.seconds:.0f} s) was spent"

    def prepare(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run the set-up `fn` under the part's time left; None when it fails (the planned cases
        are then skipped with the reason)."""
        t0 = time.perf_counter()
        try:
            with time_limit(self.left()):
                out = fn()
        except BudgetSpent:
            self.reason = f"{what}: not ready when the time budget ({self.seconds:.0f} s) was spent"
        except Exception as e:  # noqa: BLE001 - the part is skipped, the benchmark goes on
            self.errors += 1
            self.reason = f"{what}: set-up failed: {_message(e)}"
        else:
            if self.log:
                print(f"[{self.name}] {what}: ready in {time.perf_counter() - t0:.1f} s", flush=True)
            return out
        if self.log:
            print(f"[{self.name}] {self.reason}", flush=True)
        return None

    def run(
        self,
        case: str,
        fn: Callable[[], tuple[float, str, str]],
        limit: float = math.inf,
        on_error: Callable[[], None] = lambda: None,
    ) -> Row:
        """Run `fn` (-> figure, unit, note) under min(limit, the part's time left); returns its row.

        Time, memory and Skip become a row's note; other errors also count in `errors`.
        `on_error` runs after any of them (e.g. to free GPU memory)."""
        self.plan([case])
        seconds = min(limit, self.left())
        if seconds <= 0:
            self.skip(case, self._spent() if self.left() <= 0 else "its share of the time budget was spent")
            return self.row(case)
        self.reset()
        t0 = time.perf_counter()
        try:
            with time_limit(seconds):
                figure, unit, note = fn()
            row = Row(self.name, case, float(figure), unit, self.peak(), note)
        except BudgetSpent:
            row = Row(self.name, case, note=f"stopped: time limit reached after {time.perf_counter() - t0:.0f} s")
        except Skip as e:
            row = Row(self.name, case, note=f"skipped: {e}")
        except Exception as e:  # noqa: BLE001 - one failing case must not stop the benchmark
            if type(e).__name__ == "OutOfMemoryError":
                row = Row(self.name, case, note="out of memory", peak_mib=self.peak())
            else:
                self.errors += 1
                row = Row(self.name, case, note=f"error: {_message(e)}")
        if row.figure is None:
            on_error()
        return self.add(row)

    def finish(self) -> list[Row]:
        """Rows in planned order; planned cases that never ran are listed as skipped."""
        for case in self.planned:
            self.skip(case, self.reason or self._spent())
        order = {c: i for i, c in enumerate(self.planned)}
        return sorted(self.rows, key=lambda r: order.get(r.case, len(order)))


def _message(e: BaseException) -> str:
    """`Type: first line of the message`, at most 200 characters of it."""
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def format_figure(value: float | None) -> str:
    """3 significant digits, thousands separated: 1,234,000 / 12.3 / 0.0456."""
    if value is None:
        return "-"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{round(value, digits):,.{digits}f}"


def markdown_head(title: str, header: list[str]) -> str:
    """The start of the results document: a title, header bullet lines, the table's head (rows
    follow with `markdown_rows`, so a table can be written part by part)."""
    return (
        "\n".join(
            [f"# {title}", ""]
            + [f"- {h}" for h in header]
            + ["", "| part | case | figure | unit | peak GPU memory (MiB) | note |", "|---|---|---:|---|---:|---|"]
        )
        + "\n"
    )


def markdown_rows(rows: list[Row]) -> str:
    """Table lines of `rows`, one per row."""
    lines = []
    for r in rows:
        peak = "-" if r.peak_mib is None else f"{r.peak_mib:,.0f}"
        lines.append(
            f"| {_cell(r.part)} | {_cell(r.case)} | {format_figure(r.figure)} | {_cell(r.unit)} | "
            f"{peak} | {_cell(r.note)} |\n"
        )
    return "".join(lines)


def markdown(title: str, header: list[str], rows: list[Row]) -> str:
    """The results as one markdown document: a title, header bullet lines, one table."""
    return markdown_head(title, header) + markdown_rows(rows)
