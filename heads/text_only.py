"""Text-only sentiment baseline on the cached token features: what the sentiment heads score
without the image.

It stands for the "RoBERTa" row of the ITM paper's Table 3 (Yu et al., IJCAI 2022, seeds/000):
RoBERTa reads the (sentence with `$T$`, target) pair and its first token is classified. Here the
encoder is frozen and cached, so the head is ITM's fusion branch without the image: a trainable
Linear on the cached tokens, one Transformer layer, the first token, a linear classifier.
It trains on either sentiment task (targets for ITM's datasets, posts for ITIN's).

No released code: the ITM authors' repository has no baseline scripts, and the paper only names
the row. The set-up follows ITM's paper:

| what | paper (ITM's Table 3, "RoBERTa") | released code | lighthead default | switch |
|---|---|---|---|---|
| encoder | RoBERTa-base on (sentence with $T$, target), fine-tuned | none | frozen cached tokens -> Linear -> one Transformer layer of RoBERTa-base's sizes (`layers=1` `d=768` `heads=12` `ff=3072`) | `layers`, `d`, `heads`, `ff` |
| pooled vector | not stated (RoBERTa classifies its first token) | none | the first token (`pool=first`) | `pool=first\\|mean` |
| classifier | not stated | none | dropout 0.1, Linear(d, 3) (`dropout=0.1`) | `dropout` |
| training | not stated (ITM's: AdamW 1e-5, batch 32, 10 epochs) | none | ITM's paper set-up (`lr=1e-5` `weight_decay=0.01` `batch_size=32` `epochs=10`) | `lr`, `weight_decay`, `batch_size`, `epochs` |
| metrics | accuracy, macro-F1 | none | `accuracy`, `macro_f1`, `weighted_f1` | - |
| selection | not stated | none | best validation accuracy on the whole dev split | - |

Shapes: B batch, L tokens, D = d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from lighthead.heads.attention import TransformerBlock
from lighthead.heads.base import HEADS, DataInfo, SentimentConfig, SentimentHead, source


@dataclass
class TextOnlyConfig(SentimentConfig):
    """Defaults match ITM's (the paper's training set-up for its RoBERTa baseline)."""

    text: str = source("tokens", default="text/roberta-base")  # feature set of the frozen token features
    records: str = "auto"  # "target", "post", or "auto" (targets when the store has labelled ones)
    d: int = 768  # model width
    heads: int = 12  # attention heads
    ff: int = 3072  # feed-forward width
    layers: int = 1  # Transformer layers on top of the frozen encoder
    dropout: float = 0.1  # dropout inside the Transformer layers and before the classifier
    pool: str = "first"  # "first" token (as RoBERTa's <s>) or "mean" of the real tokens
    lr: float = 1e-5  # AdamW learning rate (the paper's; larger suits a frozen encoder)
    weight_decay: float = 0.01  # AdamW weight decay
    batch_size: int = 32  # samples per batch
    epochs: int = 10  # passes over the training set
    grad_clip: float = 0.0  # gradient-norm clipping (0 = off)

    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "mvsa-single": {"text": "text/bert-base-uncased"},  # ITIN's encoder on MVSA
        "mvsa-multiple": {"text": "text/bert-base-uncased"},
        "demo": {
            "text": "text/all-minilm-l6-v2",
            "d": 64,
            "heads": 4,
            "ff": 128,
            "epochs": 6,  # the bundled small encoder
            "batch_size": 32,
            "lr": 1e-3,
        },
    }

    def __post_init__(self) -> None:
        for name in ("d", "heads", "ff", "layers", "batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"text-only: {name} must be >= 1, got {getattr(self, name)}")
        if self.d % self.heads:
            raise ValueError(f"text-only: d={self.d} must be divisible by heads={self.heads}")
        if self.pool not in ("first", "mean"):
            raise ValueError(f"text-only: pool must be 'first' or 'mean', got {self.pool!r}")
        if not 0.0 <= self.dropout < 1.0 or self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("text-only: need 0 <= dropout < 1, lr > 0, weight_decay >= 0, grad_clip >= 0")
        if self.records not in ("auto", "target", "post"):
            raise ValueError(f"text-only: records must be auto, target or post, got {self.records!r}")
        if not self.text.startswith("text/"):
            raise ValueError(f"text-only: text must name a text/... feature set, got {self.text!r}")


@HEADS.register("text-only")
class TextOnly(SentimentHead):
    """Cached tokens (B, L, token_dim) -> 3 sentiment logits; no image input."""

    inputs: ClassVar[tuple[str, ...]] = ("tokens", "text_mask", "label")
    config_class: ClassVar[type] = TextOnlyConfig

    def __init__(self, cfg: TextOnlyConfig | None = None, token_dim: int = 768):
        super().__init__()
        self.cfg = cfg = cfg or TextOnlyConfig()
        self.token_proj = nn.Linear(token_dim, cfg.d)  # adapter on the frozen encoder output
        self.encoder = nn.ModuleList(TransformerBlock(cfg.d, cfg.heads, cfg.ff, cfg.dropout) for _ in range(cfg.layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d, 3)

    @classmethod
    def from_config(cls, cfg: TextOnlyConfig, data: DataInfo) -> TextOnly:
        """The token width."""
        return cls(cfg, token_dim=data.token_dim or 768)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 3) sentiment logits (0 negative, 1 neutral, 2 positive)."""
        mask = batch["text_mask"].bool()  # (B, L)
        h = self.token_proj(batch["tokens"].float())  # (B, L, D)
        for layer in self.encoder:
            h = layer(h, mask)
        if self.cfg.pool == "first":
            pooled = h[:, 0]  # (B, D)
        else:
            pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        return self.classifier(self.drop(pooled))

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(self(batch), batch["label"].long())
        return {"loss": ce, "ce": ce.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return [(opt, None)]
