"""Stores and run folders written by an earlier version still load and give the same numbers.

tests/data/compat/ holds a tiny store and a one-epoch vsepp run written by the code of the
commit that added them (tests/data/make_compat.py, with the numbers it measured in
expected.json). A change to the store format, the run folder or the CLI that breaks them fails
here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

DATA = Path(__file__).resolve().parent / "data" / "compat"
EXPECTED = json.loads((DATA / "expected.json").read_text())


@pytest.fixture()
def compat(tmp_path):
    """A copy of the committed store and run (tests write into runs), the run pointing at the copied store."""
    store, run = tmp_path / "store", tmp_path / "run"
    shutil.copytree(DATA / "store", store)
    shutil.copytree(DATA / "run", run)
    config = json.loads((run / "config.json").read_text())
    config["store"] = str(store)
    (run / "config.json").write_text(json.dumps(config, indent=1))
    return store, run


def test_old_store_verifies_and_reads(compat):
    from lighthead.pipelines.cli import app
    from lighthead.store import open_store

    store, _ = compat
    res = CliRunner().invoke(app, ["store", "verify", str(store)])
    assert res.exit_code == 0, res.output
    fs = open_store(store)["regions/butd-r101-vg-36"]
    assert fs.ids == EXPECTED["ids"]
    assert float(fs[fs.ids[0]]["features"].astype("float64").sum()) == EXPECTED["regions_first_sum"]
    res = CliRunner().invoke(app, ["store", "info", str(store)])
    assert res.exit_code == 0 and "regions/butd-r101-vg-36" in res.output, res.output


@pytest.mark.parametrize("split", ["test", "train"])
def test_old_run_evaluates_to_the_same_numbers(compat, split):
    from lighthead.pipelines.cli import app

    _, run = compat
    res = CliRunner().invoke(app, ["evaluate", str(run), "--split", split, "--threads", "1"])
    assert res.exit_code == 0, res.output
    written = json.loads((run / f"eval-{split}-1k.json").read_text())
    assert written == EXPECTED["evaluate"][split]


def test_old_run_resumes(compat):
    """The last checkpoint (weights, optimiser and RNG states) of an old run continues training."""
    from lighthead.pipelines.training.loop import train

    store, run = compat
    metrics = train("vsepp", store, run, epochs=2, resume=True, progress=False)
    assert metrics["epochs_done"] == 2 and len(metrics["history"]) == 2
    assert metrics["history"][0] == json.loads((DATA / "run" / "metrics.json").read_text())["history"][0]
