"""Fixtures for head tests: tiny random batches and a small synthetic store."""

from __future__ import annotations

import pytest
import torch

from tests.conftest_helpers import build_retrieval_store

TINY = {"embed_size": "8", "word_dim": "6"}  # tiny widths: nothing slow, nothing downloaded


@pytest.fixture(scope="session")
def retrieval_store(tmp_path_factory):
    """A synthetic retrieval store (60 images: 40 train / 10 val / 10 test), built once."""
    return build_retrieval_store(
        tmp_path_factory.mktemp("retrieval") / "store", region_dim=64, global_dim=48, token_dim=16
    )


def random_batch(
    b: int = 5,
    k: int = 4,
    region_dim: int = 10,
    vocab: int = 20,
    max_len: int = 6,
    token_dim: int = 12,
    num_labels: int = 7,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Every retrieval batch key, random, with ragged caption lengths (one of length 1)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (b,), generator=g)
    lengths[0], lengths[-1] = max_len, 1
    mask = torch.arange(max_len)[None] < lengths[:, None]
    return {
        "regions": torch.randn(b, k, region_dim, generator=g),
        "region_mask": torch.ones(b, k, dtype=torch.bool),
        "global": torch.randn(b, region_dim, generator=g),
        "word_ids": torch.randint(1, vocab, (b, max_len), generator=g) * mask,
        "tokens": torch.randn(b, max_len, token_dim, generator=g) * mask[..., None],
        "text_mask": mask,
        "text_len": lengths,
        "image_index": torch.arange(b),
        "labels": (torch.rand(b, num_labels, generator=g) > 0.6).float(),
        "thumb": torch.randint(0, 256, (b, 3, 16, 16), generator=g, dtype=torch.uint8),
    }


IMAGE_KEYS = ("regions", "region_mask", "global", "thumb", "labels", "boxes")  # what a repeated image repeats


def with_repeated_images(batch: dict[str, torch.Tensor], image_index: list[int]) -> dict[str, torch.Tensor]:
    """The batch as a caption-sampled loader gives it when pairs share an image: rows with the
    same `image_index` hold the first such row's image features (and its image-level labels)."""
    index = torch.tensor(image_index)
    first = torch.tensor([image_index.index(i) for i in image_index])  # (B,) the row each image first appears in
    out = {k: (v[first].clone() if k in IMAGE_KEYS else v) for k, v in batch.items()}
    out["image_index"] = index
    return out
