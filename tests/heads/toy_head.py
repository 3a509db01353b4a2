"""`toy`: the smallest retrieval head, written outside `heads/` the way CONTRIBUTING.md's "Adding a
head" says, so that tests hold the head contract (`heads/base.py`) to what a new head needs.

Image: the mean of the real region features -> Linear -> L2 norm. Text: the mean of the caption's
word embeddings -> L2 norm. Score: their dot product (a cosine). Loss: the hardest-negative
triplet loss of VSE++. No paper: its defaults are ours, sized for the tiny test store.

Importing this module registers the head as "toy" (tests import it through
`tests/heads/toy_fixture.py`, which removes it again, so no other test sees a test-only head).
Shapes: B batch, K regions, L words, D region width, E embed_size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lighthead.heads import HEADS, DataInfo, RetrievalConfig, RetrievalHead, source
from lighthead.heads.attention import l2norm, masked_mean
from lighthead.heads.losses import in_batch_positives, triplet_loss
from lighthead.heads.optim import step_lr


@dataclass
class ToyConfig(RetrievalConfig):
    """Toy head settings; every field has a comment, the feature sets are declared sources."""

    regions: str = source("regions", default="regions/butd-r101-vg-36")  # feature set of the region features
    text: str = source("words", default="words/vocab")  # feature set of the caption word ids
    embed_size: int = 32  # joint space width E
    margin: float = 0.2  # triplet margin
    lr: float = 2e-3  # Adam learning rate
    lr_decay_epochs: int = 0  # x0.1 every this many epochs (0 = never)
    epochs: int = 2  # training epochs
    batch_size: int = 16  # pairs per batch
    grad_clip: float = 2.0  # gradient-norm clipping by the loop (0 = off)

    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "demo": {"regions": "regions/butd-r101-vg-given"},  # the demo store's region set
    }

    def __post_init__(self) -> None:
        if self.embed_size < 1 or self.epochs < 1:
            raise ValueError("toy: embed_size and epochs must be >= 1")
        if self.batch_size < 2:
            raise ValueError("toy: batch_size must be >= 2 (negatives come from the batch)")
        if self.margin < 0 or self.lr <= 0 or self.grad_clip < 0 or self.lr_decay_epochs < 0:
            raise ValueError("toy: margin, grad_clip and lr_decay_epochs must be >= 0, lr > 0")


@HEADS.register("toy")
class ToyHead(RetrievalHead):
    """Pooled regions and pooled word embeddings in one space."""

    config_class = ToyConfig
    inputs = ("regions", "region_mask", "word_ids", "text_len", "image_index")

    def __init__(self, cfg: ToyConfig, region_dim: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.img_fc = nn.Linear(region_dim, cfg.embed_size)
        self.embed = nn.Embedding(vocab_size, cfg.embed_size, padding_idx=0)

    @classmethod
    def from_config(cls, cfg: ToyConfig, data: DataInfo) -> ToyHead:
        """The task measures a size for each declared source: the region width, the vocabulary."""
        return cls(cfg, region_dim=data.region_dim, vocab_size=data.vocab_size)

    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"emb": (B, E)} unit norm."""
        regions = batch["regions"].float()  # (B, K, D)
        pooled = masked_mean(regions, batch["region_mask"][..., None], dim=1)  # (B, D)
        return {"emb": l2norm(self.img_fc(pooled))}

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"emb": (B, E)} unit norm."""
        ids = batch["word_ids"]  # (B, L)
        real = torch.arange(ids.shape[1], device=ids.device)[None] < batch["text_len"][:, None]  # (B, L)
        return {"emb": l2norm(masked_mean(self.embed(ids), real[..., None], dim=1))}

    def score(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        return img["emb"] @ txt["emb"].T  # (I, T)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scores = self.score(self.encode_image(batch), self.encode_text(batch))  # (B, B)
        loss = triplet_loss(scores, in_batch_positives(batch, True), self.cfg.margin, hardest=True)
        return {"loss": loss, "triplet": loss.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        return [(opt, step_lr(opt, self.cfg.lr_decay_epochs))]
