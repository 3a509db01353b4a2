"""ITM: coarse-to-fine grained Image-Target Matching for targeted sentiment.

Yu, Wang, Xia, Li, "Targeted Multimodal Sentiment Classification based on Coarse-to-Fine Grained
Image-Target Matching", IJCAI 2022 (seeds/000). Equation numbers below are the paper's.

Differences from the paper, on purpose:
- RoBERTa is frozen and its token features of the contextualised target input (the sentence
  with `$T$`, paired with the target) are cached in the store; the paper fine-tunes RoBERTa.
  A trainable Linear maps the cached tokens to the model width, so the head can adapt them.
  The paper's learning rates (1e-5 main, 1e-6 auxiliary) were for fine-tuning; with a frozen
  encoder larger rates train better: sweep `lr` and `aux_lr`.
- Ablations (Table 6): `relevance=false` / `attention=false` drop the RE / ATT supervision;
  `coarse=false` removes the coarse module (no relevance score, so no RE supervision and no
  filter: the fine module reads H_V); `fine=false` removes the fine module (no alignment, so no
  ATT supervision): the image enters the fusion as the mean of the (filtered) regions instead.
- `input_norm` (default on): a LayerNorm after each input projection, W_R^T R and the token
  adapter, as in LXMERT / ViLBERT-style cross-modal encoders. The paper feeds the bare
  projections; region and token features from different extractors can differ in scale by an
  order of magnitude (the demo's: ~0.03 vs ~0.3), and the norm puts both modalities on one scale
  before the Transformer layers. `input_norm=false` is the paper's form.

The cross-modal layers are the shared `CrossAttentionBlock` (post-norm, BERT style, as in the
authors' released code). Shapes: B batch, K regions, L tokens, D = d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_iou

from lighthead.heads.attention import CrossAttentionBlock, TransformerBlock
from lighthead.heads.base import HEADS, Head


def alignment_target(boxes: torch.Tensor, target_box: torch.Tensor,
                     threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Fig. 3b: IoU of every region with the annotated box, zero at or below
    `threshold`, renormalised to sum to 1.

    boxes (B, K, 4), target_box (B, 4), both x1 y1 x2 y2 -> A (B, K) and nonzero (B,) bool.
    A row with no region above the threshold stays all-zero and is flagged False.
    """
    b, k = boxes.shape[:2]
    iou = box_iou(boxes.reshape(b * k, 4), target_box)  # (B * K, B): every region vs every target box
    iou = torch.diagonal(iou.view(b, k, b), dim1=0, dim2=2).T  # (B, K): each region vs its own box
    kept = torch.where(iou > threshold, iou, torch.zeros_like(iou))
    total = kept.sum(-1, keepdim=True)  # (B, 1)
    nonzero = total.squeeze(-1) > 0
    return kept / total.clamp_min(1e-12), nonzero


