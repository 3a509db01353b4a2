"""ITIN: Image-Text Interaction Network for image-text sentiment.

Zhu, Li, Yang, Zhao, Liu, Qian, "Multimodal Sentiment Analysis With Image-Text Interaction
Network", IEEE Transactions on Multimedia 25, 2023 (seeds/001). Equation numbers below are the
paper's.

Differences from the paper, on purpose:
- BERT is frozen and its token features are cached in the store (the paper embeds words with
  pre-trained BERT too; whether it fine-tunes is not stated). The bidirectional GRU on top is
  trained.
- The gate (Eq. 8) is written `sigma(r_i * u_i)` with an elementwise product, but it is used as a
  scalar per region-word pair (Fig. 7 shows one gate value per pair): we take the dot product
  `g_i = sigma(r_i . u_i)`.
- Ablations (Table III): "w/o Align" replaces the attention of Eq. 6 by a uniform one, so every
  region gets the plain sentence mean (`u_i = S`); "w/o Gating" sets `g_i = 1`; "w/o Context"
  classifies `MLP(C)`; "only Context" classifies `lambda MLP(V) + (1 - lambda) MLP(S)`.
- The paper does not give d, k, the MLP sizes or dropout; d = 1024 follows the authors'
  released options (`embed_size`), the rest are our choices.

The authors' released code (zhutong0219/ITIN: Demo.py and opt.py) is an inference demo for a
trained checkpoint: it has the model but no training loop, and its model differs from the
paper in several places (listed below). The defaults here follow the paper; the released
model's forms are not implemented.

| what | paper | released code (inference demo) | lighthead default | switch |
|---|---|---|---|---|
| region features | r_i = W_r f_i + b_r (Eq. 1), top m regions | Linear(2048, 1024), Xavier init, then L2-normalised | Eq. 1, no norm; m = 2 | `m` |
| word features | BERT-base -> bi-GRU, directions averaged (Eq. 2-4); fine-tuning not stated | frozen BERT -> 2-layer bi-GRU (1024, dropout 0.25) over 100 zero-padded positions, directions averaged | frozen cached tokens -> 1-layer bi-GRU over the real tokens (packed) | - |
| S (Eq. 15) | mean of the n word features | mean over all 100 padded positions | mean over the real tokens | - |
| alignment (Eq. 5-7) | softmax(W^_r R (W^_t W)^T / sqrt(k)) W | the same (bias-free d x d projections, k = d), then a second attention among the M attended vectors, L2-normalised | Eq. 5-7, bias-free, k = 1024 | `align=false` |
| gate (Eq. 8) | sigma(r_i * u_i), one value per region (Fig. 7) | sigma(r_i . u_i) | sigma(r_i . u_i) | `gating=false` |
| fusion (Eq. 10-11) | ReLU(W_o c_i + b_o) + r_i | bias-free Linear, ReLU, + r_i | with b_o | - |
| pooling (Eq. 12-13) | softmax(Tran_z(Z)), Tran_z "linear layers and a non-linearity" | 4 maps from Linear-ReLU-Linear(d, 4), pooled vectors averaged, L2-normalised | Linear(d, d/2)-tanh-Linear(d/2, 1), one map | - |
| MLPs (Eq. 16-17), classifier (Eq. 19) | sizes not given | Linear to 64 + ReLU per branch; one Linear(64, 3) after mixing (equal to Eq. 18-19) | Linear-ReLU-Dropout-Linear to d; Linear(d, 3) | `d`, `dropout` |
| lambda (Eq. 18) | 0.2 | 0.2 | 0.2 | `lam` |
| visual context V (Eq. 14) | ImageNet ResNet-18, 224 x 224, 512-d | ResNet-18 in the checkpoint (trained with the model), resize 256 + centre crop 224 | cached, frozen ResNet-18 | `global_features` |
| optimiser | Adam 1e-3, x0.1 every 10 epochs, decay 1e-5, batch 64 / 128 | lr 1e-3, decay 1e-5 and 200 epochs named, no training loop | the paper's, 30 epochs | `lr`, `lr_step`, `lr_gamma`, `weight_decay`, `batch_size`, `epochs` |
| reported "F1" | Eq. 21-23 (precision, recall per class); averaging not said; the numbers sit within ~0.5 of accuracy on imbalanced MVSA, as weighted F1 does | accuracy only | `accuracy`, `macro_f1` and `weighted_f1` | - |
| splits, selection | random 8:1:1; selection not said | - | the store's splits; best validation accuracy on the whole dev split | - |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lighthead.heads.base import HEADS, Head


@dataclass
class ItinConfig:
    """ITIN hyper-parameters; defaults are the paper's (Sec. III, IV-B, IV-F) where it gives them."""

    regions: str = "regions/butd-r101-vg-36"  # feature set of the region features (the first m are used)
    text: str = "text/bert-base-uncased"  # feature set of the frozen token features
    global_features: str = "global/resnet18"  # feature set of the visual context V (Eq. 14)
    d: int = 1024  # width of regions r_i and words w_i (Eq. 1-4)
    k: int = 1024  # width of the affinity projections W^_r, W^_t (Eq. 5)
    m: int = 2  # regions used: the first m of the store's (confidence order); paper's best
    lam: float = 0.2  # lambda of Eq. 18: weight of the visual-context branch F1
    dropout: float = 0.1  # dropout inside the MLPs (not given in the paper)
    align: bool = True  # cross-modal alignment, Eq. 5-7 (false: uniform attention, "w/o Align")
    gating: bool = True  # cross-modal gating, Eq. 8-9 (false: g_i = 1, "w/o Gating")
    context: bool = True  # visual/textual context, Eq. 14-18 (false: F = MLP(C), "w/o Context")
    context_only: bool = False  # F from V and S alone, no region-word interaction ("only Context")
    lr: float = 1e-3  # Adam learning rate
    lr_step: int = 10  # epochs between learning-rate decays
    lr_gamma: float = 0.1  # decay factor
    weight_decay: float = 1e-5  # Adam weight decay
    batch_size: int = 64  # 64 on MVSA-Single, 128 on MVSA-Multiple
    epochs: int = 30  # not given in the paper; three decay steps
    grad_clip: float = 0.0  # gradient-norm clipping (0 = off; the paper does not clip)

    RECORD_KIND: ClassVar[str] = "post"  # trains on image-text posts (MVSA, demo)
    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "mvsa-multiple": {"batch_size": 128},
        # the bundled small encoder; CPU-sized
        "demo": {"text": "text/all-minilm-l6-v2", "d": 128, "k": 128, "epochs": 10, "batch_size": 32},
    }

    def __post_init__(self) -> None:
        for name in ("d", "k", "m", "lr_step", "batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"itin: {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"itin: lam must be in [0, 1], got {self.lam}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"itin: dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 < self.lr_gamma <= 1:
            raise ValueError("itin: need lr > 0, weight_decay >= 0, 0 < lr_gamma <= 1")
        if self.context_only and not self.context:
            raise ValueError("itin: context_only=true needs context=true (it keeps only the context)")
        if self.grad_clip < 0:
            raise ValueError(f"itin: grad_clip must be >= 0, got {self.grad_clip}")
        prefixes = {"regions": "regions/", "text": "text/", "global_features": "global/"}
        for name, prefix in prefixes.items():
            if not getattr(self, name).startswith(prefix):
                raise ValueError(f"itin: {name} must name a {prefix}... feature set, got {getattr(self, name)!r}")

    @property
    def num_regions(self) -> int:
        """Regions the task reads per image."""
        return self.m


def mlp(n_in: int, n_out: int, dropout: float) -> nn.Sequential:
    """The MLP of Eq. 16-17: two linear layers with a ReLU between."""
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout), nn.Linear(n_out, n_out))


