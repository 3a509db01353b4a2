"""`lighthead demo` prints at the terminal's own width (it used to force 120 columns, which a
narrower terminal wraps)."""

from __future__ import annotations

import re

from lighthead.pipelines.demo import run_demo

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_demo_output_fits_a_narrow_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich treats stdout as a terminal ...
    monkeypatch.setenv("COLUMNS", "60")  # ... 60 columns wide
    out = tmp_path / ("a-long-output-folder-name-" * 3)  # the data line is longer than 60 columns
    run_demo(out, n_images=2, stages=("data",), threads=None)
    lines = [ANSI.sub("", line) for line in capsys.readouterr().out.splitlines()]
    text = "".join(lines)
    assert "demo data" in text and str(out / "data").replace("\n", "") in text
    assert len(lines) > 1 and max(len(line) for line in lines) <= 60, lines
