"""The training loop reads losses on the host once per interval, not at every step (each read
makes the host wait for the GPU), and still reports the first non-finite loss with its step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lighthead.pipelines.training import loop as train_mod

# Tensor methods that copy a value to the host (on CUDA: wait for the GPU).
HOST_READS = {"item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu"}


class CountHostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


class TinyHead(torch.nn.Module):
    """loss = mean squared output, plus a second logged part; NaN at step `nan_at`, an error at `fail_at`."""

    def __init__(self, nan_at: int = -1, fail_at: int = -1):
        super().__init__()
        self.fc = torch.nn.Linear(3, 1)
        self.step, self.nan_at, self.fail_at = 0, nan_at, fail_at

    def loss(self, batch):
        if self.step == self.fail_at:
            raise RuntimeError("a later step fails (NaN weights)")
        out = self.fc(batch["x"]).square().mean()
        if self.step == self.nan_at:
            out = out * float("nan")
        self.step += 1
        return {"loss": out, "aux": out.detach() * 2}

    def optimizer_for(self, batch):  # the Head hook the loop calls: None = step every optimiser
        return None


class Bar:
    def __init__(self):
        self.shown = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def advance(self, loss, rate):
        self.shown.append(loss)


def _epoch(head, n_steps=12, **kw):
    torch.manual_seed(0)
    batches = [{"x": torch.randn(4, 3)} for _ in range(n_steps)]
    opt = torch.optim.SGD(head.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    bar = Bar()
    stats = train_mod._run_epoch(head, [(opt, None)], batches, torch.device("cpu"), None, scaler, 0.0, bar, **kw)
    return stats, bar, batches


def test_one_host_read_per_interval():
    head = TinyHead()
    with CountHostReads() as reads:
        stats, bar, _ = _epoch(head)
    # 12 steps, SYNC_EVERY = 50: after the first step (for the progress bar) and at the end; the
    # loop used to read `isfinite(loss)` and every loss part at every step (36 reads here)
    assert reads.calls == ["tolist", "tolist"]
    assert train_mod.SYNC_EVERY > 12
    assert len(bar.shown) == 12 and stats["samples"] == 48
    assert stats["aux"] == pytest.approx(2 * stats["loss"])


def test_the_sums_match_per_step_values():
    head = TinyHead()
    start = copy.deepcopy(head.state_dict())
    stats, bar, batches = _epoch(head, sync_every=5)
    ref = TinyHead()  # the same steps again, reading each loss on the way
    ref.load_state_dict(start)
    opt = torch.optim.SGD(ref.parameters(), lr=0.01)
    losses = []
    for b in batches:
        loss = ref.loss(b)["loss"]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    # the bar shows the running mean as of the last read: after steps 1, 5 and 10
    assert bar.shown[0] == pytest.approx(losses[0]) and bar.shown[4] == pytest.approx(sum(losses[:5]) / 5)
    assert bar.shown[9] == bar.shown[11] == pytest.approx(sum(losses[:10]) / 10)


def test_a_non_finite_loss_is_reported_with_its_step():
    torch.manual_seed(0)
    head = TinyHead(nan_at=7)
    with pytest.raises(FloatingPointError, match=r"^loss is nan at step 7 \(lower the lr or check the data\)$"):
        _epoch(head, sync_every=5)
    assert head.step == 10  # found at the read after step 10, reported as step 7


def test_an_error_after_a_non_finite_loss_reports_the_loss():
    """NaN weights may make a later step fail before the next read: the NaN is the cause to report."""
    head = TinyHead(nan_at=2, fail_at=3)
    with pytest.raises(FloatingPointError, match="loss is nan at step 2") as e:
        _epoch(head, sync_every=50)
    assert isinstance(e.value.__context__, RuntimeError)


def test_the_retrieval_loader_pins_its_batches_when_asked(tmp_path):
    """Training on CUDA sets TaskOptions.pin_memory: batches come page-locked from the loader."""
    from lighthead.heads.base import DataInfo
    from tests.conftest_helpers import TINY, build_small_retrieval_store

    ctx = train_mod.prepare("vsepp", build_small_retrieval_store(tmp_path / "store", seed=1), None, dict(TINY))
    task = ctx["task"]
    inputs = tuple(ctx["cls"].from_config(ctx["cfg"], DataInfo.of(task.data_info())).inputs)
    assert task.train_batches(inputs, 4, 0, 0).pin_memory is False
    task.options.pin_memory = True
    assert task.train_batches(inputs, 4, 0, 0).pin_memory is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_batches_are_pinned_and_the_host_reads_once_per_interval(monkeypatch):
    pinned = []
    original = torch.Tensor.pin_memory

    def pin(self, *args, **kwargs):
        pinned.append(self.shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    head = TinyHead().cuda()
    batches = [{"x": torch.randn(4, 3)} for _ in range(12)]
    opt = torch.optim.SGD(head.parameters(), lr=0.01)
    with CountHostReads() as reads:
        stats = train_mod._run_epoch(
            head,
            [(opt, None)],
            batches,
            torch.device("cuda"),
            torch.bfloat16,
            torch.amp.GradScaler("cuda", enabled=False),
            0.0,
            Bar(),
        )
    assert len(pinned) == 12 and reads.calls == ["tolist", "tolist"] and stats["samples"] == 48