@HEADS.register("itin")
class Itin(Head):
    """Regions (first m) + cached BERT tokens + a global CNN feature -> 3 sentiment logits.

    Shapes: B batch, M regions used, L tokens, D = d.
    """

    task: ClassVar[str] = "sentiment"
    inputs: ClassVar[tuple[str, ...]] = ("regions", "tokens", "text_mask", "global", "label")  # narrowed per config
    config_class: ClassVar[type] = ItinConfig

    def __init__(self, cfg: ItinConfig | None = None, region_dim: int = 2048, token_dim: int = 768,
                 global_dim: int = 512):
        super().__init__()
        self.cfg = cfg = cfg or ItinConfig()
        d, k = cfg.d, cfg.k
        self.gru = nn.GRU(token_dim, d, batch_first=True, bidirectional=True)  # Eq. 2-3
        if not cfg.context_only:
            self.region_proj = nn.Linear(region_dim, d)  # W_r, b_r (Eq. 1)
            if cfg.align:
                self.aff_r = nn.Linear(d, k, bias=False)  # W^_r (Eq. 5)
                self.aff_t = nn.Linear(d, k, bias=False)  # W^_t (Eq. 5)
            self.fuse = nn.Linear(2 * d, d)  # W_o, b_o (Eq. 10)
            # Tran_z of Eq. 12; no bias on the score layer (a softmax ignores a shared shift)
            half = max(d // 2, 1)
            self.tran_z = nn.Sequential(nn.Linear(d, half), nn.Tanh(), nn.Linear(half, 1, bias=False))
        c_dim = 0 if cfg.context_only else d  # C is absent in the "only Context" ablation
        if cfg.context:
            self.mlp_v = mlp(global_dim + c_dim, d, cfg.dropout)  # Eq. 16
            self.mlp_s = mlp(d + c_dim, d, cfg.dropout)  # Eq. 17
        else:
            self.mlp_c = mlp(d, d, cfg.dropout)
        self.classifier = nn.Linear(d, 3)  # W_f, b_f (Eq. 19)
        inputs = ["tokens", "text_mask", "label"]
        inputs += [] if cfg.context_only else ["regions"]
        inputs += ["global"] if cfg.context else []
        self.inputs = tuple(inputs)

    # -- pieces (each one equation group, so tests can check them separately) --

    def encode_words(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 2-4: (B, L, token_dim), (B, L) -> w_i = mean of the two GRU directions (B, L, D).

        Sequences are packed so the backward direction starts at each text's last real token.
        """
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(tokens, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])  # (B, L, 2D)
        out = out.view(out.shape[0], out.shape[1], 2, -1)  # (B, L, 2, D)
        return out.mean(2)  # (B, L, D)

    def interact(self, r: torch.Tensor, w: torch.Tensor, mask: torch.Tensor,
                 region_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eq. 5-13: regions r (B, M, D), words w (B, L, D) -> C (B, D) and what explains it.

        Returns "C", "attn" (B, M, L) word weights per region, "gate" (B, M), "alpha" (B, M)
        region pooling weights.
        """
        if self.cfg.align:
            a = self.aff_r(r) @ self.aff_t(w).transpose(1, 2)  # (B, M, L), Eq. 5
            a = a / math.sqrt(self.cfg.k)
        else:  # uniform attention over the real words
            a = torch.zeros(r.shape[0], r.shape[1], w.shape[1], dtype=r.dtype, device=r.device)
        a = a.masked_fill(~mask[:, None, :], float("-inf"))
        attn = a.softmax(-1)  # (B, M, L), Eq. 6
        u = attn @ w  # (B, M, D), Eq. 7
        if self.cfg.gating:
            gate = torch.sigmoid((r * u).sum(-1))  # (B, M), Eq. 8 (dot product, see module doc)
        else:
            gate = torch.ones(r.shape[:2], dtype=r.dtype, device=r.device)
        c = gate[..., None] * torch.cat([r, u], -1)  # (B, M, 2D), Eq. 9
        z = F.relu(self.fuse(c)) + r  # (B, M, D), Eq. 10-11
        scores = self.tran_z(z).squeeze(-1)  # (B, M)
        if region_mask is not None:  # an image with fewer than m regions (adaptive sets)
            scores = scores.masked_fill(~region_mask, float("-inf"))
        alpha = scores.softmax(-1)  # (B, M), Eq. 12
        big_c = (alpha[..., None] * z).sum(1)  # (B, D), Eq. 13
        return {"C": big_c, "attn": attn, "gate": gate, "alpha": alpha}

    def fuse_context(self, big_c: torch.Tensor | None, v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Eq. 16-18: C (B, D) or None, V (B, global_dim), S (B, D) -> F (B, D)."""
        if not self.cfg.context:
            return self.mlp_c(big_c)
        parts_v = [v] if big_c is None else [v, big_c]
        parts_s = [s] if big_c is None else [s, big_c]
        f1 = self.mlp_v(torch.cat(parts_v, -1))  # Eq. 16
        f2 = self.mlp_s(torch.cat(parts_s, -1))  # Eq. 17
        return self.cfg.lam * f1 + (1 - self.cfg.lam) * f2  # Eq. 18

    def explain(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits plus the alignment, gates and pooling weights (for figures like the paper's Fig. 7)."""
        mask = batch["text_mask"].bool()
        w = self.encode_words(batch["tokens"].float(), mask)  # (B, L, D)
        n = mask.sum(1, keepdim=True).clamp(min=1)
        s = (w * mask[..., None]).sum(1) / n  # (B, D), Eq. 15
        out: dict[str, torch.Tensor] = {}
        big_c = None
        if not self.cfg.context_only:
            r = self.region_proj(batch["regions"][:, : self.cfg.m].float())  # (B, M, D), Eq. 1
            rmask = batch.get("region_mask")
            out = self.interact(r, w, mask, None if rmask is None else rmask[:, : self.cfg.m].bool())
            big_c = out["C"]
        feat = self.fuse_context(big_c, batch["global"].float() if self.cfg.context else None, s)
        out["logits"] = self.classifier(feat)  # (B, 3), Eq. 19 before the softmax
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 3) sentiment logits (0 negative, 1 neutral, 2 positive)."""
        return self.explain(batch)["logits"]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy of Eq. 20."""
        ce = F.cross_entropy(self(batch), batch["label"].long())
        return {"loss": ce, "ce": ce.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """Adam, lr x0.1 every `lr_step` epochs (the scheduler is stepped once per epoch)."""
        cfg = self.cfg
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return [(opt, torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma))]
