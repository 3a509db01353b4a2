"""A real sweep: `lighthead sweep` -> dask workers -> `lighthead.pipelines.training.loop.train` on a tiny store."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app


@pytest.fixture
def tiny_store(request, tmp_path):
    """The demo store when the suite provides one, else the small synthetic one."""
    try:
        return request.getfixturevalue("demo_store")
    except pytest.FixtureLookupError:
        from tests.conftest_helpers import build_retrieval_store

        return build_retrieval_store(tmp_path / "store")


def test_sweep_trains_real_heads_and_ranks_them_by_validation_rsum(
    dask_client, tiny_store, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "sweep"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lighthead",
            "sweep",
            "vsepp",
            "--store",
            str(tiny_store),
            "--out",
            str(out),
            "--grid",
            "lr=1e-3,1e-2",
            "--grid",
            "margin=0.1,0.2",
            "--set",
            "embed_size=32",
            "--set",
            "word_dim=32",
            "--set",
            "batch_size=16",
            "--set",
            "test=false",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--scheduler",
            dask_client.scheduler.address,
            "--no-progress",
        ],
    )
    assert run_app(app) == 0, capsys.readouterr().err

    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    ranked = [float(r["val/rsum"]) for r in rows]
    assert ranked == sorted(ranked, reverse=True)
    for r in rows:
        d = out / "trials" / r["trial"]
        metrics = json.loads((d / "metrics.json").read_text())
        config = json.loads((d / "config.json").read_text())  # written by the trainer itself
        assert metrics["selection_metric"] == "rsum" and metrics["val"]["rsum"] == pytest.approx(float(r["val/rsum"]))
        assert config["head"] == "vsepp" and config["config"]["epochs"] == 1
        assert (config["overrides"]["lr"], config["overrides"]["margin"]) == (r["lr"], r["margin"])
        assert config["config"]["embed_size"] == 32
        assert (d / "checkpoints" / "best.safetensors").is_file()
    best = json.loads((out / "best.json").read_text())
    assert best["trial"] == rows[0]["trial"] and best["metric"] == "val/rsum"
    assert "best" in capsys.readouterr().out
