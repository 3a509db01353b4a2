"""One end-to-end run through the CLI on the demo data: extract, train, evaluate, verify."""

import json
import re

import pytest
from typer.testing import CliRunner

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.store import open_store, verify


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--n-images", "60"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_fills_a_store_that_verifies(demo_out):
    out, _ = demo_out
    store = open_store(out / "store")
    assert verify(out / "store") == []
    expected = {
        "regions/butd-r101-vg-given",
        "regions/butd-r101-vg-36",
        "text/all-minilm-l6-v2",
        "words/vocab",
        "global/resnet18",
        "thumbs/64",
    }
    assert expected <= set(store.names())
    assert len(store["regions/butd-r101-vg-36"]) == 60
    assert store["regions/butd-r101-vg-36"].attrs["random_weights"] is True
    records = store.read_json("records")
    assert len(store["text/all-minilm-l6-v2"]) == sum(len(r["texts"]) for r in records)


def test_demo_trains_and_reports_every_head(demo_out):
    out, output = demo_out
    casc = json.loads((out / "runs" / "casc" / "metrics.json").read_text())
    assert {"i2t_r1", "t2i_r1", "rsum"} <= set(casc["test"])
    for head in ("itin", "itm"):
        metrics = json.loads((out / "runs" / head / "metrics.json").read_text())["test"]
        assert 0 <= metrics["accuracy"] <= 100 and "macro_f1" in metrics
    assert "random scores" in output and "majority-class baseline" in output
    assert "i2t R@1" in output


def test_demo_output_reads_well_in_a_log(demo_out):
    """Not a terminal: the random-weights warning once, plain progress lines, epoch lines with no
    blank line before them."""
    _, output = demo_out
    lines = output.splitlines()
    assert output.count("UNTRAINED") == 1
    assert "\r" not in output and "\x1b" not in output  # no cursor moves or colour codes
    assert not re.search(r"━+ +\d+/\d+", output)  # no progress bars
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(epochs) >= 3 and all(lines[i - 1].strip() for i in epochs)
    assert any(line.startswith("regions36: 60/60 (100%), ") and "items/s, done in " in line for line in lines)


def test_rerun_resumes_extraction(demo_out):
    out, _ = demo_out
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--n-images", "60", "--stages", "data,extract"])
    assert result.exit_code == 0, result.output
    summary = open_store(out / "store").read_json("extract_summary")[-1]["jobs"]
    assert all(job["written"] == 0 and job["already_done"] > 0 for job in summary)


def test_cli_errors_are_one_line_and_non_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["lighthead", "demo", "--out", str(tmp_path), "--stages", "bogus"])
    assert run_app(app) != 0
    monkeypatch.setattr("sys.argv", ["lighthead", "store", "verify", str(tmp_path / "missing")])
    assert run_app(app) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "missing" in err
