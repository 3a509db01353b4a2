"""What the CLI prints: readable `--help` for every command; the extraction summary's weights column.

`extract` in a log file: tests/pipelines/test_features_runner.py::test_cli_extract_in_a_log.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from lighthead.pipelines.cli import app
from lighthead.pipelines.features import ExtractOptions
from lighthead.pipelines.features.runner import run_extract
from lighthead.store import open_store
from tests.pipelines.datasets import fixtures

# Python type names as typer prints them: <bool>, <str>, <int>, <path>, <list[str]>, <tuple[...]>.
PY_TYPE = re.compile(r"<(bool|str|int|float|path|file|dir|directory|uuid|datetime|list\[|tuple\[|dict\[)")


def _commands(cmd, path=()):
    """(path, click command) for the root and every command under it."""
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _squash(text: str) -> str:
    """The help text with the panels' borders removed and runs of spaces made one."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def test_every_help_shows_value_names_not_python_types(monkeypatch):
    monkeypatch.setenv("TERMINAL_WIDTH", "200")  # typer's help width: whole rows on one line
    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) >= 10  # root, demo, extract, train, train heads, evaluate, sweep, store and its four
    runner = CliRunner()
    for path, cmd in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        assert not PY_TYPE.search(text), (path, PY_TYPE.search(text).group(0), text)
        flat = _squash(text)
        for p in cmd.params:
            if getattr(p, "is_flag", False) and not p.hidden and p.help:
                # A flag is followed directly by its help text (or its --no- twin): no value name.
                opts = " ".join(p.opts[-1:] + p.secondary_opts[-1:])
                assert f"{opts} {p.help.split()[0]}" in flat, (path, opts, flat)
    extract = _squash(runner.invoke(app, ["extract", "--help"]).output)
    assert "--features a,b,..." in extract and "-o KEY=VALUE" in extract and "--batch-size N" in extract
    assert "--random-weights random model weights" in extract
    assert "--set KEY=VALUE" in _squash(runner.invoke(app, ["train", "heads", "--help"]).output)
    assert "--grid KEY=V1,V2" in _squash(runner.invoke(app, ["sweep", "--help"]).output)
    assert "FORMAT npz|precomp|tsv" in _squash(runner.invoke(app, ["store", "import", "--help"]).output)


@pytest.fixture()
def coco(tmp_path):
    return fixtures.karpathy(tmp_path / "coco", n_images=6)


def test_summary_flags_what_the_stored_set_holds(coco, tmp_path, capsys):
    """A rerun without --random-weights on a set extracted with random weights still says RANDOM."""
    store_path = tmp_path / "store"
    opts = dict(batch_size=4, loader_workers=0, progress=False, dtype="float32")
    first = run_extract("coco", coco, store_path, ["minilm"], ExtractOptions(random_weights=True, **opts))
    assert first[0].random_weights and first[0].written == 30
    capsys.readouterr()

    again = run_extract("coco", coco, store_path, ["minilm"], ExtractOptions(random_weights=False, **opts))
    assert (again[0].written, again[0].already_done) == (0, 30)
    assert again[0].random_weights is True
    out = capsys.readouterr()
    row = next(line for line in out.out.splitlines() if "text/all-minilm-l6-v2" in line)
    assert row.split("│")[-2].strip() == "RANDOM"  # the weights column
    assert (out.out + out.err).count("UNTRAINED") == 1 and "marked RANDOM" in out.out
    assert open_store(store_path).read_json("extract_summary")[-1]["jobs"][0]["random_weights"] is True
