"""Ratios between rates timed on a shared, noisy machine: interleaved, repeated, summarised.

Timed once, a rate on a busy 2-core machine can be off by 2x or more, and two sides timed one
after the other see different loads (two quick runs minutes apart once gave 24x and 7.5x for
the same ratio). So every bench that prints a ratio times its sides in rounds with
`interleave`: each round runs every side once, in an order that reverses from one round to
the next (A B, B A, A B, ...) so that a drift in the load falls on all sides alike; a ratio is
taken within each round, and the figure is its median over the rounds, printed with its
min-max. Rounds go on until there are at least `min_rounds` of them and every side has run
for at least `min_seconds` in all (5 rounds and 10 s by default; `--quick` runs pass fewer
seconds, never fewer rounds), or until `max_seconds` have passed.

Output (`report`): a block of `name  median (min-max, N pairs)` lines, then one
`name: median` line per figure for scripts, the bench's main figure last.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

MIN_ROUNDS = 5  # fewest rounds (pairs of a two-sided ratio), whatever the seconds
MIN_SECONDS = 10.0  # fewest seconds each side runs in all (full runs)
QUICK_SECONDS = 3.0  # the same with --quick


@dataclass(frozen=True)
class Ratio:
    """The median of per-round ratios, with their range."""

    median: float
    low: float  # smallest per-round ratio
    high: float  # largest per-round ratio
    pairs: int  # rounds the ratio was taken in

    @classmethod
    def of(cls, values: list[float]) -> Ratio:
        if not values:
            raise ValueError("no rounds to take a ratio over")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f}, {self.pairs} pairs)"


@dataclass
class Rounds:
    """What `interleave` measured: every side's rate in every round, in round order."""

    rates: dict[str, list[float]]  # side -> its rate in each round
    seconds: dict[str, float] = field(default_factory=dict)  # side -> wall seconds it ran in all
    order: list[str] = field(default_factory=list)  # sides in the order they ran (every round)

    def __len__(self) -> int:
        return min((len(v) for v in self.rates.values()), default=0)

    def median(self, side: str) -> float:
        """The median rate of one side."""
        return statistics.median(self.rates[side])

    def combine(self, fn: Callable[[dict[str, float]], float]) -> Ratio:
        """`fn` of each round's rates ({side: rate}), summarised over the rounds."""
        return Ratio.of([fn({s: r[i] for s, r in self.rates.items()}) for i in range(len(self))])

    def ratio(self, side: str, base: str) -> Ratio:
        """side / base, taken within each round."""
        return self.combine(lambda r: r[side] / r[base])


def interleave(
    sides: Mapping[str, Callable[[], float]],
    min_rounds: int = MIN_ROUNDS,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = math.inf,
    clock: Callable[[], float] = time.perf_counter,
) -> Rounds:
    """Time `sides` (name -> a callable doing one measured run and returning its rate, higher
    is faster) in rounds, the order reversed every other round; see the module docstring for
    when it stops. `max_seconds` bounds the whole (never below `min_rounds`)."""
    names = list(sides)
    out = Rounds({n: [] for n in names}, dict.fromkeys(names, 0.0))
    start = clock()
    while True:
        for name in names if len(out) % 2 == 0 else names[::-1]:
            t0 = clock()
            rate = float(sides[name]())
            out.seconds[name] += clock() - t0
            out.rates[name].append(rate)
            out.order.append(name)
        if len(out) >= min_rounds and (min(out.seconds.values()) >= min_seconds or clock() - start >= max_seconds):
            return out


def timed_rate(
    fn: Callable[[], object], count: float | None, seconds: float, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Items per second of calling `fn` once, or again until `seconds` have passed: `count`
    items per call, or (count None) the number each call returns.

    A side much faster than the others runs repeatedly within its turn, so that every side
    gets its seconds in about the same number of rounds (pass min_seconds / min_rounds)."""
    items, t0 = 0.0, clock()
    while True:
        done = fn()
        items += count if count is not None else float(done)
        elapsed = clock() - t0
        if elapsed >= seconds:
            return items / elapsed


def report(figures: Mapping[str, Ratio | float], digits: int = 2) -> None:
    """Print the spread block, then `name: median` per figure (the last one last).

    A plain float (not a ratio, e.g. bytes per item) goes only to the script lines."""
    ratios = {k: v for k, v in figures.items() if isinstance(v, Ratio)}
    if ratios:
        width = max(map(len, ratios))
        print("ratios: median (min-max over interleaved pairs)")
        for name, r in ratios.items():
            print(f"  {name:<{width}}  {r}")
    for name, v in figures.items():
        value = v.median if isinstance(v, Ratio) else v
        print(
            f"{name}: {value:.{digits}f}" if isinstance(v, Ratio) or not float(v).is_integer() else f"{name}: {int(v)}"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--rounds` and `--seconds`, the options every ratio bench takes."""
    parser.add_argument(
        "--rounds", type=int, default=MIN_ROUNDS, help=f"fewest interleaved rounds per ratio (at least {MIN_ROUNDS})"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"fewest seconds each side runs in all (default {MIN_SECONDS:g}, --quick {QUICK_SECONDS:g})",
    )


def options(args: argparse.Namespace) -> dict:
    """`interleave` keyword arguments from the parsed `--rounds`, `--seconds` and `--quick`."""
    seconds = args.seconds if args.seconds is not None else (QUICK_SECONDS if args.quick else MIN_SECONDS)
    return {"min_rounds": max(MIN_ROUNDS, args.rounds), "min_seconds": seconds}
