"""Run checkpoints keep the RNG state of the training device only: a CPU run never touches CUDA,
a resume on a machine with fewer GPUs works, and checkpoints of earlier runs (every GPU's state
under "cuda") still load."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lighthead.pipelines.training import checkpoint as run_checkpoint
from lighthead.pipelines.training.run_folder import load_checkpoint, rng_state, save_checkpoint

# What would start CUDA or read a GPU's state (torch.manual_seed's call of cuda.manual_seed_all is
# lazy: queued until CUDA starts, if ever).
CUDA_CALLS = (
    "init",
    "_lazy_init",
    "current_device",
    "get_rng_state",
    "get_rng_state_all",
    "set_rng_state",
    "set_rng_state_all",
)


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine with two GPUs (torch.cuda.is_available() is True) where a CPU run must leave them
    alone: any call that starts CUDA or reads a GPU's state fails the test."""

    def forbidden(name):
        def call(*args, **kwargs):
            raise AssertionError(f"torch.cuda.{name} called by a CPU run")

        return call

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in CUDA_CALLS:
        monkeypatch.setattr(torch.cuda, name, forbidden(name))


@pytest.fixture
def fake_gpus(monkeypatch):
    """torch.cuda's RNG calls recorded, as on a machine with two GPUs (current device 0)."""
    calls = []

    def get_state(device="cuda"):
        calls.append(("get", str(device)))
        return torch.full((8,), 7, dtype=torch.uint8)

    def set_state(state, device="cuda"):
        calls.append(("set", str(device), int(state[0])))

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for name in ("get_rng_state_all", "set_rng_state_all"):  # every GPU's state: never again
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: pytest.fail("all GPUs' RNG states used"))
    return calls


def _head_and_optimizer():
    torch.manual_seed(0)
    head = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)  # no step: its checks of the accelerator are not ours
    return head, [(opt, None)]


def _old_format_record(n_gpus: int) -> dict:
    """The "rng" entry as checkpoints written before this change hold it."""
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": [torch.full((8,), 10 + i, dtype=torch.uint8) for i in range(n_gpus)],
    }


def _write_old(path, head, optimizers, n_gpus: int) -> dict:
    extra = {
        "optimizers": [o.state_dict() for o, _ in optimizers],
        "schedulers": [None],
        "scaler": None,
        "state": {"epoch": 4},
        "rng": _old_format_record(n_gpus),
    }
    run_checkpoint.save(path, head.state_dict(), extra)
    return extra["rng"]


def test_a_cpu_run_saves_and_resumes_without_touching_cuda(tmp_path, no_cuda):
    head, optimizers = _head_and_optimizer()
    save_checkpoint(tmp_path / "last.safetensors", head, optimizers, state={"epoch": 1})
    want = torch.rand(3)
    torch.manual_seed(123)
    assert load_checkpoint(tmp_path / "last.safetensors", head, optimizers) == {"epoch": 1}
    torch.testing.assert_close(torch.rand(3), want)  # the RNG continues where the save left it
    assert "cuda" not in rng_state() and "cuda_device" not in rng_state("cpu")


def test_an_old_checkpoint_with_gpu_states_loads_on_a_cpu(tmp_path, no_cuda):
    head, optimizers = _head_and_optimizer()
    rng = _write_old(tmp_path / "last.safetensors", head, optimizers, n_gpus=4)
    random.seed(0)
    torch.manual_seed(0)
    assert load_checkpoint(tmp_path / "last.safetensors", head, optimizers, device="cpu") == {"epoch": 4}
    assert random.getstate() == rng["python"] and torch.equal(torch.get_rng_state(), rng["torch"])


@pytest.mark.parametrize(
    "device,want", [("cuda:1", [("set", "cuda:1", 11)]), ("cuda", [("set", "cuda", 10)]), ("cuda:5", [])]
)
def test_an_old_checkpoint_restores_the_training_gpu_only(tmp_path, fake_gpus, device, want):
    """Saved with 4 GPUs: the training device's entry is used; a device it never had (cuda:5) keeps
    its own state instead of failing with a message blaming the checkpoint."""
    head, optimizers = _head_and_optimizer()
    _write_old(tmp_path / "last.safetensors", head, optimizers, n_gpus=4)
    load_checkpoint(tmp_path / "last.safetensors", head, optimizers, device=device)
    assert fake_gpus == want


def test_a_gpu_run_saves_its_own_device_only(tmp_path, fake_gpus):
    head, optimizers = _head_and_optimizer()
    save_checkpoint(tmp_path / "last.safetensors", head, optimizers, state={"epoch": 0}, device="cuda:1")
    _, extra = run_checkpoint.load(tmp_path / "last.safetensors")
    assert "cuda" not in extra["rng"] and extra["rng"]["cuda_device"].tolist() == [7] * 8
    load_checkpoint(tmp_path / "last.safetensors", head, optimizers, device="cuda:0")  # fewer GPUs, or another
    assert fake_gpus == [("get", "cuda:1"), ("set", "cuda:0", 7)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_training_gpu_rng_is_restored(tmp_path):
    head, optimizers = _head_and_optimizer()
    torch.cuda.manual_seed(5)
    save_checkpoint(tmp_path / "last.safetensors", head, optimizers, state={}, device="cuda")
    want = torch.rand(4, device="cuda")
    torch.cuda.manual_seed(6)
    load_checkpoint(tmp_path / "last.safetensors", head, optimizers, device="cuda")
    torch.testing.assert_close(torch.rand(4, device="cuda"), want)
