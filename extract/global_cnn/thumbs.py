"""Small uint8 thumbnails, the image-reconstruction target of mFSR (Pattern Recognition 2021).

mFSR's DCGAN-style generator draws a 64x64 RGB image from the separated features, so each
image is stored as a (3, 64, 64) uint8 array: shorter side resized to 64, center-cropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image


@dataclass
class ThumbConfig:
    """Thumbnail size (mFSR's generator output, 64x64)."""

    size: int = 64  # square side in pixels

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 1024:
            raise ValueError(f"thumbnail size must be in [8, 1024], got {self.size}")

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return ThumbTransform(self.size)


class ThumbTransform:
    """PIL RGB image -> (3, size, size) uint8 tensor: bicubic resize of the shorter side, center crop."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, im: Image.Image) -> torch.Tensor:
        w, h = im.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)  # reducing_gap: antialiased big shrinks
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        im = im.crop((left, top, left + self.size, top + self.size))
        a = np.asarray(im, dtype=np.uint8)  # (H, W, 3)
        return torch.from_numpy(a.transpose(2, 0, 1).copy())  # (3, H, W)

    def __repr__(self) -> str:
        return f"ThumbTransform(size={self.size})"


def describe(config: ThumbConfig) -> dict[str, Any]:
    return {"size": config.size, "resample": "bicubic", "crop": "center", "layout": "CHW uint8"}
