"""The inputs of test_pillow9_resize.py and a script that writes their digests under Pillow 9.5.

The digests in test_pillow9_resize.py were made once on 2026-12-06 with this file run as a script
in a separate virtual environment holding Pillow 9.5.0 (the last Pillow py-bottom-up-attention
runs on) and NumPy:

    python -m venv /tmp/pil9 && /tmp/pil9/bin/pip install pillow==9.5.0 numpy
    /tmp/pil9/bin/python tests/extract/regions/pillow9_digests.py

The images are a fixed formula, not a random generator, so every NumPy makes the same pixels.
"""

from __future__ import annotations

import hashlib

import numpy as np

# (width, height) -> (new width, new height): downscaled tall images (where Pillow >= 10 differs),
# a wide one, an upscale and a one-axis resize.
CASES = [
    ((700, 1600), (438, 1000)),
    ((300, 1200), (250, 1000)),
    ((500, 1500), (333, 1000)),
    ((400, 2000), (200, 1000)),
    ((1600, 700), (1000, 438)),
    ((123, 457), (300, 1114)),
    ((640, 480), (640, 600)),
]


def pixels(width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: a texture with detail at every scale (a multiplicative hash)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.uint64)
    c = np.arange(3, dtype=np.uint64)
    h = (x[..., None] * np.uint64(2654435761) + y[..., None] * np.uint64(40503) + c * np.uint64(97)) % np.uint64(2**32)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(1274126177) % np.uint64(2**32)
    return ((h >> np.uint64(16)) % np.uint64(256)).astype(np.uint8)  # (H, W, 3)


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


if __name__ == "__main__":
    import PIL
    from PIL import Image

    print(f"# Pillow {PIL.__version__}")
    for (w, h), (nw, nh) in CASES:
        out = np.asarray(Image.fromarray(pixels(w, h)).resize((nw, nh), Image.BILINEAR))
        print(f"    (({w}, {h}), ({nw}, {nh})): {digest(out)!r},")
