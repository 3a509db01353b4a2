"""Output that reads well in a terminal and in a log (CI, `| tee`, a SLURM .out file).

Every command prints through these two factories:
- `console(stderr)`: a rich console. On a terminal it is rich's usual one. Otherwise its width
  is fixed (`$COLUMNS`, else `LOG_WIDTH`) instead of rich's 80 columns, text lines are never
  wrapped, and there are no colours or cursor moves.
- `progress(description, total)`: a context manager yielding a `Tracker`. On a terminal it draws
  a rich bar (count, %, rate, elapsed, ETA). Otherwise it prints plain lines: one at each 10%
  step (at most one per `min_gap` seconds), one at least every `every` seconds while work goes
  on, and a last line with the count, the rate and the time taken.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

LOG_WIDTH = 160  # columns of tables and rules when the output is not a terminal ($COLUMNS wins)
STEPS = 10  # plain progress: a line at each 1/STEPS of the total
EVERY_S = 60.0  # plain progress: a line at least this often while work goes on
MIN_GAP_S = 5.0  # plain progress: step lines no closer than this (short jobs print one line)


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that suits where that stream goes (see the module doc)."""
    stream = Console(stderr=stderr)
    if stream.is_terminal:
        return stream
    width = None if os.environ.get("COLUMNS", "").isdigit() else LOG_WIDTH  # rich reads $COLUMNS itself
    return Console(stderr=stderr, width=width, soft_wrap=True)


def duration(seconds: float) -> str:
    """h:mm:ss, as rich's elapsed/remaining columns show it."""
    if not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class Tracker:
    """What a progress context yields: `advance(n, **fields)` / `update(...)` / `print(...)`.

    `fields` fill the `extra` template of `progress` (e.g. the running loss). The plain lines
    are written by `line`; rich bars by `_bar`.
    """

    description: str  # shown first on the bar or line
    total: int | None  # None: unknown (the line shows only the count)
    out: Console  # where lines and messages go
    unit: str | None = "items"  # rate unit ("items" -> "12.5 items/s"); None: no rate
    extra: str = ""  # template appended to every line, filled from `fields`
    fields: dict[str, Any] = field(default_factory=dict)  # current values for `extra`
    completed: int = 0  # work done so far
    steps: int = STEPS  # plain lines at each 1/steps of the total; 0: time-based lines only
    every: float = EVERY_S  # plain lines at least this often (seconds); 0: never time-based
    min_gap: float = MIN_GAP_S  # step lines no closer than this (seconds)
    clock: Callable[[], float] = time.monotonic  # injectable for tests
    enabled: bool = True  # False: count silently (messages from `print` still show)
    _bar: Any = None  # (rich Progress, task id) on a terminal
    _start: float = 0.0
    _start_count: int = 0
    _last_line: float = 0.0
    _last_step: int = 0

    def __post_init__(self) -> None:
        self._start = self._last_line = self.clock()
        self._start_count = self.completed
        self._last_step = self._step()

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.update(completed=self.completed + n, **fields)

    def update(
        self, completed: int | None = None, total: int | None = None, description: str | None = None, **fields: Any
    ) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        self.fields.update(fields)
        if self._bar is not None:
            bar, task = self._bar
            bar.update(
                task, completed=self.completed, total=self.total, description=self.description, extra=self._extra()
            )
            return
        if not self.enabled:
            return
        now = self.clock()
        step = self._step()
        if (step > self._last_step and now - self._last_line >= self.min_gap and step < self.steps) or (
            self.every and now - self._last_line >= self.every
        ):
            self.line()
            self._last_step = step

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """A message above the bar (on a terminal) or between the lines."""
        (self._bar[0].console if self._bar is not None else self.out).print(*objects, **kwargs)

    def line(self, final: bool = False) -> str:
        """Print (and return) one plain progress line."""
        now = self.clock()
        elapsed = now - self._start
        done = self.completed - self._start_count
        rate = done / elapsed if elapsed > 0 else math.nan
        if self.total:
            pct = 100 * self.completed // self.total
            parts = [f"{self.description}: {self.completed:,}/{self.total:,} ({pct}%)"]
        else:
            parts = [f"{self.description}: {self.completed:,}" + (f" {self.unit}" if self.unit else "")]
        if self.unit and math.isfinite(rate):
            parts.append(f"{rate:,.1f} {self.unit}/s")
        if final:
            parts.append(f"done in {duration(elapsed)}")
        else:
            parts.append(f"{duration(elapsed)} elapsed")
            if self.total and math.isfinite(rate) and rate > 0:
                parts.append(f"ETA {duration((self.total - self.completed) / rate)}")
        text = ", ".join(parts) + self._extra()
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)
        self._last_line = now
        return text

    def _step(self) -> int:
        if not self.steps or not self.total:
            return 0
        return min(self.steps, self.completed * self.steps // self.total)

    def _extra(self) -> str:
        if not self.extra:
            return ""
        try:
            return self.extra.format(**self.fields)
        except (KeyError, ValueError):  # a field not reported yet
            return ""


class _Rate(ProgressColumn):
    """Items per second (rich's own speed column shows no unit)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            f"-- {self.unit}/s" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed"
        )


@contextlib.contextmanager
def progress(
    description: str,
    total: int | None,
    enabled: bool = True,
    *,
    unit: str | None = "items",
    extra: str = "",
    completed: int = 0,
    transient: bool = False,
    final: bool = True,
    steps: int = STEPS,
    every: float = EVERY_S,
    min_gap: float = MIN_GAP_S,
    out: Console | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Tracker]:
    """Progress over `total` units of work: a rich bar on a terminal, plain lines elsewhere.

    unit: what is counted, for the rate ("items/s"); None shows no rate. extra: a template
    (`" | loss {loss:.4f}"`) filled from the fields passed to `advance`/`update`. final: print a
    last plain line on a clean exit (off where the caller prints its own, e.g. epoch lines).
    transient: the bar disappears when done. out: the console to draw on (default stderr).
    Disabled: a Tracker that prints nothing.
    """
    out = out or console(stderr=True)
    tracker = Tracker(
        description,
        total,
        out,
        unit=unit,
        extra=extra,
        completed=completed,
        steps=steps,
        every=every,
        min_gap=min_gap,
        clock=clock,
        enabled=enabled,
    )
    if not enabled or not out.is_terminal:
        yield tracker
        if enabled and final:
            tracker.line(final=True)
        return
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
    ]
    if unit:
        columns.append(_Rate(unit))
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    if extra:
        columns.append(TextColumn("{task.fields[extra]}"))
    with Progress(*columns, console=out, transient=transient) as bar:
        task = bar.add_task(description, total=total, completed=completed, extra="")
        tracker._bar = (bar, task)
        yield tracker
