"""`casc`: Cross-modal Attention with Semantic Consistence.

Xu, Wang, Yang, Zuo, Shen, Shen, IEEE TNNLS 2020. The local alignment is `scan` with both
directions averaged (CASC-base); on top, global semantic consistency (Sec. III-C):

- semantic labels: the top-C words (nouns by default) of the training captions; an image's
  labels are the union over its captions (built once by the task layer, stored in the store);
- global image vector A^I = mean over words of the T2I attended vectors, global text vector
  A^T = mean over regions of the I2T attended vectors (Eq. 10), both for the positive pairs;
- one classifier Linear(h, 512) - tanh - Linear(512, C) maps each to multi-label logits
  (shared by both, the released `FC1`); loss = BCE with per-label positive weight
  p_c = #neg / #pos (Eq. 11), averaged over samples and labels as the released code;
- total loss = triplet on the mean of the two directions + alpha * (BCE(A^I) + BCE(A^T))
  (Eq. 12), alpha = 10; two Adam optimisers: local lr (2e-4 Flickr30K / 5e-4 COCO, x0.1 after
  15 epochs) and global lr 1e-2.

Defaults are the authors' released code (Wangt-CN/Code_CASC: `train.py`, `model.py`,
`evaluation.py`; `recipe=code`); `recipe=paper` is the paper's text; a field set explicitly
wins over either. The local-branch rows are those of `scan` (lighthead.heads.scan).

| what | paper | released code | lighthead default | switch |
|---|---|---|---|---|
| softmax temperatures, word over regions (T2I) / region over words (I2T) | lambda2 = 4 / lambda1 = 9 (`lambda_t2i=4` `lambda_i2t=9`) | 9 / 4 (`lambda_softmax_avg`, `lambda_softmax_lse`) | `lambda_t2i=9` `lambda_i2t=4` | `lambda_t2i`, `lambda_i2t` |
| cosines normalised before the softmax | none (`attn_norm=no_norm`) | `clipped_l2norm` | `attn_norm=clipped_l2norm` | `attn_norm` |
| T2I / I2T aggregation | mean / mean (`agg_t2i=mean` `agg_i2t=mean`) | mean / LogSumExp 5 (`t2i_agg_func`, `i2t_agg_func`, `lambda_lse`) | mean / lse 5 (`agg_t2i=mean` `agg_i2t=lse` `lambda_lse_i2t=5`) | `agg_t2i`, `agg_i2t`, `lambda_lse_i2t` |
| negatives in a batch (Eq. 8) | the hardest other image and caption of the minibatch (M != I, N != T) | `ContrastiveLoss` masks the diagonal only: another caption of a repeated image is a negative | as released (`same_image_positive=false`; demo: true) | `same_image_positive=true` |
| test score | Eq. 13: beta (S_I2T + S_T2I) + (1 - beta) cos(sigma(FC(A^I)), labels of the caption) (`test_score=paper`) | beta 0.5 (S_I2T + S_T2I) + (1 - beta) cos(sigma(FC(A^I)), sigma(FC(A^T))), beta 0.8 (`shard_xattn_all`) | code (`test_score=code` `beta=0.8`) | `test_score=code\\|paper`, `beta` |
| label classifier | two FC layers with tanh (width not given); 500 nouns | Linear(1024, 512) - tanh - Linear(512, 500) (`FC1`) | hidden 512, 500 noun labels (`label_hidden=512` `num_labels=500` `label_type=nouns`) | `label_hidden`, `num_labels`, `label_type` |
| loss weight, global lr schedule | alpha 10; 1e-2, x0.1 every 10 epochs (`global_decay_epochs=10` `global_decay_gamma=0.1`) | alpha 10; 0.01 * 0.8 ** (epoch // 3) (`adjust_learning_rate1`) | x0.8 every 3 (`alpha=10` `lr_global=0.01` `global_decay_epochs=3` `global_decay_gamma=0.8`) | `alpha`, `lr_global`, `global_decay_epochs`, `global_decay_gamma` |

Training ranks on 0.5 (S_I2T + S_T2I) in both recipes (the released `cross_attn=all` loss,
and the paper's "we average them"), so the code test score ranks on the same local part.
The paper's score needs the caption's labels at test time: the label words it contains itself
(its sibling captions are unknown then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lighthead.heads.attention import xattn_paired
from lighthead.heads.base import HEADS, DataInfo
from lighthead.heads.losses import weighted_bce
from lighthead.heads.optim import step_lr
from lighthead.heads.scan import SCAN, SCANConfig

LABEL_TYPES = ("nouns", "verbs", "adjectives", "all")
TEST_SCORES = ("code", "paper")


@dataclass
class CASCConfig(SCANConfig):
    """CASC hyper-parameters; the SCAN fields are the local branch (direction is always both)."""

    label_type: str = "nouns"  # which words become labels: nouns, verbs, adjectives or all
    num_labels: int = 500  # label vocabulary size C (the top-C words of the training captions)
    label_hidden: int = 512  # hidden width of the label classifier (the released FC1: 1024 -> 512 -> 500)
    alpha: float = 10.0  # weight of the global BCE loss (Eq. 12)
    beta: float = 0.8  # test-score weight of the local part (Eq. 13); 1 = local only
    # "code": beta 0.5 (S_I2T + S_T2I) + (1 - beta) cos(labels predicted from A^I, from A^T);
    # "paper": Eq. 13, beta (S_I2T + S_T2I) + (1 - beta) cos(labels predicted from A^I, the caption's); None: recipe's
    test_score: str | None = None
    lr_global: float = 1e-2  # Adam learning rate of the label classifier
    # multiply lr_global by global_decay_gamma every this many epochs (0 = never); None: code 3, paper 10
    global_decay_epochs: int | None = None
    global_decay_gamma: float | None = None  # that factor; None: code 0.8, paper 0.1

    RECIPE_VALUES: ClassVar[dict[str, dict[str, Any]]] = {
        "code": {
            **SCANConfig.RECIPE_VALUES["code"],
            "direction": "both",
            "agg_t2i": "mean",
            "test_score": "code",
            "global_decay_epochs": 3,
            "global_decay_gamma": 0.8,
        },
        "paper": {
            **SCANConfig.RECIPE_VALUES["paper"],
            "direction": "both",
            "test_score": "paper",
            "global_decay_epochs": 10,
            "global_decay_gamma": 0.1,
        },
    }
    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        **SCANConfig.DATASET_DEFAULTS,
        # CASC's code has no COCO values of its own: SCAN's COCO lr and schedule, I2T LSE 5.
        "coco": {k: v for k, v in SCANConfig.DATASET_DEFAULTS["coco"].items() if k != "lambda_lse_i2t"},
        "demo": {**SCANConfig.DATASET_DEFAULTS["demo"], "label_hidden": 256},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction != "both":
            raise ValueError(
                f"casc needs direction=both (its labels use both attended vectors), got {self.direction!r}"
            )
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {', '.join(LABEL_TYPES)}, got {self.label_type!r}")
        if self.num_labels < 1 or self.label_hidden < 1:
            raise ValueError("num_labels and label_hidden must be >= 1")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.test_score not in TEST_SCORES:
            raise ValueError(f"test_score must be one of {', '.join(TEST_SCORES)}, got {self.test_score!r}")
        if self.alpha < 0 or self.lr_global <= 0 or self.global_decay_epochs < 0 or self.global_decay_gamma <= 0:
            raise ValueError("alpha and global_decay_epochs must be >= 0, lr_global and global_decay_gamma > 0")

    def semantic_labels(self) -> tuple[str, int]:
        """The task builds the top `num_labels` words of type `label_type` as the images' labels."""
        return self.label_type, self.num_labels


