"""What every head is: an `nn.Module` with a config dataclass, registered by name.

Heads receive tensors only (never images, text models or HDF5). A batch is a dict of
tensors; the keys a head reads are listed in its `inputs` (see `BATCH_KEYS`), and the task
layer in `pipelines/tasks/` builds exactly those from the store.

Retrieval heads implement `encode_image(batch)`, `encode_text(batch)` and
`score(image_enc, text_enc) -> (n_images, n_texts)`, so evaluation encodes each side once
and scores blocks of pairs. Sentiment heads implement `forward(batch) -> logits (B, 3)`.
Every head implements `loss(batch) -> dict` with a scalar "loss" (the sum that is
back-propagated) plus any named parts to log, and `optimizers()`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from lighthead.store.registry import Registry

# Batch keys and their shapes. Letters: B batch, K regions, L tokens, D feature width,
# C label vocabulary, H/W thumbnail size.
BATCH_KEYS = {
    "regions": "(B, K, 2048) float: region features",
    "region_mask": "(B, K) bool: True on real regions (variable-K sets are padded)",
    "boxes": "(B, K, 4) float: region boxes, x1 y1 x2 y2, in pixels",
    "image_size": "(B, 2) float: image width, height",
    "global": "(B, D) float: global CNN feature",
    "thumb": "(B, 3, H, W) uint8: thumbnail",
    "word_ids": "(B, L) long: caption word ids (0 = padding)",
    "tokens": "(B, L, D) float: cached token features of a frozen text encoder",
    "text_mask": "(B, L) bool: True on real words/tokens",
    "text_len": "(B,) long: number of real words/tokens",
    "image_index": "(B,) long: which image a caption belongs to (for in-batch positives)",
    "labels": "(B, C) float: multi-hot semantic labels (CASC)",
    "label": "(B,) long: sentiment (0 negative, 1 neutral, 2 positive)",
    "relevance": "(B,) long: image-target relevance (ITM)",
    "target_box": "(B, 4) float: annotated box of the target (ITM)",
    "has_box": "(B,) bool: the sample has an annotated box (ITM)",
    "target_tokens": "(B, L, D) float: token features of the target phrase alone (ITM)",
    "target_mask": "(B, L) bool: True on real target tokens (ITM)",
}

HEADS: Registry[type["Head"]] = Registry("head")


class Head(nn.Module):
    """Base class. Subclasses set the class attributes and implement `loss`."""

    task: ClassVar[str] = ""  # "retrieval" or "sentiment"
    inputs: ClassVar[tuple[str, ...]] = ()  # batch keys the head reads (BATCH_KEYS)
    config_class: ClassVar[type] = object  # the head's config dataclass

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """(optimizer, lr scheduler or None) pairs; the loop steps each after backward."""
        raise NotImplementedError