@dataclass
class ItmConfig:
    """ITM hyper-parameters; defaults are the paper's (Sec. 4, 5.1) where it gives them."""

    regions: str = "regions/butd-r101-vg-100"  # feature set of the region features and boxes
    text: str = "text/roberta-base"  # feature set of the frozen (sentence with $T$, target) token features
    d: int = 768  # model width (RoBERTa-base hidden size)
    heads: int = 12  # attention heads of every Transformer layer
    ff: int = 3072  # feed-forward width of every Transformer layer
    dropout: float = 0.1  # dropout inside the Transformer layers
    k: int = 100  # regions used: the first k of the store's (confidence order)
    lambda_re: float = 1.0  # lambda_1 of Eq. 10: relevance (RE) loss weight
    lambda_att: float = 0.5  # lambda_2 of Eq. 10: attention (ATT) loss weight
    iou_threshold: float = 0.5  # IoU at or below which a region gets no alignment mass
    relevance: bool = True  # RE supervision, Eq. 3 (Table 6 "w/o RE")
    attention: bool = True  # ATT supervision, Eq. 6 (Table 6 "w/o ATT")
    coarse: bool = True  # coarse-grained matching module, Eq. 1-4 (Table 6 "w/o Coarse")
    fine: bool = True  # fine-grained matching module, Eq. 5 (Table 6 "w/o Fine")
    lr: float = 1e-5  # AdamW learning rate of the main (sentiment) batches
    aux_lr: float = 1e-6  # AdamW learning rate of the auxiliary (ITM annotation) batches
    weight_decay: float = 0.01  # AdamW weight decay
    batch_size: int = 32  # samples per batch, main and auxiliary
    epochs: int = 10  # passes over the main (sentiment) training set
    aux_every: int = 1  # one auxiliary batch before every `aux_every` main batches (0: none)
    grad_clip: float = 0.0  # gradient-norm clipping (0 = off)
    aux_store: str = ""  # store holding the ITM annotations ("" = the training store's own records)
    input_norm: bool = True  # LayerNorm on the projected regions and tokens (off: the paper's bare Linear)

    RECORD_KIND: ClassVar[str] = "target"  # trains on (sentence, target, image) records
    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        # the bundled small encoder; the shapes' own boxes (the random-weight detector's ROIs carry too little)
        "demo": {"text": "text/all-minilm-l6-v2", "regions": "regions/butd-r101-vg-given", "d": 64, "heads": 4,
                 "ff": 128, "epochs": 15, "batch_size": 32, "lr": 1e-3, "aux_lr": 1e-3},
    }

    def __post_init__(self) -> None:
        for name in ("d", "heads", "ff", "k", "batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"itm: {name} must be >= 1, got {getattr(self, name)}")
        if self.d % self.heads:
            raise ValueError(f"itm: d={self.d} must be divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.iou_threshold < 1.0:
            raise ValueError("itm: dropout and iou_threshold must be in [0, 1)")
        if min(self.lambda_re, self.lambda_att, self.weight_decay) < 0 or min(self.lr, self.aux_lr) <= 0:
            raise ValueError("itm: need lambda_re, lambda_att, weight_decay >= 0 and lr, aux_lr > 0")
        if self.aux_every < 0 or self.grad_clip < 0:
            raise ValueError("itm: aux_every and grad_clip must be >= 0")
        if not self.regions.startswith("regions/") or not self.text.startswith("text/"):
            raise ValueError(f"itm: needs a regions/... and a text/... feature set, "
                             f"got {self.regions!r}, {self.text!r}")

    @property
    def num_regions(self) -> int:
        """Regions the task reads per image."""
        return self.k

    @property
    def use_relevance_loss(self) -> bool:
        """RE supervision needs the relevance score of the coarse module."""
        return self.relevance and self.coarse and self.lambda_re > 0

    @property
    def use_attention_loss(self) -> bool:
        """ATT supervision needs the alignment distribution of the fine module."""
        return self.attention and self.fine and self.lambda_att > 0


@HEADS.register("itm")
class Itm(Head):
    """Regions + boxes + cached RoBERTa tokens of (sentence with $T$, target) -> 3 logits,
    a relevance probability and an alignment distribution over the regions.

    Batches are "main" (sentiment loss) or "aux" (relevance + alignment losses), told apart
    by `batch["phase"]` ("main" when absent); each phase has its own AdamW, as in the paper.
    """

    task: ClassVar[str] = "sentiment"
    inputs: ClassVar[tuple[str, ...]] = ("regions", "boxes", "tokens", "text_mask", "label", "relevance",
                                          "target_box", "has_box")
    config_class: ClassVar[type] = ItmConfig

    def __init__(self, cfg: ItmConfig | None = None, region_dim: int = 2048, token_dim: int = 768):
        super().__init__()
        self.cfg = cfg = cfg or ItmConfig()
        d, heads, ff, dropout = cfg.d, cfg.heads, cfg.ff, cfg.dropout
        self.region_proj = nn.Linear(region_dim, d)  # W_R
        self.token_proj = nn.Linear(token_dim, d)  # adapter on the frozen RoBERTa output
        # LayerNorm after each input projection (`input_norm`), as in LXMERT / ViLBERT style
        # cross-modal encoders: puts both modalities on one scale whatever the feature extractor
        self.region_norm = nn.LayerNorm(d) if cfg.input_norm else nn.Identity()
        self.token_norm = nn.LayerNorm(d) if cfg.input_norm else nn.Identity()
        self.image_layer = TransformerBlock(d, heads, ff, dropout)  # H_V = Transformer(W_R^T R)
        if cfg.coarse:
            self.coarse_layer = CrossAttentionBlock(d, heads, ff, dropout)  # CM-Transformer of Eq. 1
            self.relevance_out = nn.Linear(d, 1)  # W_r, b_r (Eq. 2)
        if cfg.fine:
            self.fine_layer = CrossAttentionBlock(d, heads, ff, dropout)  # CM-Transformer of Eq. 5
            # no dropout on its attention weights: they are the alignment distribution D
            self.fine_layer.attn.dropout = 0.0
        self.fusion_layer = TransformerBlock(d, heads, ff, dropout)  # MM-Transformer (Eq. 7)
        self.classifier = nn.Linear(d, 3)  # W_T, b (Eq. 8)

    def explain(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Everything the head computes: "logits" (B, 3), "relevance" P(r) (B,) and its logit
        "relevance_logit" (P(r) = 1 without the coarse module), "align" D (B, K) (uniform over
        the real regions without the fine module)."""
        regions = batch["regions"][:, : self.cfg.k].float()  # (B, K, region_dim)
        mask = batch["text_mask"].bool()  # (B, L)
        rmask = batch.get("region_mask")  # (B, K) True on real regions (padded variable-K sets)
        if rmask is None:
            rmask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
        rmask = rmask[:, : self.cfg.k].bool()
        h_t = self.token_norm(self.token_proj(batch["tokens"].float()))  # (B, L, D)
        h_v = self.image_layer(self.region_norm(self.region_proj(regions)), rmask)  # (B, K, D)
        b, k = h_v.shape[:2]
        if self.cfg.coarse:
            h_v1, _ = self.coarse_layer(h_v, h_t, mask)  # H'_V (B, K, D), Eq. 1
            pooled = h_v1.masked_fill(~rmask[..., None], float("-inf")).max(1).values  # (B, D), real regions
            rel_logit = self.relevance_out(pooled).squeeze(-1)  # (B,)
            p_r = torch.sigmoid(rel_logit)  # (B,), Eq. 2
            h_v2 = p_r[:, None, None] * h_v1  # H''_V (B, K, D), Eq. 4
        else:
            p_r = torch.ones(b, dtype=h_v.dtype, device=h_v.device)
            rel_logit = torch.full_like(p_r, float("inf"))  # P(r) = 1: nothing is filtered
            h_v2 = h_v
        if self.cfg.fine:
            h_t1, align = self.fine_layer(h_t[:, :1], h_v2, rmask)  # H'_T (B, 1, D), D (B, 1, K), Eq. 5
            align = align.squeeze(1)  # (B, K)
        else:
            w = rmask.to(h_v.dtype) / rmask.sum(1, keepdim=True).clamp(min=1)  # (B, K), uniform on real regions
            h_t1 = (w[..., None] * h_v2).sum(1, keepdim=True)  # (B, 1, D)
            align = w
        h_m = torch.cat([h_t1, h_t], 1)  # (B, 1 + L, D), H_M = H'_T (+) H_T
        real = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], 1)  # (B, 1 + L)
        h = self.fusion_layer(h_m, real)  # (B, 1 + L, D), Eq. 7
        logits = self.classifier(h[:, 0])  # (B, 3), Eq. 8 before the softmax
        return {"logits": logits, "relevance": p_r, "relevance_logit": rel_logit, "align": align}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 3) sentiment logits (0 negative, 1 neutral, 2 positive)."""
        return self.explain(batch)["logits"]

    def alignment_target(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth alignment A (B, K) from the IoU with the annotated box, and which rows
        are usable (B,): related samples with a box and at least one region above the threshold."""
        boxes = batch["boxes"][:, : self.cfg.k].float()  # (B, K, 4)
        a, nonzero = alignment_target(boxes, batch["target_box"].float(), self.cfg.iou_threshold)
        return a, nonzero & batch["has_box"].bool()

    def aux_losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """L_RE (Eq. 3) over annotated samples and L_ATT = KL(A || D) (Eq. 6) over usable rows."""
        zero = out["logits"].sum() * 0.0  # keeps the graph when a batch has nothing to supervise
        rel = batch["relevance"].long()
        known = rel >= 0
        if self.cfg.use_relevance_loss and known.any():
            # from the logit: stable, and allowed under autocast (binary_cross_entropy is not)
            logit = out["relevance_logit"][known].float()
            l_re = F.binary_cross_entropy_with_logits(logit, rel[known].float())
        else:
            l_re = zero
        a, usable = self.alignment_target(batch)
        if self.cfg.use_attention_loss and usable.any():
            a, d = a[usable], out["align"][usable].float()
            l_att = (a * (a.clamp_min(1e-12).log() - d.clamp_min(1e-12).log())).sum(-1).mean()
        else:
            l_att = zero
        return {"re": l_re, "att": l_att}

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Main batches: L_TMSC (Eq. 9). Aux batches: lambda_1 L_RE + lambda_2 L_ATT (Eq. 10)."""
        out = self.explain(batch)
        if batch.get("phase", "main") == "aux":
            parts = self.aux_losses(out, batch)
            total = self.cfg.lambda_re * parts["re"] + self.cfg.lambda_att * parts["att"]
            return {"loss": total, "re": parts["re"].detach(), "att": parts["att"].detach()}
        ce = F.cross_entropy(out["logits"], batch["label"].long())
        return {"loss": ce, "ce": ce.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """[main AdamW, auxiliary AdamW]; `optimizer_index(batch)` says which one a batch steps."""
        cfg = self.cfg
        main = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        aux = torch.optim.AdamW(self.parameters(), lr=cfg.aux_lr, weight_decay=cfg.weight_decay)
        return [(main, None), (aux, None)]

    def optimizer_index(self, batch: dict[str, Any]) -> int:
        """Index into `optimizers()` of the one that steps on this batch (0 main, 1 aux)."""
        return 1 if batch.get("phase", "main") == "aux" else 0
