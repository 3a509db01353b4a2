"""click's own usage errors (missing argument, unknown option, bad value) are one `error:` line
naming the argument or option, exit code 2, no `Usage: ... Error:` box; `--help` is unchanged."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app


@pytest.mark.parametrize(
    "args, names",
    [
        (["evaluate"], ["missing argument 'RUN'", "evaluate --help"]),  # missing argument
        (["extract", "--dataset", "demo", "--store", "s", "--no-such-flag"], ["no such option: --no-such-flag"]),
        (["store", "import", "parquet", "src", "dest"], ["invalid value for 'FORMAT'", "'parquet'", "'precomp'"]),
        (["extract", "--dataset", "demo", "--store", "s", "--batch-size", "many"], ["'--batch-size'"]),
        (["train", "heads", "casc", "--store", "s", "--out", "o", "--threads", "0"], ["'--threads'"]),
    ],
)
def test_usage_errors_are_one_line(args, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the repository
    assert run_app(app, args) == 2
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and out.out == "", out
    assert all(name in lines[0] for name in names), lines[0]
    assert "Usage:" not in out.err and "Traceback" not in out.err
    assert list(tmp_path.iterdir()) == []


def test_help_is_unchanged(capsys):
    for args in (["extract", "--help"], ["store", "import", "--help"]):
        assert run_app(app, args) == 0
        shown = capsys.readouterr()
        prog = re.search(r"Usage: (.*?) " + args[0], shown.out).group(1)  # `lighthead`, or how pytest was started
        assert shown.out == CliRunner().invoke(app, args, prog_name=prog).output and shown.err == ""
    assert run_app(app, ["train"]) == 2  # a group without its command still shows its help
    assert "Usage:" in capsys.readouterr().out
