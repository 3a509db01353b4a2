"""CPU threads: `--threads` reaches torch.set_num_threads (train records the count in
config.json), OMP_NUM_THREADS wins when `--threads` is not given, and the default is
min(4, half the usable cores)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lighthead.pipelines import threads as th
from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from tests.conftest_helpers import build_retrieval_store

TINY = [
    "--set",
    "embed_size=8",
    "--set",
    "word_dim=8",
    "--set",
    "batch_size=16",
    "--set",
    "val_images=0",
    "--set",
    "test=false",
    "--epochs",
    "1",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch):
    """Each test starts without OMP_NUM_THREADS and leaves torch's thread count as it found it."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_retrieval_store(
        tmp_path_factory.mktemp("threads") / "store",
        n_images=24,
        splits=(16, 4, 4),
        region_dim=16,
        num_regions=4,
        global_dim=16,
        token_dim=8,
    )


def lighthead(*args) -> int:
    return run_app(app, [str(a) for a in args])


@pytest.mark.parametrize("cores, want", [(1, 1), (2, 1), (3, 1), (4, 2), (6, 3), (8, 4), (64, 4)])
def test_default_is_half_the_cores_at_most_four(monkeypatch, cores, want):
    monkeypatch.setattr(th, "usable_cores", lambda: cores)
    assert th.default_threads() == want
    assert th.default_threads(cap=1) == 1


def test_omp_num_threads_wins(monkeypatch):
    monkeypatch.setattr(th, "usable_cores", lambda: 64)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert th.default_threads() == 3 and th.default_threads(cap=1) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "6,2")  # nested levels: the first is ours
    assert th.default_threads() == 6
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
            th.default_threads()


def test_usable_cores_respects_the_affinity_mask():
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert 1 <= th.usable_cores() <= allowed


def test_use_threads_sets_torch():
    assert th.use_threads(2) == 2 and torch.get_num_threads() == 2
    with pytest.raises(ValueError):
        th.use_threads(0)


def recorded(run) -> int:
    return json.loads((run / "config.json").read_text())["threads"]


def test_train_threads_option_reaches_torch(store, tmp_path):
    torch.set_num_threads(1)
    assert lighthead("train", "heads", "vsepp", "--store", store, "--out", tmp_path / "a", "--threads", 2, *TINY) == 0
    assert recorded(tmp_path / "a") == 2 and torch.get_num_threads() == 2


def test_train_without_option_takes_omp_num_threads_then_the_default(store, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert lighthead("train", "heads", "vsepp", "--store", store, "--out", tmp_path / "omp", *TINY) == 0
    assert recorded(tmp_path / "omp") == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(th, "usable_cores", lambda: 4)
    assert lighthead("train", "heads", "vsepp", "--store", store, "--out", tmp_path / "default", *TINY) == 0
    assert recorded(tmp_path / "default") == 2


def test_train_as_a_function_leaves_the_count_alone(store, tmp_path):
    from lighthead.pipelines.training.loop import train

    torch.set_num_threads(1)
    train(
        "vsepp",
        store,
        tmp_path / "f",
        epochs=1,
        progress=False,
        overrides={"embed_size": "8", "word_dim": "8", "batch_size": "16", "val_images": "0", "test": "false"},
    )
    assert recorded(tmp_path / "f") == 1


def test_zero_threads_is_a_usage_error(store, tmp_path, capsys):
    assert lighthead("train", "heads", "vsepp", "--store", store, "--out", tmp_path / "z", "--threads", 0) == 2
    assert "--threads" in capsys.readouterr().err


def test_evaluate_and_demo_apply_threads(monkeypatch, tmp_path, capsys):
    import lighthead.pipelines.demo as demo
    import lighthead.pipelines.training.evaluate as evaluate

    def fake_eval(*args, **kwargs):
        raise ValueError(f"evaluated with {torch.get_num_threads()} threads")

    monkeypatch.setattr(evaluate, "evaluate_run", fake_eval)
    assert lighthead("evaluate", tmp_path, "--threads", 2) == 1
    assert "evaluated with 2 threads" in capsys.readouterr().err
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert lighthead("evaluate", tmp_path) == 1
    assert "evaluated with 3 threads" in capsys.readouterr().err

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: seen.append(kw["threads"]))
    assert lighthead("demo", "--out", tmp_path / "d", "--threads", 2) == 0
    assert lighthead("demo", "--out", tmp_path / "d") == 0  # OMP_NUM_THREADS=3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert lighthead("demo", "--out", tmp_path / "d") == 0  # the demo's own default: one thread
    assert seen == [2, 3, 1]
