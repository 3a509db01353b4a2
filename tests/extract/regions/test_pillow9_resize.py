"""`.pkl` conventions resize like Pillow 9 (py-bottom-up-attention's Pillow) under any Pillow.

Pillow >= 10 resizes downscaled images taller than about 1.9x their width with the vertical pass
first, which moves values by one grey level (and then the selected boxes). The digests below were
written by Pillow 9.5.0 itself (how: tests/extract/regions/pillow9_digests.py).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from lighthead.extract.regions.batching import Prepare, resize_like_pillow9
from lighthead.extract.regions.checkpoints import format_config
from lighthead.extract.regions.config import DetectorConfig
from tests.extract.regions.pillow9_digests import CASES, digest, pixels

# Pillow 9.5.0's `Image.fromarray(pixels(w, h)).resize((nw, nh), BILINEAR)`, as sha256 prefixes.
PILLOW9 = {
    ((700, 1600), (438, 1000)): "7f15a88b6f98e842",
    ((300, 1200), (250, 1000)): "5fc86165472fa539",
    ((500, 1500), (333, 1000)): "d8762e2a3b4742e0",
    ((400, 2000), (200, 1000)): "e432c5ec1e7d98ab",
    ((1600, 700), (1000, 438)): "64b411cd5f499b35",
    ((123, 457), (300, 1114)): "8b69d7428d6ba90c",
    ((640, 480), (640, 600)): "b15d91c653d7b77d",
}
MEAN = np.array((102.9801, 115.9465, 122.7717), np.float32)


def test_every_case_has_a_pillow9_digest():
    assert set(PILLOW9) == set(CASES)


@pytest.mark.parametrize(("size", "new"), CASES, ids=[f"{w}x{h}" for (w, h), _ in CASES])
def test_resize_gives_pillow9_bytes(size, new):
    out = resize_like_pillow9(Image.fromarray(pixels(*size)), *new)
    assert out.size == new
    assert digest(np.asarray(out)) == PILLOW9[(size, new)]


def test_the_pkl_convention_feeds_the_network_pillow9_pixels():
    """The tall case end to end through Prepare: BGR of Pillow 9's bytes minus the pixel mean."""
    (w, h), (nw, nh) = CASES[0]
    cfg = replace(format_config("d2-pkl", DetectorConfig.from_name("tiny"), True), min_size=nw, max_size=nh)
    rgb = pixels(w, h)
    out = Prepare(cfg)(Image.fromarray(rgb))
    assert out["size"] == (nh, nw)
    bgr = out["image"] + torch.from_numpy(MEAN).reshape(3, 1, 1)  # (3, h, w)
    resized = bgr.flip(0).permute(1, 2, 0).round().to(torch.uint8).numpy()  # (h, w, 3) RGB
    assert digest(resized) == PILLOW9[CASES[0]]
