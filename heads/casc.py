"""`casc`: Cross-modal Attention with Semantic Consistence.

Xu, Wang, Yang, Zuo, Shen, Shen, IEEE TNNLS 2020. The local alignment is `scan` (CASC-base);
on top, global semantic consistency (Sec. III-C):

- semantic labels: the top-C words (nouns by default) of the training captions; an image's
  labels are the union over its captions (built once by the task layer, stored in the store);
- global image vector A^I = mean over words of the T2I attended vectors, global text vector
  A^T = mean over regions of the I2T attended vectors (Eq. 10), both for the positive pairs;
- one classifier Linear(h, 500) - tanh - Linear(500, C) maps each to multi-label logits
  (shared by both, as in the authors' code); loss = BCE with per-label positive weight
  p_c = #neg / #pos (Eq. 11);
- total loss = triplet (local) + alpha * BCE (Eq. 12), alpha = 10; two Adam optimisers:
  local lr (2e-4 Flickr30K / 5e-4 COCO) and global lr 1e-2 decayed x0.1 every 10 epochs;
- test score (Eq. 13): S = beta (S_I2T + S_T2I) + (1 - beta) cos(sigmoid(labels predicted
  from A^I of the pair), ground-truth labels of the caption), beta = 0.8. The caption's
  ground-truth labels are the label words it contains itself (at test time a caption's
  sibling captions are unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lighthead.heads.attention import xattn_paired
from lighthead.heads.base import HEADS
from lighthead.heads.losses import weighted_bce
from lighthead.heads.scan import SCAN, SCANConfig, step_lr

LABEL_TYPES = ("nouns", "verbs", "adjectives", "all")


@dataclass
class CASCConfig(SCANConfig):
    """CASC hyper-parameters (Xu et al., TNNLS 2020); the SCAN fields are the local branch."""

    label_type: str = "nouns"  # which words become labels: nouns, verbs, adjectives or all
    num_labels: int = 500  # label vocabulary size C (the top-C words of the training captions)
    label_hidden: int = 500  # hidden width of the label classifier
    alpha: float = 10.0  # weight of the global BCE loss (Eq. 12)
    beta: float = 0.8  # test-score weight of the local scores (Eq. 13); 1 = local only
    lr_global: float = 1e-2  # Adam learning rate of the label classifier
    global_decay_epochs: int = 10  # x0.1 on lr_global every this many epochs (0 = never)

    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        **SCANConfig.DATASET_DEFAULTS,
        "demo": {**SCANConfig.DATASET_DEFAULTS["demo"], "label_hidden": 256},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {', '.join(LABEL_TYPES)}, got {self.label_type!r}")
        if self.num_labels < 1 or self.label_hidden < 1:
            raise ValueError("num_labels and label_hidden must be >= 1")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.alpha < 0 or self.lr_global <= 0 or self.global_decay_epochs < 0:
            raise ValueError("alpha and global_decay_epochs must be >= 0 and lr_global > 0")


@HEADS.register("casc")
class CASC(SCAN):
    """CASC-base plus the semantic-label branch."""

    config_class = CASCConfig

    def __init__(self, cfg: CASCConfig, region_dim: int = 2048, vocab_size: int = 0, token_dim: int = 0,
                 num_labels: int = 0, label_pos_weight: Any = None):
        super().__init__(cfg, region_dim, vocab_size, token_dim)
        self.inputs = self.inputs + ("labels",)
        c = num_labels or cfg.num_labels  # the data may hold fewer label words than asked for
        self.fc1 = nn.Linear(cfg.embed_size, cfg.label_hidden)
        self.fc2 = nn.Linear(cfg.label_hidden, c)
        weight = torch.ones(c) if label_pos_weight is None else torch.as_tensor(label_pos_weight, dtype=torch.float32)
        if weight.shape != (c,):
            raise ValueError(f"label_pos_weight has shape {tuple(weight.shape)}, expected ({c},)")
        self.register_buffer("pos_weight", weight)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Global vectors (..., h) -> label logits (..., C)."""
        return self.fc2(torch.tanh(self.fc1(x)))

    # -- encoders -----------------------------------------------------------------------
    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().encode_image(batch)
        # fc1 is linear, so fc1(sum_k w_k v_k) = sum_k w_k (W1 v_k) + b1: project regions once.
        out["label_proj"] = out["regions"] @ self.fc1.weight.T  # (B, K, 500)
        return out

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().encode_text(batch)
        if "labels" in batch:
            out["labels"] = batch["labels"].float()  # (B, C)
        return out

    # -- scoring ------------------------------------------------------------------------
    def score(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """(I, T) test scores of Eq. 13 (local only when beta == 1 or captions carry no labels)."""
        beta = self.cfg.beta
        if beta >= 1.0 or "labels" not in txt:
            return super().score(img, txt)
        out = self.local_scores(img, txt, weights=("region",))
        local = out["i2t"] + out["t2i"]
        # Labels predicted from A^I of every pair: (I, T, K) weights x (I, K, 500) projections.
        # (Products may run in bf16 under autocast; the nonlinearities run in float32.)
        pre = torch.einsum("itk,ikh->ith", out["region_weights"], img["label_proj"]).float() + self.fc1.bias
        # tanh(x) = 2 sigmoid(2x) - 1: the same values, and several times faster than torch.tanh on a CPU
        hidden = 2.0 * torch.sigmoid(2.0 * pre) - 1.0  # (I, T, H)
        probs = torch.sigmoid(self.fc2(hidden).float())  # (I, T, C)
        truth = txt["labels"]  # (T, C)
        dot = torch.einsum("itc,tc->it", probs, truth)
        s_g = dot / (probs.norm(dim=-1) * truth.norm(dim=-1)[None]).clamp(min=1e-8)
        return beta * local + (1.0 - beta) * s_g

    def pair_bytes(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> int:
        return super().pair_bytes(img, txt) + 4 * 3 * (self.fc1.out_features + self.fc2.out_features)

    # -- training -----------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        img, txt = self.encode_image(batch), self.encode_text(batch)
        out = self.local_scores(img, txt)
        local = self.ranking_loss(0.5 * (out["i2t"] + out["t2i"]), batch)
        # Global vectors of the positive pairs only (image b with caption b).
        pair = xattn_paired(img["regions"], img["mask"], txt["words"], txt["mask"], self.cfg.lambda_i2t,
                            self.cfg.lambda_t2i, self.cfg.attn_norm, weights=("region", "word"))
        a_img = torch.einsum("bk,bkd->bd", pair["region_weights"], img["regions"])  # (B, h): A^I
        a_txt = torch.einsum("bl,bld->bd", pair["word_weights"], txt["words"])  # (B, h): A^T
        labels = batch["labels"].float()
        bce = weighted_bce(self.classify(a_img), labels, self.pos_weight) + \
            weighted_bce(self.classify(a_txt), labels, self.pos_weight)
        total = local + self.cfg.alpha * bce
        return {"loss": total, "triplet": local.detach(), "bce": bce.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        classifier = list(self.fc1.parameters()) + list(self.fc2.parameters())
        ids = {id(p) for p in classifier}
        local = [p for p in self.parameters() if id(p) not in ids]
        opt_local = torch.optim.Adam(local, lr=self.cfg.lr)
        opt_global = torch.optim.Adam(classifier, lr=self.cfg.lr_global)
        return [(opt_local, step_lr(opt_local, self.cfg.lr_decay_epochs)),
                (opt_global, step_lr(opt_global, self.cfg.global_decay_epochs))]

