"""The global-image jobs (ResNet features, thumbnails): reruns need no weights, one bad image is skipped."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from lighthead.extract.per_image import batch_or_each
from lighthead.pipelines.datasets import load_records
from lighthead.pipelines.features import FEATURES, ExtractOptions, load_all
from lighthead.store import open_store, verify
from tests.pipelines.datasets import fixtures


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return load_records("coco", fixtures.karpathy(tmp_path_factory.mktemp("coco"), n_images=4))


def _options(random: bool, missing=None, **kw):
    jobs = {"detector": "tiny"}
    if missing is not None:  # every job's weights point at a file that does not exist
        jobs.update({"resnet18.weights": str(missing), "weights": str(missing)})
    return ExtractOptions(
        random_weights=random, weights=missing, batch_size=4, loader_workers=0, progress=False, job_options=jobs, **kw
    )


@pytest.mark.parametrize("job", ["resnet18", "thumbs", "regions36"])
def test_a_finished_set_reruns_without_weights(job, records, tmp_path, monkeypatch):
    load_all()
    monkeypatch.delenv("LIGHTHEAD_DETECTOR_WEIGHTS", raising=False)
    store = open_store(tmp_path / "store", create=True)
    n = len({r.image_id for r in records})
    first = FEATURES.get(job).run(records[:-1], store, _options(random=True))
    assert first.written == n - 1
    missing = tmp_path / "no-such-weights.pth"
    rerun = FEATURES.get(job).run(records[:-1], store, _options(random=False, missing=missing))
    assert (rerun.written, rerun.already_done, rerun.skipped) == (0, n - 1, [])
    if job != "thumbs":  # an image left to extract still needs the file, named in the error
        with pytest.raises(FileNotFoundError, match="no-such-weights.pth"):
            FEATURES.get(job).run(records, store, _options(random=False, missing=missing))


def test_a_model_failure_on_one_image_skips_only_that_image(records, tmp_path, monkeypatch):
    """A batch that raises is rerun one image at a time; the image that fails alone is skipped with
    the reason, the others of its batch are stored, and a rerun tries it again."""
    from lighthead.extract.global_cnn.resnet import GlobalCNN

    load_all()
    red = tmp_path / "red.png"
    Image.new("RGB", (40, 32), (255, 0, 0)).save(red)  # normalised red channel ~2.25 everywhere
    odd = type(records[0]).from_json({**records[0].to_json(), "id": "odd", "image_id": "odd", "image_path": str(red)})
    forward = GlobalCNN.forward
    calls = []

    def failing(self, images):
        calls.append(images.shape[0])
        if (images[:, 0].mean(dim=(1, 2)) > 2.0).any():
            raise RuntimeError("forced failure")
        return forward(self, images)

    monkeypatch.setattr(GlobalCNN, "forward", failing)
    store = open_store(tmp_path / "store", create=True)
    batch = [records[0], odd, records[1]]  # one batch of three
    images = sorted({r.image_id for r in batch} - {"odd"})
    for run in range(2):
        summary = FEATURES.get("resnet18").run(batch, store, _options(random=True))
        assert summary.written == (2 if run == 0 else 0)
        ((skipped, reason),) = summary.skipped
        assert skipped == "odd" and "resnet18 failed on this 40x32 image: RuntimeError: forced failure" in reason
    assert calls == [3, 1, 1, 1, 1]  # the batch, each image alone, then the rerun's batch of one (not retried)
    assert sorted(store["global/resnet18"].ids) == images and verify(tmp_path / "store") == []


def test_batch_or_each():
    def whole():
        raise ValueError("the batch fails")

    def one(k):
        if k == 1:
            raise RuntimeError(f"input {k}")
        return k * 10

    assert batch_or_each(3, lambda: [1, 2, 3], one) == [1, 2, 3]  # a batch that works is not split
    out = batch_or_each(3, whole, one)
    assert out[0] == 0 and out[2] == 20 and isinstance(out[1], RuntimeError) and str(out[1]) == "input 1"

    def interrupted(k):
        raise KeyboardInterrupt

    (alone,) = batch_or_each(1, whole, one)  # a batch of one is not run a second time
    assert isinstance(alone, ValueError) and str(alone) == "the batch fails"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops the job
        batch_or_each(2, whole, interrupted)


def test_a_failed_device_stops_the_job_instead_of_skipping_the_rest(records, tmp_path, monkeypatch):
    """After an illegal memory access every later batch fails: the job stops, what it stored stays."""
    from lighthead.extract.global_cnn.resnet import GlobalCNN
    from lighthead.extract.per_image import DeviceError

    load_all()
    forward = GlobalCNN.forward
    calls = []

    def poisoned(self, images):
        calls.append(images.shape[0])
        if len(calls) > 1:
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        return forward(self, images)

    monkeypatch.setattr(GlobalCNN, "forward", poisoned)
    store = open_store(tmp_path / "store", create=True)
    with pytest.raises(DeviceError, match=r"^resnet18: image \S+: the device failed \(AcceleratorError: CUDA error"):
        FEATURES.get("resnet18").run(records, store, replace(_options(random=True), batch_size=2))
    assert calls == [2, 2]  # the second batch: no retry image by image, no third batch
    assert len(store["global/resnet18"].ids) == 2
