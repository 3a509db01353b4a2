"""MMCA: Multi-Modality Cross Attention for image-sentence matching.

Paper: Wei, Zhang, Li, Zhang, Wu, "Multi-Modality Cross Attention Network for Image and
Sentence Matching", CVPR 2020. Defaults are the paper's (Sec. 4.2, Tables 4-6).

Two branches (letters: B batch, K regions, L tokens, d model width, F conv filters):
- self-attention: regions (B, K, 2048) -> Linear -> Transformer unit -> mean -> L2 = i0;
  BERT tokens (B, L, 768) -> 1-d CNN (windows 1, 2, 3) -> max over positions -> Linear ->
  LayerNorm -> L2 = c0 (Eqs. 5-7).
- cross-attention: [projected regions; projected tokens] (B, K+L, d) -> one Transformer unit
  over the joint sequence -> split -> regions mean-pooled -> L2 = i1, tokens -> 1-d CNN ->
  max -> Linear -> LayerNorm -> L2 = c1 (Sec. 3.4).
- S(I, T) = i0.c0 + alpha * i1.c1, trained with the bidirectional hardest-negative triplet
  loss (Eq. 15).

The paper freezes BERT; we go one step further and cache its token features, so the text
side starts from stored (B, L, 768) tensors. The paper also does not say how the 768-d tokens
reach the d-wide joint sequence; a Linear(768, d) does it here.

i1 and c1 depend on the pair, so scoring n images x m captions runs the joint Transformer on
every pair. `score` encodes the pair-independent parts once (`encode_image`/`encode_text`),
then runs the joint unit over blocks of images x captions with the pairs flattened into the
batch dimension; the block size follows from a memory budget.

The first joint unit's input rows do not depend on the pair (region rows come from the image,
token rows from the caption), so in eval mode its query/key/value projections (about a third
of the per-pair work at the paper's sizes) are computed per image and per caption (in `score`,
once per block of each) and only gathered per pair (`pair_scores_fast`). Training keeps the plain forward
through the `nn.TransformerEncoderLayer`s (`cross_embed`, dropout included).

No released code is known (the authors published none; searches of public code for MMCA /
Wei et al. 2020 found only unrelated projects), so the paper is followed and every choice it
leaves open is listed:

| what | paper | released code | lighthead default | switch |
|---|---|---|---|---|
| widths, heads, filters | d 256 (Tables 4-5), 16 heads, 256 filters per window 1/2/3 | none | the same (`embed_dim=256` `heads=16` `filters=256` `windows=1,2,3`) | `embed_dim`, `heads`, `filters`, `windows` |
| training | Adam 2e-4, x0.1 after 10 epochs, 20 epochs, batch 64, margin 0.2, hardest negatives | none | the same (`lr=2e-4` `lr_decay_epochs=10` `epochs=20` `batch_size=64` `margin=0.2` `max_violation=true`) | `lr`, `lr_decay_epochs`, `epochs`, `batch_size`, `margin`, `max_violation` |
| negatives in a batch (Eq. 15) | the hardest x != I and y != T of the mini-batch (VSE++'s notation) | none | every other pair of the batch, a caption of a repeated image included, as VSE++'s code (`same_image_positive=false`; demo: true) | `same_image_positive=true` |
| alpha | 0.2 (best of Table 6) | none | `alpha=0.2` | `alpha` |
| FFN width | d (Eq. 4: W_1 is d x d) | none | d (`ffn_dim=256`) | `ffn_dim` |
| tokens into the joint sequence | Y = (R; E) stacks d-wide regions and 768-d BERT tokens; how E reaches d is not said | none | a Linear(768, d) on the tokens | - |
| regions in the joint sequence | R, the FC output | none | the self branch's FC, shared | - |
| number of regions k | bottom-up-attention regions, k not given | none | 36 (`regions=regions/butd-r101-vg-36`) | `regions` |
| BERT output | "the output E" of a frozen BERT-base | none | the last layer, cached, with the special tokens the extractor keeps (`text=text/bert-base-uncased`) | `text` |
| padding | not stated | none | padded keys masked in the units; windows past the end read zeros; max over real positions; means over real regions | - |
| dropout in the units | not stated | none | `dropout=0.1` | `dropout` |
| position or modality embeddings | none mentioned | none | none | - |
| c_0 normalisation | "a fully connected layer followed by L2 normalization", and Eq. 7's LayerNorm | none | Linear -> LayerNorm -> L2 | - |
| i_0, i_1 normalisation | unit norm (Sec. 3.5) | none | mean over regions -> L2 | - |
| cross branch's 1-d CNN | "quite similar" to the self branch's | none | its own weights, input width d, Linear -> LayerNorm -> L2 | - |
| loss reduction | Eq. 15 per pair; sum or mean over the batch not said | none | summed (VSE++'s code) | - |
| gradient clipping | not stated | none | norm 2, VSE++'s code (`grad_clip=2`) | `grad_clip` |
| initialisation, Adam betas, weight decay | not stated | none | PyTorch defaults, no decay | - |
| snapshot selection | "based on the validation set" | none | rsum on the first 1,000 validation images (`val_images=1000`) | `val_images` |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lighthead.heads.attention import masked_mean
from lighthead.heads.base import HEADS, DataInfo, RetrievalConfig, RetrievalHead, source
from lighthead.heads.losses import in_batch_positives, triplet_loss
from lighthead.heads.optim import step_lr


@dataclass
class MMCAConfig(RetrievalConfig):
    """MMCA head (Wei et al., CVPR 2020); defaults are the paper's values."""

    regions: str = source("regions", default="regions/butd-r101-vg-36")  # feature set of the region features (K = 36)
    text: str = source("tokens", default="text/bert-base-uncased")  # feature set of the frozen token features
    embed_dim: int = 256  # d: width of both branches; 256 is the paper's best (Tables 4-5)
    heads: int = 16  # attention heads of every Transformer unit
    ffn_dim: int | None = None  # feed-forward width; None = d (Eq. 4: W1 is d x d)
    layers: int = 1  # Transformer units per branch (the paper uses one)
    filters: int = 256  # 1-d conv filters per window size
    windows: tuple[int, ...] = (1, 2, 3)  # 1-d conv window sizes (uni-, bi-, tri-gram)
    dropout: float = 0.1  # dropout inside the Transformer units
    alpha: float = 0.2  # weight of the cross-attention score i1.c1 (Table 6)
    margin: float = 0.2  # triplet margin m (Eq. 15)
    max_violation: bool = True  # hardest negative only (Eq. 15); False sums over negatives
    # True: captions of one image in a batch are never each other's negatives (Eq. 15: every other item is)
    same_image_positive: bool = False
    lr: float = 2e-4  # Adam learning rate
    lr_decay_epochs: int = 10  # multiply the rate by 0.1 every this many epochs (0 = never)
    epochs: int = 20  # training epochs
    batch_size: int = 64  # pairs per training batch
    grad_clip: float = 2.0  # gradient norm clip (VSE++ practice; 0 = off)
    score_budget_mb: float = 1024.0  # memory for one block of pairs when scoring

    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU-sized for the demo store and its bundled MiniLM token features
        "demo": {
            "text": "text/all-minilm-l6-v2",
            "regions": "regions/butd-r101-vg-given",
            "embed_dim": 64,
            "heads": 4,
            "filters": 64,
            "batch_size": 32,
            "lr": 1e-3,
            "max_violation": False,
            "epochs": 6,
            "same_image_positive": True,
        },
    }

    def __post_init__(self) -> None:
        self.windows = tuple(int(w) for w in self.windows)
        if self.ffn_dim is None:
            self.ffn_dim = self.embed_dim
        for name in ("embed_dim", "heads", "ffn_dim", "layers", "filters"):
            if getattr(self, name) <= 0:
                raise ValueError(f"mmca: {name} must be positive, got {getattr(self, name)}")
        if self.embed_dim % self.heads:
            raise ValueError(f"mmca: embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        if not self.windows or min(self.windows) <= 0:
            raise ValueError(f"mmca: windows must be positive sizes, got {self.windows}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"mmca: dropout must be in [0, 1), got {self.dropout}")
        if self.alpha < 0 or self.margin < 0:
            raise ValueError("mmca: alpha and margin must be >= 0")
        if self.lr <= 0 or self.epochs <= 0 or self.batch_size <= 1 or self.lr_decay_epochs < 0:
            raise ValueError("mmca: need lr > 0, epochs > 0, lr_decay_epochs >= 0 and batch_size > 1")
        if not self.regions.startswith("regions/") or not self.text.startswith("text/"):
            raise ValueError(
                f"mmca: needs a regions/... and a text/... feature set, got {self.regions!r}, {self.text!r}"
            )
        if self.grad_clip < 0:
            raise ValueError(f"mmca: grad_clip must be >= 0, got {self.grad_clip}")
        if self.score_budget_mb <= 0:
            raise ValueError(f"mmca: score_budget_mb must be positive, got {self.score_budget_mb}")

    @classmethod
    def from_name(cls, name: str = "mmca", **overrides: Any) -> MMCAConfig:
        """Named variants: "mmca" (the paper), "mmca-self" (self-attention branch only, alpha 0)."""
        variants = {"mmca": {}, "mmca-self": {"alpha": 0.0}}
        if name not in variants:
            raise KeyError(f"unknown mmca variant {name!r}; known: {', '.join(variants)}")
        return cls(**{**variants[name], **overrides})


# ---- building blocks: the paper's Transformer unit, the masked region mean (Eq. 5), the all-pairs
# concatenation of the cross-modal pass, and the text CNN (Eqs. 6-7). Letters: B batch, K regions,
# L positions, d width.


def transformer_unit(d: int, heads: int, ffn: int, dropout: float) -> nn.TransformerEncoderLayer:
    """The paper's Transformer unit (Fig. 3): multi-head attention and a ReLU FFN, each
    followed by residual + LayerNorm (post-norm)."""
    return nn.TransformerEncoderLayer(
        d, heads, dim_feedforward=ffn, dropout=dropout, activation="relu", batch_first=True, norm_first=False
    )


def region_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real regions (Eq. 5): x (B, K, d), mask (B, K) -> (B, d)."""
    if bool(mask.all()):
        return x.mean(1)  # fixed K: no masked copy of x
    return masked_mean(x.masked_fill(~mask[..., None], 0.0), mask[..., None], dim=1)


def pair_cat(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """For every pair (i, j), a[i] followed by b[j] along `dim` (negative: counted from the end).

    a (n, ..., K, ...), b (m, ..., L, ...) -> (n*m, ..., K + L, ...), pair (i, j) at row i*m + j;
    the pairs are written once by the concatenation (the expands are views).
    """
    if dim >= 0:
        raise ValueError(f"pair_cat: dim must count from the end (negative), got {dim}")
    n, m = a.shape[0], b.shape[0]
    a = a.unsqueeze(1).expand(n, m, *a.shape[1:])  # (n, m, ..., K, ...)
    b = b.unsqueeze(0).expand(n, m, *b.shape[1:])  # (n, m, ..., L, ...)
    return torch.cat([a, b], dim=dim).flatten(0, 1)  # (n*m, ..., K + L, ...)


class TextCNN(nn.Module):
    """1-d convolutions over positions, max-pooled, then Linear -> LayerNorm -> L2 (Eqs. 6-7).

    A window of size w at position k reads e_k .. e_{k+w-1}; positions past the end read zeros,
    so every real position k = 1..n gives an output and the max runs over exactly those.
    """

    def __init__(self, in_dim: int, out_dim: int, filters: int, windows: tuple[int, ...]):
        super().__init__()
        self.windows = tuple(windows)
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, filters, w) for w in self.windows)
        self.fc = nn.Linear(filters * len(self.windows), out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, C), mask (B, L) True on real positions -> (B, out_dim), unit norm."""
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0).transpose(1, 2)  # (B, C, L)
        pooled = []
        for w, conv in zip(self.windows, self.convs):
            p = F.relu(conv(F.pad(x, (0, w - 1))))  # (B, F, L)
            # ReLU output is >= 0, so zeroing padded positions leaves the max over real ones.
            p = p.masked_fill(~mask.unsqueeze(1), 0.0)
            pooled.append(p.amax(dim=2))  # (B, F)
        q = torch.cat(pooled, dim=1)  # (B, F * n_windows)
        return F.normalize(self.norm(self.fc(q)), dim=-1)


@HEADS.register("mmca")
class MMCA(RetrievalHead):
    """Multi-Modality Cross Attention head (Wei et al., CVPR 2020). See the module docstring.

    `region_dim` and `token_dim` come from the data (the store's feature widths).
    """

    inputs = ("regions", "tokens", "text_mask", "image_index")
    config_class = MMCAConfig

    def __init__(self, cfg: MMCAConfig | None = None, region_dim: int = 2048, token_dim: int = 768):
        super().__init__()
        self.cfg = cfg = cfg or MMCAConfig()
        d, ffn = cfg.embed_dim, int(cfg.ffn_dim)
        # self-attention module
        self.region_proj = nn.Linear(region_dim, d)  # shared: R feeds both branches (Secs. 3.3-3.4)
        self.image_self = nn.ModuleList(transformer_unit(d, cfg.heads, ffn, cfg.dropout) for _ in range(cfg.layers))
        self.text_self = TextCNN(token_dim, d, cfg.filters, cfg.windows)
        # cross-attention module
        self.token_proj = nn.Linear(token_dim, d)
        self.cross = nn.ModuleList(transformer_unit(d, cfg.heads, ffn, cfg.dropout) for _ in range(cfg.layers))
        self.text_cross = TextCNN(d, d, cfg.filters, cfg.windows)

    @classmethod
    def from_config(cls, cfg: MMCAConfig, data: DataInfo) -> MMCA:
        """The region and token widths."""
        return cls(cfg, region_dim=data.region_dim or 2048, token_dim=data.token_dim or 768)

    # ---- pair-independent parts ---------------------------------------------------------
    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """regions (B, K, 2048) [+ region_mask (B, K)] -> {"i0": (B, d) unit norm,
        "regions": (B, K, d) projected, "region_mask": (B, K)}."""
        r = self.region_proj(batch["regions"].to(self.region_proj.weight.dtype))  # (B, K, d)
        rmask = batch.get("region_mask")
        rmask = torch.ones(r.shape[:2], dtype=torch.bool, device=r.device) if rmask is None else rmask.bool()
        h = r
        for unit in self.image_self:
            h = unit(h, src_key_padding_mask=~rmask)  # (B, K, d)
        return {"i0": F.normalize(region_mean(h, rmask), dim=-1), "regions": r, "region_mask": rmask}

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """tokens (B, L, 768), text_mask (B, L) -> {"c0": (B, d), "tokens": (B, L, d), "mask": (B, L)}."""
        e = batch["tokens"].to(self.token_proj.weight.dtype)  # the store keeps float16
        mask = batch["text_mask"].bool()
        return {"c0": self.text_self(e, mask), "tokens": self.token_proj(e), "mask": mask}

    # ---- pair-dependent part ------------------------------------------------------------
    def cross_embed(
        self, regions: torch.Tensor, region_mask: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint Transformer over paired sequences (Eqs. 8-14), then the two poolings.

        regions (P, K, d), region_mask (P, K), tokens (P, L, d), mask (P, L) -> i1, c1 (P, d),
        unit norm.
        """
        k = regions.shape[1]
        y = torch.cat([regions, tokens], dim=1)  # (P, K + L, d)
        pad = ~torch.cat([region_mask, mask], dim=1)  # (P, K + L), True = ignore as key
        for unit in self.cross:
            y = unit(y, src_key_padding_mask=pad)  # (P, K + L, d)
        i1 = F.normalize(region_mean(y[:, :k], region_mask), dim=-1)  # (P, d)
        c1 = self.text_cross(y[:, k:], mask)  # (P, d)
        return i1, c1

    def pair_scores(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """i1.c1 for every image x caption of two blocks -> (n, m).

        Training runs the plain joint unit (`pair_scores_plain`: dropout, the reference
        forward); eval mode the same function with the first unit's projections shared
        between pairs (`pair_scores_fast`).
        """
        if self.training:
            return self.pair_scores_plain(img, txt)
        return self.pair_scores_fast(img, txt)

    def pair_scores_plain(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """i1.c1 through `cross_embed` on every pair; pairs flatten into the batch -> (n, m)."""
        r, rmask, t, mask = img["regions"], img["region_mask"], txt["tokens"], txt["mask"]
        n, m = r.shape[0], t.shape[0]
        length = int(mask.sum(dim=1).max().clamp(min=1))  # padding no caption of the block uses
        t, mask = t[:, :length], mask[:, :length]
        r_pairs = r.unsqueeze(1).expand(n, m, *r.shape[1:]).reshape(n * m, *r.shape[1:])  # (n*m, K, d)
        rm_pairs = rmask.unsqueeze(1).expand(n, m, rmask.shape[1]).reshape(n * m, -1)  # (n*m, K)
        t_pairs = t.unsqueeze(0).expand(n, *t.shape).reshape(n * m, *t.shape[1:])  # (n*m, L, d)
        m_pairs = mask.unsqueeze(0).expand(n, *mask.shape).reshape(n * m, length)  # (n*m, L)
        i1, c1 = self.cross_embed(r_pairs, rm_pairs, t_pairs, m_pairs)
        return (i1 * c1).sum(dim=-1).view(n, m)  # (n, m)

    def first_unit_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """The first joint unit's query/key/value rows: x (B, R, d) -> (B, R, 3d), [q; k; v].

        Row-wise, so the rows of one image (or caption) serve every pair it is part of.
        """
        attn = self.cross[0].self_attn
        return F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # (B, R, 3d), as nn.MultiheadAttention

    def first_unit_from_qkv(
        self, r: torch.Tensor, t: torch.Tensor, qkv_r: torch.Tensor, qkv_t: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """The first joint unit (post-norm, eval mode: no dropout) on every pair, from per-image
        and per-caption projections.

        r (n, K, d) and t (m, L, d): the unit's input rows; qkv_r (n, K, 3d) and qkv_t (m, L, 3d)
        from `first_unit_qkv`; keep (n*m, K + L) True on real rows (pairs ordered as `pair_cat`)
        -> (n*m, K + L, d), in float32 when the products are in a 16-bit type (autocast).
        """
        unit = self.cross[0]
        if unit.norm_first:
            raise ValueError("mmca: the shared-projection path computes a post-norm unit")
        n, k, d = r.shape
        m, length = t.shape[:2]
        heads = unit.self_attn.num_heads
        qkv = pair_cat(qkv_r, qkv_t, dim=-2)  # (P, S, 3d), S = K + L
        qkv = qkv.view(-1, k + length, 3, heads, d // heads)  # (P, S, 3, h, d/h)
        # (P, h, S, d/h) views in row-major memory: SDPA takes the strides and writes its
        # output rows with the heads side by side, so merging the heads below is free
        q, key, value = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (P, h, S, d/h) each
        # key padding as SDPA's boolean mask (True = attend); none when every row is real
        mask = None if bool(keep.all()) else keep[:, None, None, :]  # (P, 1, 1, S)
        o = F.scaled_dot_product_attention(q, key, value, attn_mask=mask)  # (P, h, S, d/h)
        o = o.transpose(1, 2).reshape(n, m, k + length, d)  # (n, m, S, d): heads side by side
        o = F.linear(o, unit.self_attn.out_proj.weight, unit.self_attn.out_proj.bias)  # (n, m, S, d)
        # Residual stream and LayerNorms in float32 (under bf16 autocast only the products are
        # bf16). The residual adds the unit's input rows broadcast over the pairs, which are
        # never built per pair.
        y = o.float() if o.dtype in (torch.bfloat16, torch.float16) else o  # (n, m, S, d)
        y[:, :, :k] += r[:, None]
        y[:, :, k:] += t[None]
        y = unit.norm1(y.flatten(0, 1))  # (P, S, d)
        ff = unit.linear2(unit.activation(unit.linear1(y)))  # (P, S, d)
        return unit.norm2(y + ff)  # (P, S, d)

    def pair_scores_fast(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """`pair_scores_plain` in eval mode (no dropout) with the first unit's projections
        computed per image and per caption -> (n, m) float32.

        img/txt may carry that projection as "qkv" (from `first_unit_qkv`; the caption's may be
        longer than the block's longest caption); otherwise it is computed here.
        """
        r, rmask, t, mask = img["regions"], img["region_mask"], txt["tokens"], txt["mask"]
        n, m, k = r.shape[0], t.shape[0], r.shape[1]
        length = int(mask.sum(dim=1).max().clamp(min=1))  # padding no caption of the block uses
        t, mask = t[:, :length], mask[:, :length]
        qkv_r = img["qkv"] if "qkv" in img else self.first_unit_qkv(r)  # (n, K, 3d)
        qkv_t = txt["qkv"][:, :length] if "qkv" in txt else self.first_unit_qkv(t)  # (m, L, 3d)
        keep = pair_cat(rmask, mask, dim=-1)  # (P, S): True on real regions and tokens
        y = self.first_unit_from_qkv(r, t, qkv_r, qkv_t, keep)  # (P, S, d)
        for unit in self.cross[1:]:  # later units see pair-dependent rows: the plain modules
            y = unit(y, src_key_padding_mask=~keep)  # (P, S, d)
        # the poolings of `cross_embed`
        i1 = F.normalize(region_mean(y[:, :k], keep[:, :k]), dim=-1)  # (P, d)
        c1 = self.text_cross(y[:, k:], keep[:, k:])  # (P, d)
        return (i1 * c1).sum(dim=-1).float().view(n, m)  # (n, m)

    def pair_bytes(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> int:
        """Rough float32 working memory of one pair in the joint unit (for block sizing)."""
        return self._pair_bytes(img["regions"].shape[1], int(txt["mask"].sum(dim=1).max().clamp(min=1)))

    def _pair_bytes(self, k: int, length: int) -> int:
        s = k + length  # joint sequence length
        d, ffn = self.cfg.embed_dim, int(self.cfg.ffn_dim)
        per_layer = s * (8 * d + 2 * ffn) + self.cfg.heads * s * s  # qkv, outputs, norms, FFN, attention
        conv = length * self.cfg.filters * len(self.cfg.windows) * 2
        return 4 * (per_layer + conv)

    def block_shape(self, n: int, m: int, k: int, length: int, budget_mb: float) -> tuple[int, int]:
        """(images, captions) per block so that one block fits in `budget_mb`."""
        pairs = max(1, int(budget_mb * 2**20) // max(1, self._pair_bytes(k, length)))
        cap_block = min(m, pairs)
        img_block = min(n, max(1, pairs // cap_block))
        return img_block, cap_block

    def score(
        self,
        image_enc: dict[str, torch.Tensor],
        text_enc: dict[str, torch.Tensor],
        budget_mb: float | None = None,
    ) -> torch.Tensor:
        """S = i0.c0 + alpha * i1.c1 for every image x caption -> (n_images, n_texts).

        The joint unit runs on this module's device over blocks of images x captions sized by
        `budget_mb` (default: the config's `score_budget_mb`); the result is on the device of
        `image_enc["i0"]`.
        """
        out_device = image_enc["i0"].device
        dev = next(self.parameters()).device
        i0, c0 = image_enc["i0"].to(dev), text_enc["c0"].to(dev)
        scores = (i0 @ c0.t()).float()  # (n, m); float32 also under bf16 autocast
        alpha = self.cfg.alpha
        if alpha == 0:
            return scores.to(out_device)
        regions, rmask = image_enc["regions"], image_enc["region_mask"]
        tokens, mask = text_enc["tokens"], text_enc["mask"]
        n, m, k = regions.shape[0], tokens.shape[0], regions.shape[1]
        lengths = mask.sum(dim=1)
        nb, mb = self.block_shape(n, m, k, int(lengths.max().clamp(min=1)), budget_mb or self.cfg.score_budget_mb)
        order = torch.argsort(lengths)  # captions of similar length share a block: less padding
        shared = not self.training  # eval: first-unit projections per image / caption (`pair_scores_fast`)
        # Captions outside: a caption block's projections serve all image blocks, and caption
        # blocks are the large side of `block_shape`, so recomputing image rows costs little.
        for b in range(0, m, mb):
            cols = order[b : b + mb]
            length = int(lengths[cols].max().clamp(min=1))  # the block's padding is cut before projecting
            txt = {"tokens": tokens[cols, :length].to(dev), "mask": mask[cols, :length].to(dev)}
            if shared:
                txt["qkv"] = self.first_unit_qkv(txt["tokens"])  # (mb, L, 3d)
            for a in range(0, n, nb):
                img = {"regions": regions[a : a + nb].to(dev), "region_mask": rmask[a : a + nb].to(dev)}
                if shared:
                    img["qkv"] = self.first_unit_qkv(img["regions"])  # (nb, K, 3d)
                scores[a : a + nb, cols.to(dev)] += alpha * self.pair_scores(img, txt)
        return scores.to(out_device)

    # ---- training -------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Bidirectional hinge triplet on the full in-batch score matrix (Eq. 15)."""
        img, txt = self.encode_image(batch), self.encode_text(batch)
        scores = img["i0"] @ txt["c0"].t()  # (B, B): row b's caption matches image b
        if self.cfg.alpha:
            scores = scores + self.cfg.alpha * self.pair_scores(img, txt)
        positives = in_batch_positives(batch, self.cfg.same_image_positive)  # None: every other item (Eq. 15)
        loss = triplet_loss(scores, positives, margin=self.cfg.margin, hardest=self.cfg.max_violation)
        return {"loss": loss, "triplet": loss.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """Adam at `lr`, x0.1 after `lr_decay_epochs` epochs (the loop steps it once per epoch)."""
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        return [(opt, step_lr(opt, self.cfg.lr_decay_epochs))]
