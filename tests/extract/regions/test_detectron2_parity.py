"""Our detector against the same network built from detectron2's modules, on the same weights."""

from __future__ import annotations

import pytest
import torch

from lighthead.extract.regions import detectron2_backend
from lighthead.extract.regions.checkpoints import format_config
from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
from lighthead.extract.regions.model import BottomUpDetector, init_random
from tests.extract.regions.conftest import noise_images

pytestmark = pytest.mark.skipif(
    not detectron2_backend.available(),
    reason="detectron2 is not installed (it has no PyPI wheels; build it from source to run this parity test)",
)


@pytest.mark.parametrize("mode", ["detect", "given"])
def test_detectron2_backend_matches_ours(mode):
    cfg = format_config("d2-pkl", DetectorConfig.from_name("tiny"), True)
    ours = init_random(BottomUpDetector(cfg), seed=11)
    ref = detectron2_backend.Detectron2Detector(ours)
    for x in noise_images([(96, 128), (120, 90)], seed=4):
        h, w = x.shape[1:]
        boxes = [torch.tensor([[5.0, 5.0, 60.0, 70.0], [20.0, 10.0, w - 1.0, h - 1.0]])] if mode == "given" else None
        a = ours(x[None], [(h, w)], [1.0], boxes)[0]
        b = ref(x[None], [(h, w)], [1.0], boxes)[0]
        assert a["boxes"].shape == b["boxes"].shape
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
        assert torch.allclose(a["features"], b["features"], atol=1e-4)
        assert torch.allclose(a["cls_prob"], b["cls_prob"], atol=1e-5)
        sel = SelectionConfig(num_boxes=10) if mode == "detect" else SelectionConfig(mode="given")
        ra, rb = ours.regions([a], sel)[0], ref.regions([b], sel)[0]
        assert torch.allclose(ra["boxes"], rb["boxes"], atol=1e-3)
