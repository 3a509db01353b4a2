"""NaN or infinite scores are an error naming the run, never a perfect rank or a sweep's winner.

Every comparison with NaN is false, so under the "wrong items scoring at least as high" rank a
NaN row had no wrong item above it: a head with NaN weights scored R@1 100 / rsum 600.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from lighthead.heads.metrics import NonFiniteScoresError, retrieval_metrics
from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.pipelines.sweep import report
from lighthead.pipelines.sweep.spec import Trial
from lighthead.pipelines.tasks.retrieval import RetrievalTask
from lighthead.pipelines.tasks.sentiment import sentiment_metrics
from tests.conftest_helpers import TINY, build_small_retrieval_store, train_tiny_run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_small_retrieval_store(tmp_path_factory.mktemp("nan") / "store", seed=5)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    return train_tiny_run(store, tmp_path_factory.mktemp("runs") / "vsepp")


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_score_is_an_error_not_a_rank(bad):
    sims = np.random.default_rng(0).normal(size=(3, 15)).astype(np.float32)
    sims[1, :] = bad
    with pytest.raises(NonFiniteScoresError, match=r"^15 of 45 scores are not finite"):
        retrieval_metrics(sims)
    with pytest.raises(NonFiniteScoresError, match=r"^3 of 6 logits are not finite"):
        sentiment_metrics(np.array([0, 1]), np.array([[0.1, bad, 0.3], [bad, bad, 0.0]]))


def test_a_run_with_nan_weights_is_an_error_naming_it(trained, tmp_path, capsys):
    from lighthead.pipelines.training.evaluate import load_run
    from lighthead.pipelines.training.run_folder import BEST, CHECKPOINTS, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    head = load_run(run, "cpu")["head"]
    with torch.no_grad():
        for p in head.parameters():
            p.fill_(math.nan)
    save_checkpoint(run / CHECKPOINTS / BEST, head)
    assert run_app(app, ["evaluate", str(run), "--device", "cpu"]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {run}: test split: ") and "not finite" in lines[0], lines
    assert not list(run.glob("eval-*"))  # no R@1 100 written anywhere


def nan_scores(self, head, split, device, start=0, stop=None):
    """RetrievalTask.scores of a head whose weights turned NaN."""
    n = min(len(self._require(split).image_ids), stop or math.inf) - start
    return np.full((n, n * self.options.per_image), np.nan, dtype=np.float32)


def test_nan_validation_scores_stop_training_naming_the_run(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(RetrievalTask, "scores", nan_scores)
    out = tmp_path / "run"
    args = ["train", "heads", "vsepp", "--store", str(store), "--out", str(out), "--epochs", "1", "--no-progress"]
    args += [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    assert run_app(app, args) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: epoch 1, val split: ") and "NaN" in lines[0], lines
    assert not (out / "checkpoints" / "best.safetensors").exists()


def test_a_sweep_trial_with_nan_scores_fails_and_never_wins(store, tmp_path, monkeypatch):
    from lighthead.pipelines.sweep.trial import run_trial, trial_dir

    monkeypatch.setattr(RetrievalTask, "scores", nan_scores)
    trial = Trial("vsepp", tuple(sorted(TINY.items())), epochs=1)
    with pytest.raises(NonFiniteScoresError):
        run_trial(trial.to_json(), str(store), str(tmp_path), device="cpu")
    assert not trial_dir(tmp_path, trial.id).exists()  # failed: no finished trial folder to rank

    # finished trials whose metric is NaN or infinite (written by another trainer) never win
    def row(lam: str, value: float) -> report.Row:
        t = Trial("itin", (("lam", lam),), swept=("lam",))
        return report.Row(t, "done", report.flatten({"val": {"rsum": value}}))

    rows = report.rank([row("0.1", math.nan), row("0.2", math.inf), row("0.3", 12.0)], "val/rsum")
    assert rows[0].trial.params["lam"] == "0.3"
    assert report.write_best(rows, "val/rsum", tmp_path / "best.json")["value"] == 12.0
    only_bad = report.rank([row("0.1", math.nan), row("0.2", math.inf)], "val/rsum")
    assert report.write_best(only_bad, "val/rsum", tmp_path / "best2.json") is None
    assert not (tmp_path / "best2.json").exists()
    assert json.loads((tmp_path / "best.json").read_text())["overrides"] == {"lam": "0.3"}
