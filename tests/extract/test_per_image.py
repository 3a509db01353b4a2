"""Which failures are the input's (retried image by image, then skipped) and which are the
device's (the job stops): `lighthead.extract.per_image`."""

from __future__ import annotations

import pytest
import torch

from lighthead.extract.per_image import DeviceError, batch_or_each, is_fatal


def test_classification():
    assert is_fatal(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))
    assert is_fatal(RuntimeError("CUDA error: device-side assert triggered\nCUDA kernel errors might be ..."))
    assert is_fatal(RuntimeError("CUDA error: unspecified launch failure"))
    assert not is_fatal(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_fatal(RuntimeError("shape '[0, 4]' is invalid"))
    assert not is_fatal(ValueError("CUDA error"))  # only what torch raises for the device


def test_out_of_memory_is_retried_image_by_image():
    def whole():
        raise torch.OutOfMemoryError("CUDA out of memory")

    out = batch_or_each(3, whole, lambda k: k * 10)
    assert out == [0, 10, 20]


@pytest.mark.parametrize("in_batch", [True, False])
def test_a_failed_device_stops_at_once(in_batch):
    calls = []

    def whole():
        raise (
            torch.AcceleratorError("CUDA error: device-side assert triggered\nmore text")
            if in_batch
            else ValueError("odd input")
        )

    def one(k):
        calls.append(k)
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(DeviceError) as e:
        batch_or_each(3, whole, one, where="images a (+2 more)")
    assert calls == ([] if in_batch else [0])  # no retry on a poisoned device
    text = str(e.value)
    assert "\n" not in text and text.startswith("images a (+2 more): the device failed (AcceleratorError: CUDA error")
    assert isinstance(e.value.__cause__, torch.AcceleratorError)


def test_a_batch_of_one_failing_on_the_device_raises():
    def whole():
        raise torch.AcceleratorError("CUDA error: misaligned address")

    with pytest.raises(DeviceError, match="image x: the device failed"):
        batch_or_each(1, whole, lambda k: k, where="image x")


DEVICE_ASSERT = """
import torch
from lighthead.extract.per_image import DeviceError, batch_or_each, is_fatal

def whole():
    x = torch.zeros(4, device="cuda")
    return x[torch.tensor([7], device="cuda")].cpu()  # out of bounds: a device-side assert

calls = []
try:
    batch_or_each(2, whole, lambda k: calls.append(k), where="images a (+1 more)")
except DeviceError as e:
    assert is_fatal(e.__cause__), repr(e.__cause__)
    assert not calls, calls  # no retry on the poisoned context
    print("STOPPED", type(e.__cause__).__name__, str(e))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_real_device_side_assert_stops_the_job():
    """In a subprocess: a device-side assert leaves the CUDA context unusable for the process."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", DEVICE_ASSERT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "STOPPED" in proc.stdout and "images a (+1 more): the device failed" in proc.stdout, proc.stdout