@HEADS.register("casc")
class CASC(SCAN):
    """CASC-base plus the semantic-label branch."""

    config_class = CASCConfig

    def __init__(
        self,
        cfg: CASCConfig,
        region_dim: int = 2048,
        vocab_size: int = 0,
        token_dim: int = 0,
        num_labels: int = 0,
        label_pos_weight: Any = None,
    ):
        super().__init__(cfg, region_dim, vocab_size, token_dim)
        self.inputs = self.inputs + ("labels",)
        c = num_labels or cfg.num_labels  # the data may hold fewer label words than asked for
        self.fc1 = nn.Linear(cfg.embed_size, cfg.label_hidden)
        self.fc2 = nn.Linear(cfg.label_hidden, c)
        weight = torch.ones(c) if label_pos_weight is None else torch.as_tensor(label_pos_weight, dtype=torch.float32)
        if weight.shape != (c,):
            raise ValueError(f"label_pos_weight has shape {tuple(weight.shape)}, expected ({c},)")
        self.register_buffer("pos_weight", weight)

    @classmethod
    def from_config(cls, cfg: CASCConfig, data: DataInfo) -> CASC:
        """SCAN's sizes, and the label vocabulary the task built with its positive weights."""
        return cls(
            cfg,
            region_dim=data.region_dim or 2048,
            vocab_size=data.vocab_size or 0,
            token_dim=data.token_dim or 0,
            num_labels=data.num_labels or 0,
            label_pos_weight=data.label_pos_weight,
        )

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Global vectors (..., h) -> label logits (..., C)."""
        return self.fc2(torch.tanh(self.fc1(x)))

    # -- encoders -----------------------------------------------------------------------
    # fc1 is linear, so fc1(sum_k w_k v_k) = sum_k w_k (W1 v_k) + b1: each side is projected once.
    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().encode_image(batch)
        out["label_proj"] = out["regions"] @ self.fc1.weight.T  # (B, K, H)
        return out

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().encode_text(batch)
        if self.cfg.test_score == "code":
            out["label_proj"] = out["words"] @ self.fc1.weight.T  # (B, L, H)
        if "labels" in batch:
            out["labels"] = batch["labels"].float()  # (B, C)
        return out

    # -- scoring ------------------------------------------------------------------------
    def _label_probs(self, pre: torch.Tensor) -> torch.Tensor:
        """First-layer pre-activations without bias (..., H) -> sigmoid of the label logits (..., C)."""
        # tanh(x) = 2 sigmoid(2x) - 1 (the same values, several times faster than torch.tanh on a
        # CPU), and the affine 2 s - 1 folds into fc2: W2 (2 s - 1) + b2 = (2 W2) s + (b2 - W2 1).
        # So per pair: one pass for 2 (x + b1), an in-place sigmoid, the GEMM, an in-place sigmoid.
        # (The GEMM may run in bf16 under autocast; the nonlinearities run in float32.)
        w2 = self.fc2.weight
        hidden = torch.add(2.0 * self.fc1.bias, pre, alpha=2.0).sigmoid_()  # (..., H) float32
        logits = nn.functional.linear(hidden, 2.0 * w2, self.fc2.bias - w2.sum(1))  # (..., C)
        return logits.float().sigmoid_()  # (..., C); .float() is a no-op (no copy) in float32

    def score(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """(I, T) test scores (`test_score`: the released evaluation's, or Eq. 13)."""
        beta, code = self.cfg.beta, self.cfg.test_score == "code"
        if beta >= 1.0:  # local only: no labels needed
            out = self.local_scores(img, txt)
            return beta * (0.5 if code else 1.0) * (out["i2t"] + out["t2i"])
        if not code and "labels" not in txt:
            raise ValueError("test_score=paper compares with the captions' labels: the caption batches have none")
        out = self.local_scores(img, txt, weights=("region", "word") if code else ("region",))
        # Labels predicted from A^I of every pair: (I, T, K) weights x (I, K, H) projections.
        pre_img = torch.einsum("itk,ikh->ith", out["region_weights"], img["label_proj"])  # (I, T, H)
        if code:  # ... against the labels predicted from A^T of the same pair
            proj_t = txt["label_proj"][:, : self.words_used(txt)]  # (T, L, H)
            pre_txt = torch.einsum("itl,tlh->ith", out["word_weights"], proj_t)  # (I, T, H)
            # Both sides through the classifier at once: one GEMM of twice the rows, half the calls.
            probs, other = self._label_probs(torch.stack((pre_img, pre_txt)))  # (2, I, T, C)
            dot = (probs * other).sum(-1)
            s_g = dot / (probs.norm(dim=-1) * other.norm(dim=-1)).clamp(min=1e-8)
            return beta * 0.5 * (out["i2t"] + out["t2i"]) + (1.0 - beta) * s_g
        probs = self._label_probs(pre_img)  # (I, T, C)
        truth = txt["labels"]  # (T, C)
        dot = torch.einsum("itc,tc->it", probs, truth)
        s_g = dot / (probs.norm(dim=-1) * truth.norm(dim=-1)[None]).clamp(min=1e-8)
        return beta * (out["i2t"] + out["t2i"]) + (1.0 - beta) * s_g

    def pair_bytes(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> int:
        sides = 2 if self.cfg.test_score == "code" else 1
        return super().pair_bytes(img, txt) + 4 * 3 * sides * (self.fc1.out_features + self.fc2.out_features)

    # -- training -----------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        img, txt = self.encode_image(batch), self.encode_text(batch)
        local = self.ranking_loss(self.local_score(self.local_scores(img, txt)), batch)
        # Global vectors of the positive pairs only (image b with caption b).
        pair = xattn_paired(
            img["regions"], img["mask"], txt["words"], txt["mask"], self.cfg.xattn(()), weights=("region", "word")
        )
        a_img = torch.einsum("bk,bkd->bd", pair["region_weights"], img["regions"])  # (B, h): A^I
        a_txt = torch.einsum("bl,bld->bd", pair["word_weights"], txt["words"])  # (B, h): A^T
        labels = batch["labels"].float()
        bce = weighted_bce(self.classify(a_img), labels, self.pos_weight) + weighted_bce(
            self.classify(a_txt), labels, self.pos_weight
        )
        total = local + self.cfg.alpha * bce
        return {"loss": total, "triplet": local.detach(), "bce": bce.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        classifier = list(self.fc1.parameters()) + list(self.fc2.parameters())
        ids = {id(p) for p in classifier}
        local = [p for p in self.parameters() if id(p) not in ids]
        opt_local = torch.optim.Adam(local, lr=self.cfg.lr)
        opt_global = torch.optim.Adam(classifier, lr=self.cfg.lr_global)
        return [
            (opt_local, step_lr(opt_local, self.cfg.lr_decay_epochs)),
            (opt_global, step_lr(opt_global, self.cfg.global_decay_epochs, self.cfg.global_decay_gamma)),
        ]
