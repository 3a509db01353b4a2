"""Shared fixtures: a tiny random detector and small test images."""

from __future__ import annotations

import pytest
import torch

from lighthead.extract.regions.config import DetectorConfig
from lighthead.extract.regions.model import BottomUpDetector, init_random


@pytest.fixture(scope="module")
def tiny_cfg() -> DetectorConfig:
    return DetectorConfig.from_name("tiny")


@pytest.fixture(scope="module")
def tiny_model(tiny_cfg: DetectorConfig) -> BottomUpDetector:
    return init_random(BottomUpDetector(tiny_cfg), seed=0)


def noise_images(sizes: list[tuple[int, int]], seed: int = 1) -> list[torch.Tensor]:
    """Mean-subtracted BGR-like (3, h, w) images: smooth noise, so ROI scores rarely tie."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        coarse = torch.randn(1, 3, h // 8 + 2, w // 8 + 2, generator=g) * 60
        fine = torch.randn(1, 3, h, w, generator=g) * 10
        out.append((torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear") + fine)[0])
    return out
