"""`scan`: CASC-base, the local alignment of CASC alone.

Xu et al., "Cross-Modal Attention With Semantic Consistence for Image-Text Matching",
IEEE TNNLS 2020, Sec. III-A/B: SCAN's stacked cross attention (Lee et al., ECCV 2018) in both
directions, the image-text score being the average of the I2T and T2I scores, trained with
the hardest-negative triplet loss. Defaults are the paper's (Flickr30K; COCO via
DATASET_DEFAULTS).

Image side: K region features (2048) -> Linear(2048, 1024) -> L2 norm.
Text side: word ids -> embedding 300 -> bidirectional GRU (1024, directions averaged) -> L2
norm; or (text = "text/...") cached token features of a frozen encoder -> Linear -> L2 norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lighthead.heads.attention import l2norm, xattn_all_pairs
from lighthead.heads.base import HEADS, Head
from lighthead.heads.losses import positives_from_index, triplet_loss
from lighthead.heads.text_encoders import caption_encoder


@dataclass
class SCANConfig:
    """CASC-base / SCAN hyper-parameters (Xu et al. TNNLS 2020; Lee et al. ECCV 2018)."""

    regions: str = "regions/butd-r101-vg-36"  # feature set of the region features
    text: str = "words/vocab"  # "words/..." = word ids for the GRU; "text/..." = frozen token features
    num_regions: int = 0  # keep the first K regions (0 = all; variable-K sets are padded + masked)
    embed_size: int = 1024  # joint space width h
    word_dim: int = 300  # word embedding width
    gru_layers: int = 1  # GRU layers
    bidirectional: bool = True  # bi-GRU with the two directions averaged
    lambda_i2t: float = 9.0  # lambda1: softmax temperature over words (I2T)
    lambda_t2i: float = 4.0  # lambda2: softmax temperature over regions (T2I)
    attn_norm: str = "none"  # "none" = paper's softmax(lambda s); "clipped_l2" = SCAN code's normalisation
    margin: float = 0.2  # triplet margin sigma
    max_violation: bool = True  # hardest negative in the batch (else sum over all negatives)
    sum_negatives_epochs: int = 0  # first epochs that sum over all negatives before hardest-negative
    lr: float = 2e-4  # Adam learning rate (Flickr30K; 5e-4 on COCO)
    lr_decay_epochs: int = 15  # multiply the lr by 0.1 every this many epochs (0 = never)
    epochs: int = 30  # training epochs
    batch_size: int = 128  # pairs per batch
    grad_clip: float = 2.0  # gradient-norm clipping per optimiser (0 = off)

    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "coco": {"lr": 5e-4, "epochs": 20, "lr_decay_epochs": 10},
        # CPU-sized for the ~240 training images of the demo; summing over negatives learns
        # faster from scratch than the hardest negative on so few captions.
        "demo": {"embed_size": 256, "batch_size": 32, "lr": 2e-3, "max_violation": False, "epochs": 8,
                 "regions": "regions/butd-r101-vg-given"},
    }

    def __post_init__(self) -> None:
        for name in ("embed_size", "word_dim", "gru_layers", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (negatives come from the batch)")
        if self.attn_norm not in ("none", "clipped_l2"):
            raise ValueError(f"attn_norm must be 'none' or 'clipped_l2', got {self.attn_norm!r}")
        if not self.text.startswith(("words/", "text/")):
            raise ValueError(f"text must name a words/... or text/... feature set, got {self.text!r}")
        if not self.regions.startswith("regions/"):
            raise ValueError(f"regions must name a regions/... feature set, got {self.regions!r}")
        if self.margin < 0 or self.lr <= 0 or self.grad_clip < 0:
            raise ValueError("margin and grad_clip must be >= 0 and lr > 0")
        if self.num_regions < 0 or self.sum_negatives_epochs < 0 or self.lr_decay_epochs < 0:
            raise ValueError("num_regions, sum_negatives_epochs and lr_decay_epochs must be >= 0")

    @property
    def uses_tokens(self) -> bool:
        return self.text.startswith("text/")


def text_inputs(cfg: SCANConfig) -> tuple[str, ...]:
    return ("tokens",) if cfg.uses_tokens else ("word_ids",)


@HEADS.register("scan")
class SCAN(Head):
    """Local alignment head. encode_image/encode_text cache each side; score() scores blocks."""

    task = "retrieval"
    config_class = SCANConfig

    def __init__(self, cfg: SCANConfig, region_dim: int = 2048, vocab_size: int = 0, token_dim: int = 0):
        super().__init__()
        self.cfg = cfg
        self.inputs = ("regions", "text_mask", "text_len", "image_index") + text_inputs(cfg)
        self.epoch = 0  # set by the training loop (start_epoch), for the negatives warm-up
        self.img_fc = nn.Linear(region_dim, cfg.embed_size)
        # SCAN's Xavier-uniform init of the region projection.
        nn.init.xavier_uniform_(self.img_fc.weight)
        nn.init.zeros_(self.img_fc.bias)
        self.txt_enc = caption_encoder(cfg.text, cfg.embed_size, token_dim=token_dim, vocab_size=vocab_size,
                                       word_dim=cfg.word_dim, gru_layers=cfg.gru_layers,
                                       bidirectional=cfg.bidirectional)

    # -- encoders -----------------------------------------------------------------------
    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"regions": (B, K, h) unit-norm, "mask": (B, K) bool, "gram": (B, K, K) region dot products}."""
        regions = batch["regions"].float()
        mask = batch.get("region_mask")
        if mask is None:
            mask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
        v = l2norm(self.img_fc(regions)) * mask[..., None]  # (B, K, h)
        # The region Gram matrix is pair-independent: computed once here, not in every scored block.
        return {"regions": v, "mask": mask, "gram": v @ v.transpose(1, 2)}  # gram: (B, K, K)

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"words": (B, L, h) unit-norm, "mask": (B, L) bool, "len": (B,), "gram": (B, L, L)}."""
        mask = batch["text_mask"]
        if self.cfg.uses_tokens:
            states, _ = self.txt_enc(batch["tokens"], mask)
        else:
            states, _ = self.txt_enc(batch["word_ids"], batch["text_len"])
        t = l2norm(states) * mask[..., None]  # (B, L, h)
        return {"words": t, "mask": mask, "len": batch["text_len"], "gram": t @ t.transpose(1, 2)}  # (B, L, L)

    # -- scoring ------------------------------------------------------------------------
    def local_scores(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor],
                     weights: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """I2T / T2I scores (I, T) of every pair; padding beyond the longest caption is dropped."""
        n = int(txt["mask"].sum(1).max().item()) if txt["mask"].numel() else 1
        words, mask = txt["words"][:, :n], txt["mask"][:, :n]
        return xattn_all_pairs(img["regions"], img["mask"], words, mask, self.cfg.lambda_i2t,
                               self.cfg.lambda_t2i, self.cfg.attn_norm, weights,
                               gram_v=img.get("gram"), gram_t=txt["gram"][:, :n, :n] if "gram" in txt else None)

    def score(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """(I, T) image-caption scores: the mean of the two directions."""
        out = self.local_scores(img, txt)
        return 0.5 * (out["i2t"] + out["t2i"])

    def pair_bytes(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> int:
        """Working memory per scored pair (about eight (K, L) float tensors)."""
        return 4 * 8 * img["regions"].shape[1] * max(1, txt["words"].shape[1]) + 64

    # -- training -----------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def hardest(self) -> bool:
        return self.cfg.max_violation and self.epoch >= self.cfg.sum_negatives_epochs

    def ranking_loss(self, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        positives = positives_from_index(batch["image_index"]) if "image_index" in batch else None
        return triplet_loss(scores, positives, self.cfg.margin, self.hardest)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scores = self.score(self.encode_image(batch), self.encode_text(batch))  # (B, B)
        loss = self.ranking_loss(scores, batch)
        return {"loss": loss, "triplet": loss.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        return [(opt, step_lr(opt, self.cfg.lr_decay_epochs))]


def step_lr(opt: torch.optim.Optimizer, every: int) -> Any:
    """x0.1 every `every` epochs (None when every == 0); the loop steps it once per epoch."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=0.1) if every > 0 else None
