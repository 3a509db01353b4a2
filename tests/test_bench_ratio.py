"""bench/ratio.py: sides alternate within rounds, rounds go on until both the round and the
seconds floors are met, and a ratio is the median of per-round ratios with its min-max."""

from __future__ import annotations

import argparse

import pytest

from bench.ratio import Ratio, Rounds, add_arguments, interleave, options, report, timed_rate


class Clock:
    """A fake perf_counter that only the sides move."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def side(clock: Clock, seconds: float, rates: list[float], calls: list[str], name: str):
    it = iter(rates)

    def run() -> float:
        calls.append(name)
        clock.now += seconds
        return next(it)

    return run


def test_sides_alternate_and_the_ratio_is_the_per_round_median():
    clock, calls = Clock(), []
    a = side(clock, 1.0, [10, 10, 10, 10, 10, 10], calls, "a")
    b = side(clock, 1.0, [5, 2, 10, 4, 3, 1], calls, "b")
    rounds = interleave({"a": a, "b": b}, min_rounds=5, min_seconds=0, clock=clock)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]  # A B, B A, ...
    assert rounds.order == calls and len(rounds) == 5
    r = rounds.ratio("b", "a")
    assert r == Ratio(median=0.4, low=0.2, high=1.0, pairs=5)  # per round: .5 .2 1 .4 .3
    assert str(r) == "0.40 (0.20-1.00, 5 pairs)"
    assert rounds.median("b") == 4
    assert rounds.seconds == {"a": 5.0, "b": 5.0}


def test_rounds_go_on_until_every_side_has_had_its_seconds():
    clock, calls = Clock(), []
    fast = side(clock, 0.5, [1.0] * 100, calls, "fast")
    slow = side(clock, 3.0, [1.0] * 100, calls, "slow")
    rounds = interleave({"fast": fast, "slow": slow}, min_rounds=5, min_seconds=10, clock=clock)
    assert len(rounds) == 20  # the fast side needs 20 rounds for 10 s; 5 would do for the slow one
    assert rounds.seconds["fast"] == pytest.approx(10.0)


def test_slow_sides_still_get_the_minimum_rounds_and_max_seconds_caps_the_rest():
    clock, calls = Clock(), []
    a = side(clock, 30.0, [1.0] * 100, calls, "a")
    b = side(clock, 1.0, [1.0] * 100, calls, "b")
    assert len(interleave({"a": a, "b": b}, min_rounds=5, min_seconds=10, clock=clock)) == 10  # b: 10 s
    clock.now, calls[:] = 0.0, []
    assert len(interleave({"a": a, "b": b}, min_rounds=5, min_seconds=1e9, max_seconds=100, clock=clock)) == 5


def test_three_sides_reverse_every_other_round_and_combine_per_round():
    clock, calls = Clock(), []
    sides = {
        n: side(clock, 1.0, rates, calls, n)
        for n, rates in (("x", [1, 1, 1, 1, 1]), ("y", [2, 4, 3, 2, 2]), ("z", [3, 1, 6, 1, 3]))
    }
    rounds = interleave(sides, min_rounds=5, min_seconds=0, clock=clock)
    assert calls[:6] == ["x", "y", "z", "z", "y", "x"]
    assert rounds.combine(lambda r: max(r["y"], r["z"]) / r["x"]) == Ratio(3, 2, 6, 5)


def test_report_prints_the_spread_then_script_lines_with_the_last_figure_last(capsys):
    report({"a_vs_b": Ratio(0.5, 0.25, 1.0, 6), "bytes": 147486, "c_vs_d": Ratio(2.0, 1.5, 2.5, 5)})
    assert capsys.readouterr().out.splitlines() == [
        "ratios: median (min-max over interleaved pairs)",
        "  a_vs_b  0.50 (0.25-1.00, 6 pairs)",
        "  c_vs_d  2.00 (1.50-2.50, 5 pairs)",
        "a_vs_b: 0.50",
        "bytes: 147486",
        "c_vs_d: 2.00",
    ]


def test_options_never_go_below_five_rounds():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    add_arguments(ap)
    assert options(ap.parse_args([])) == {"min_rounds": 5, "min_seconds": 10.0}
    assert options(ap.parse_args(["--quick", "--rounds", "2"])) == {"min_rounds": 5, "min_seconds": 3.0}
    assert options(ap.parse_args(["--rounds", "9", "--seconds", "0"])) == {"min_rounds": 9, "min_seconds": 0.0}


def test_no_rounds_is_an_error():
    with pytest.raises(ValueError):
        Rounds({"a": []}).ratio("a", "a")


def test_a_fast_side_repeats_within_its_turn():
    clock, calls = Clock(), []
    run = side(clock, 0.25, [0.0] * 10, calls, "x")
    assert timed_rate(run, 100, 1.0, clock=clock) == pytest.approx(400.0)  # 4 calls of 100 items in 1 s
    assert len(calls) == 4
    assert timed_rate(run, 100, 0.0, clock=clock) == pytest.approx(400.0) and len(calls) == 5  # once at least
    assert timed_rate(lambda: (clock.__setattr__("now", clock.now + 0.5), 3)[1], None, 1.0, clock=clock) == 6.0
