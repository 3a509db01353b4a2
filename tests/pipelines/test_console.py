"""Output in a log (not a terminal): plain progress lines, wide tables, one warning, no blank lines."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from lighthead.pipelines.console import LOG_WIDTH, console, progress
from lighthead.pipelines.features import RunSummary
from lighthead.pipelines.features.runner import print_summary
from tests.conftest_helpers import build_retrieval_store


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _log() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=LOG_WIDTH, soft_wrap=True), buf


LINE = re.compile(r"^job: (\d+)/100 \((\d+)%\), ([\d.]+) items/s, 0:00:(\d\d) elapsed, ETA 0:00:(\d\d)$")


def test_plain_progress_prints_a_line_per_ten_percent_and_a_final_line():
    out, buf = _log()
    clock = Clock()
    with progress("job", 100, out=out, clock=clock, min_gap=0) as p:
        for _ in range(20):  # 5 items a second: 10 items/s
            clock.t += 0.5
            p.advance(5)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 10, lines  # 10%, 20%, ..., 90% and the final line
    for i, line in enumerate(lines[:-1], 1):
        m = LINE.match(line)
        assert m, line
        done, pct, rate, elapsed, eta = m.groups()
        assert (int(done), int(pct), float(rate), int(elapsed), int(eta)) == (10 * i, 10 * i, 10.0, i, 10 - i)
    assert lines[-1] == "job: 100/100 (100%), 10.0 items/s, done in 0:00:10"


def test_short_jobs_print_few_lines_and_slow_ones_a_line_every_minute():
    out, buf = _log()
    clock = Clock()
    with progress("job", 100, out=out, clock=clock) as p:  # default 5 s between step lines
        for _ in range(10):
            clock.t += 1
            p.advance(10)
    assert [line.split(",")[0] for line in buf.getvalue().splitlines()] == ["job: 50/100 (50%)", "job: 100/100 (100%)"]

    out, buf = _log()
    clock = Clock()
    with progress(
        "epoch 1/3", 10, out=out, clock=clock, steps=0, final=False, unit=None, extra=" | loss {loss:.4f}"
    ) as p:
        for i in range(10):
            clock.t += 25
            p.advance(1, loss=1.0 / (i + 1))
    assert buf.getvalue().splitlines() == [  # each once 60 s have passed since the last line; no final line
        "epoch 1/3: 3/10 (30%), 0:01:15 elapsed, ETA 0:02:55 | loss 0.3333",
        "epoch 1/3: 6/10 (60%), 0:02:30 elapsed, ETA 0:01:40 | loss 0.1667",
        "epoch 1/3: 9/10 (90%), 0:03:45 elapsed, ETA 0:00:25 | loss 0.1111",
    ]


def test_unknown_total_disabled_and_terminal_progress():
    out, buf = _log()
    clock = Clock()
    with progress("import tsv", None, out=out, clock=clock) as p:
        clock.t = 4
        p.update(completed=1200, total=None)
    assert buf.getvalue() == "import tsv: 1,200 items, 300.0 items/s, done in 0:00:04\n"

    out, buf = _log()
    with progress("job", 10, enabled=False, out=out) as p:
        p.advance(10)
        p.print("a message still shows")
    assert buf.getvalue() == "a message still shows\n"

    tty = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress("job", 10, out=tty) as p:
        p.advance(10)
        assert p._bar is not None  # a rich bar, not plain lines
    assert "job" in tty.file.getvalue() and "items/s" in tty.file.getvalue()


def test_log_console_is_wide_and_never_wraps(monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)
    con = console()
    assert not con.is_terminal and con.width == LOG_WIDTH
    table = Table(title="wide")
    for i in range(6):
        table.add_column(f"column number {i}")
    table.add_row(*[f"value-{i}-" + "x" * 12 for i in range(6)])
    con.print(table)
    con.print("a long line " * 20)
    lines = capsys.readouterr().out.splitlines()
    table_lines = lines[:-1]
    assert max(len(line) for line in table_lines) <= LOG_WIDTH
    assert any("column number 5" in line and "column number 0" in line for line in table_lines)  # one row, not wrapped
    assert lines[-1].strip() == ("a long line " * 20).strip()  # one line of 240 columns, not wrapped
    monkeypatch.setenv("COLUMNS", "100")
    assert console().width == 100


def test_extraction_summary_in_a_log_is_not_truncated(monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)
    rows = [
        RunSummary("given-boxes", "regions/butd-r101-vg-given", 300, 0, [], 2.9, True),
        RunSummary("minilm", "text/all-minilm-l6-v2", 2639, 120000, [], 9.0, False),
    ]
    print_summary(rows)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "…" not in out and max(map(len, lines)) <= LOG_WIDTH
    header = next(line for line in lines if "job" in line)
    assert re.findall(r"\w+(?: \w+)?", header) == ["job", "feature set", "new", "had", "skipped", "seconds", "weights"]
    assert any("regions/butd-r101-vg-given" in line and "RANDOM" in line for line in lines)
    assert out.count("UNTRAINED") == 1


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return build_retrieval_store(
        tmp_path_factory.mktemp("log") / "store",
        n_images=20,
        splits=(12, 4, 4),
        region_dim=16,
        num_regions=4,
        global_dim=16,
        token_dim=8,
        seed=3,
    )


def test_train_in_a_log_prints_one_plain_line_per_epoch(tiny_store, tmp_path):
    from lighthead.pipelines.cli import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            "heads",
            "vsepp",
            "--store",
            str(tiny_store),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "2",
            "--set",
            "embed_size=8",
            "--set",
            "word_dim=8",
            "--set",
            "batch_size=16",
        ],
    )
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert len(err) == 2, err  # no blank lines, no bar remnants: the epoch lines only
    for i, line in enumerate(err, 1):
        assert re.fullmatch(
            rf"epoch {i}: loss \d+\.\d{{4}} triplet \d+\.\d{{4}} \| \d+ samples/s \| val rsum \d+\.\d\d", line
        ), line
    assert result.stdout.startswith("best epoch ")  # nothing (no blank line) before it
