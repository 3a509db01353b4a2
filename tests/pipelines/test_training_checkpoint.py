"""Run checkpoints: safetensors + JSON, never unpickled; exact resume; doctored files refused."""

from __future__ import annotations

import math
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.pipelines.training.checkpoint import RunCheckpointError, load, save
from lighthead.pipelines.training.loop import train
from tests.conftest_helpers import TINY, build_small_retrieval_store, train_tiny_run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_small_retrieval_store(tmp_path_factory.mktemp("ckpt") / "store", seed=3)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    return train_tiny_run(store, tmp_path_factory.mktemp("runs") / "vsepp")


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


class Payload:
    """A pickle that creates a folder when unpickled: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def cli(*args) -> int:
    return run_app(app, [str(a) for a in args])


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_state_tree_round_trips_exactly(tmp_path):
    rng = np.random.RandomState(5)
    state = {
        "epoch": 3,
        "best": -math.inf,
        "nan": math.nan,
        "name": "x",
        "flag": True,
        "none": None,
        "opt": {
            "state": {0: {"step": torch.tensor(4.0), "exp_avg": torch.randn(3, 2)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1]}],
        },
        "numpy_rng": rng.get_state(),
        "np_scalar": np.float32(0.25),
        "bytes": torch.get_rng_state(),
    }
    head = {"w": torch.randn(4, 4), "b": torch.arange(3)}
    save(tmp_path / "c.safetensors", head, state)
    head2, state2 = load(tmp_path / "c.safetensors")
    assert set(head2) == {"w", "b"} and torch.equal(head2["w"], head["w"]) and torch.equal(head2["b"], head["b"])
    assert state2["epoch"] == 3 and state2["best"] == -math.inf and math.isnan(state2["nan"])
    assert state2["flag"] is True and state2["none"] is None and state2["name"] == "x"
    assert list(state2["opt"]["state"]) == [0]  # int keys stay ints
    assert torch.equal(state2["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert state2["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    name, key, pos, gauss, cached = state2["numpy_rng"]
    assert key.dtype == np.uint32 and np.array_equal(key, state["numpy_rng"][1]) and pos == state["numpy_rng"][2]
    np.random.set_state(state2["numpy_rng"])  # numpy takes it back as it gave it
    assert state2["np_scalar"] == np.float32(0.25) and state2["np_scalar"].dtype == np.float32
    assert torch.equal(state2["bytes"], state["bytes"])


def test_resume_two_then_four_equals_four_straight(store, tmp_path):
    """CASC: two optimisers, each with its StepLR schedule, both decaying inside the 4 epochs."""
    over = {**TINY, "label_hidden": "8", "num_labels": "5", "lr_decay_epochs": "3", "global_decay_epochs": "2"}
    straight = train("casc", store, tmp_path / "a", epochs=4, overrides=over, progress=False)
    train("casc", store, tmp_path / "b", epochs=2, overrides=over, progress=False)
    resumed = train("casc", store, tmp_path / "b", epochs=4, overrides=over, resume=True, progress=False)
    for a, b in zip(straight["history"], resumed["history"], strict=True):
        assert a["loss"] == b["loss"] and a["val"] == b["val"]
    assert straight["test"] == resumed["test"]
    wa, sa = load(tmp_path / "a" / "checkpoints" / "last.safetensors")
    wb, sb = load(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit-exact weights
    for oa, ob in zip(sa["optimizers"], sb["optimizers"], strict=True):
        assert oa["param_groups"][0]["lr"] == ob["param_groups"][0]["lr"]
        assert all(torch.equal(oa["state"][i]["exp_avg_sq"], ob["state"][i]["exp_avg_sq"]) for i in oa["state"])


@pytest.mark.parametrize("name", ["best.safetensors", "best.pt"])
def test_doctored_pickle_is_refused_and_never_runs(run, tmp_path, capsys, name):
    marker = tmp_path / "code-ran"
    ckpts = run / "checkpoints"
    for f in ckpts.iterdir():
        f.unlink()
    (ckpts / name).write_bytes(pickle.dumps(Payload(marker)))  # `best.pt`: a run of the old format
    assert cli("evaluate", run) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(ckpts / name) in line and ("not a readable run checkpoint" in line or "pickle" in line)
    assert not marker.exists()


def test_doctored_last_checkpoint_refuses_resume(run, store, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    last = run / "checkpoints" / "last.safetensors"
    last.write_bytes(pickle.dumps(Payload(marker)))
    assert (
        cli("train", "heads", "vsepp", "--store", store, "--out", run, "--epochs", "2", "--resume", "--no-progress")
        == 1
    )
    assert str(last) in one_error_line(capsys.readouterr().err)
    assert not marker.exists()


def test_truncated_checkpoint_is_one_line(run, store, capsys):
    last = run / "checkpoints" / "last.safetensors"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    assert (
        cli("train", "heads", "vsepp", "--store", store, "--out", run, "--epochs", "2", "--resume", "--no-progress")
        == 1
    )
    line = one_error_line(capsys.readouterr().err)
    assert str(last) in line and "truncated" in line


def test_foreign_safetensors_and_mismatched_weights_are_refused(run, tmp_path):
    from safetensors.torch import save_file

    from lighthead.pipelines.training.evaluate import load_run

    best = run / "checkpoints" / "best.safetensors"
    save_file({"x": torch.zeros(2)}, str(best))  # valid safetensors, not ours
    with pytest.raises(RunCheckpointError, match="not a lighthead run checkpoint"):
        load_run(run, device="cpu")
    save(best, {"img_enc.fc.weight": torch.zeros(1)})  # ours, but not this head's weights
    with pytest.raises(RunCheckpointError, match="does not match"):
        load_run(run, device="cpu")


def test_resuming_a_run_of_the_old_pickle_format_says_why(run, store):
    ckpts = run / "checkpoints"
    for f in ckpts.iterdir():
        f.unlink()
    torch.save({"head": {}, "state": {"epoch": 0}}, ckpts / "last.pt")
    with pytest.raises(RunCheckpointError, match=r"last\.pt: checkpoint in the old pickle format, which is not loaded"):
        train("vsepp", store, run, epochs=2, overrides=TINY, resume=True, progress=False)
