"""Attention blocks shared by the heads.

1. Stacked cross attention between regions and words (SCAN, Lee et al. ECCV 2018; CASC,
   Xu et al. TNNLS 2020, Eq. 3-7 and 10), computed for every (image, caption) pair of two
   blocks at once, with the options of SCAN's released code (`XAttn`). Letters: I images,
   T captions, K regions, L words, D width.

   With unit-norm regions v_k and words t_l, s_kl = v_k . t_l is their cosine (Eq. 3).
   Before each softmax the cosines may be normalised along the *other* axis (SCAN's
   `raw_feature_norm`: clipped_l2norm = LeakyReLU(0.1) then L2 norm, l2norm, softmax,
   clipped = LeakyReLU(0.1) alone, no_norm); call the result n_kl.
   T2I: every word attends over the regions: alpha'_kl = softmax_k(lambda_t2i n_kl) with n
   normalised over the words, a_l = sum_k alpha'_kl v_k, r_l = cos(t_l, a_l).
   I2T: every region attends over the words: alpha_kl = softmax_l(lambda_i2t n_kl) with n
   normalised over the regions, a_k = sum_l alpha_kl t_l, r_k = cos(v_k, a_k).
   Each direction's score aggregates its r: the mean, or LogSumExp
   (1 / lambda_lse) log sum exp(lambda_lse r).
   The attended vectors are never built: v_k . a_k = sum_l alpha_kl s_kl, and
   |a_k|^2 = alpha_k G_t alpha_k^T with the word Gram matrix G_t = T T^T (L x L), so a block
   of pairs costs one GEMM for the cosines plus O(I T K L (L + K)) instead of O(I T K L D),
   and memory stays at a few (I, K, T, L) tensors. A cosine does not change when alpha_k is
   scaled, so the softmax normaliser is never applied: exp(lambda n) is used as it is.

2. A Transformer block (`nn.TransformerEncoderLayer`) and a cross-attention block
   (`nn.MultiheadAttention`, queries from one modality, keys/values from the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8
NORMS = ("clipped_l2norm", "l2norm", "softmax", "clipped", "no_norm")  # SCAN's raw_feature_norm values
AGGREGATIONS = ("mean", "lse")  # SCAN's agg_func Mean / LogSumExp
DIRECTIONS = ("t2i", "i2t")


@dataclass(frozen=True)
class XAttn:
    """Options of the stacked cross attention (SCAN's released code; defaults: its t-i LSE row)."""

    lambda_t2i: float = 9.0  # softmax temperature when each word attends over the regions
    lambda_i2t: float = 4.0  # softmax temperature when each region attends over the words
    norm: str = "clipped_l2norm"  # normalisation of the cosines before the softmax (one of NORMS)
    agg_t2i: str = "lse"  # per-word cosines -> T2I score: "mean" or "lse"
    agg_i2t: str = "lse"  # per-region cosines -> I2T score: "mean" or "lse"
    lse_t2i: float = 6.0  # LogSumExp temperature of the T2I aggregation
    lse_i2t: float = 5.0  # LogSumExp temperature of the I2T aggregation
    directions: tuple[str, ...] = DIRECTIONS  # the scores to compute

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"attention norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        for agg in (self.agg_t2i, self.agg_i2t):
            if agg not in AGGREGATIONS:
                raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {agg!r}")
        if not set(self.directions) <= set(DIRECTIONS):
            raise ValueError(f"directions must be among {', '.join(DIRECTIONS)}, got {self.directions!r}")
        if min(self.lambda_t2i, self.lambda_i2t, self.lse_t2i, self.lse_i2t) <= 0:
            raise ValueError("softmax and LogSumExp temperatures must be > 0")


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = EPS) -> torch.Tensor:
    """x / ||x|| along `dim` (zero vectors stay zero)."""
    return x / x.norm(dim=dim, keepdim=True).clamp(min=eps)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int, full: bool | None = None) -> torch.Tensor:
    """Mean of `x` over `dim` where `mask` (broadcastable to x) is True. full: whether mask is
    all True, when the caller knows (None: asked here, a host sync on a GPU)."""
    if mask.shape[dim] == x.shape[dim] and (bool(mask.all()) if full is None else full):
        return x.mean(dim)  # no padding: skip the masked product (the common fixed-K case)
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def aggregate(
    r: torch.Tensor, mask: torch.Tensor, agg: str, lam: float, dim: int, full: bool | None = None
) -> torch.Tensor:
    """Per-item cosines `r` -> one score over `dim` (real items where `mask`, broadcastable):
    "mean", or "lse" = (1 / lam) log sum exp(lam r) (a sum, not a mean, as SCAN's code).
    full: whether mask is all True, when the caller knows (see `masked_mean`)."""
    if agg == "mean":
        return masked_mean(r, mask, dim, full)
    if agg != "lse":
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {agg!r}")
    x = r * lam
    if not (bool(mask.all()) if full is None else full):
        x = x.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(x, dim) / lam


def raw_norm(s: torch.Tensor, mask: torch.Tensor, norm: str, dim: int) -> torch.Tensor:
    """SCAN's `raw_feature_norm` of region-word cosines along `dim` (the axis the following
    softmax does not run over); padded entries (mask False, broadcastable) take no part."""
    if norm == "no_norm":
        return s
    if norm == "softmax":  # |s| <= 1 (cosines): exp needs no shift
        e = s.exp() * mask.to(s.dtype)
        return e / e.sum(dim, keepdim=True).clamp(min=EPS)
    if norm in ("clipped", "clipped_l2norm"):
        s = F.leaky_relu(s, 0.1)
    if norm in ("l2norm", "clipped_l2norm"):
        s = s * mask.to(s.dtype)
        s = s / (s.norm(dim=dim, keepdim=True) + EPS)  # + eps as SCAN's l2norm (one-word captions: s / |s|)
    elif norm != "clipped":
        raise ValueError(f"attention norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return s


SHIFT_FREE_LAMBDA = 20.0  # up to here exp(lambda * s) of cosines stays well inside float32


def _exp_weights(s: torch.Tensor, lam: float, mask: torch.Tensor, dim: int, full: bool | None = None) -> torch.Tensor:
    """Softmax weights over `dim` up to a positive factor per row: exp(lambda s), masked.

    The cosines and the normalised weights below are invariant to that factor, so the softmax
    normaliser is never applied to the whole tensor. With |s| <= 1 (unit vectors, and every
    normalisation of NORMS) and lambda <= 20, exp(lambda s) and its square stay far from
    float32's limits; larger lambdas subtract the row maximum (over real entries) first.
    full: whether mask is all True, when the caller knows (None: asked here).
    """
    full = bool(mask.all()) if full is None else full
    if lam <= SHIFT_FREE_LAMBDA:
        e = torch.mul(s, lam).exp_()
    else:  # shift by the largest real entry (a padded 0 above every real cosine would underflow them)
        top = (s if full else s.masked_fill(~mask, float("-inf"))).amax(dim, keepdim=True)
        e = torch.mul(s, lam).sub_(lam * top).exp_()
    return e if full else e * mask


def _attention_weights(
    s: torch.Tensor,
    lam: float,
    norm: str,
    norm_dim: int,
    norm_mask: torch.Tensor,
    soft_dim: int,
    soft_mask: torch.Tensor,
    soft_full: bool | None = None,
) -> torch.Tensor:
    """exp(lam n) masked along the softmax axis `soft_dim`, n = raw_norm(s) along `norm_dim`.

    Padded regions and words are zero vectors (the heads zero them), so their cosines are 0
    and add nothing to an L2 norm: only the softmax normalisation needs `norm_mask`. For the
    L2 variants the scale 1 / (|c| + eps) is folded into the exponent (one pass fewer).
    soft_full: whether soft_mask is all True, when the caller knows (None: asked here).
    """
    if soft_full is None:
        soft_full = bool(soft_mask.all())
    if norm in ("l2norm", "clipped_l2norm") and lam <= SHIFT_FREE_LAMBDA:
        c = F.leaky_relu(s, 0.1) if norm == "clipped_l2norm" else s
        # A sum of squares (torch's vector norm over a strided axis is many times slower), kept
        # off 0 so that padded columns (all zero) get zero gradients, not NaN.
        scale = lam / ((c * c).sum(norm_dim, keepdim=True).clamp(min=EPS * EPS).sqrt() + EPS)
        e = torch.mul(c, scale).exp_() if c is s or c.requires_grad else c.mul_(scale).exp_()
        return e if soft_full else e * soft_mask
    return _exp_weights(raw_norm(s, norm_mask, norm, norm_dim), lam, soft_mask, soft_dim, soft_full)


def _xattn_core(
    s: torch.Tensor,
    v_mask: torch.Tensor,
    t_mask: torch.Tensor,
    gram_v: torch.Tensor,
    words_gram: Callable[[torch.Tensor], torch.Tensor],
    opts: XAttn,
    weights: tuple[str, ...],
    full: tuple[bool, bool] | None = None,
) -> dict[str, torch.Tensor]:
    """The attention directions from float32 region-word cosines in the layout (N, K, M, L).

    All pairs: N = I images, M = T captions; given pairs: N = B, M = 1. v_mask (N, K, 1, 1) and
    t_mask (N | 1, 1, M, L) bool; gram_v (N, K, K); words_gram(x) contracts x (N, K, M, L) with
    each caption's word Gram matrix over L. Returns (N, M) "t2i" / "i2t" (those of
    opts.directions, plus the one a weight needs) and, for the names in `weights`,
    "region_weights" (N, M, K) (from T2I) and "word_weights" (N, M, L) (from I2T).
    full: (every region real, every word real) when the caller knows it on the host; None:
    asked of the masks (each question waits for the device on a GPU).
    """
    n, k, m, l = s.shape
    regions_full, words_full = (None, None) if full is None else full
    words_mask = t_mask.squeeze(1)  # (N | 1, M, L)
    regions_mask = v_mask.squeeze(-1)  # (N, K, 1)
    out = {}
    with torch.autocast(s.device.type, enabled=False):  # the small Gram products stay float32
        if "t2i" in opts.directions or "region" in weights:
            # T2I: every word attends over the regions (axis 1); cosines normalised over the words.
            e = _attention_weights(s, opts.lambda_t2i, opts.norm, 3, t_mask, 1, v_mask, regions_full)  # (N, K, M, L)
            dot = (e * s).sum(1)  # (N, M, L): z_l (t_l . a_l), z_l the softmax normaliser
            ge = torch.bmm(gram_v, e.view(n, k, m * l)).view(n, k, m, l)  # (N, K, M, L)
            norm2 = (ge * e).sum(1)  # (N, M, L): z_l^2 |a_l|^2
            r = dot / norm2.clamp(min=EPS * EPS).sqrt()  # (N, M, L): cos(t_l, a_l)
            out["t2i"] = aggregate(r, words_mask, opts.agg_t2i, opts.lse_t2i, -1, words_full)  # (N, M)
            if "region" in weights:  # mean over the real words of alpha' = e / z_l
                per_word = words_mask / words_mask.sum(-1, keepdim=True).clamp(min=1) / e.sum(1)  # (N, M, L)
                out["region_weights"] = (e * per_word[:, None]).sum(3).transpose(1, 2)  # (N, M, K)

        if "i2t" in opts.directions or "word" in weights:
            # I2T: every region attends over the words (axis 3); cosines normalised over the regions.
            e_w = _attention_weights(s, opts.lambda_i2t, opts.norm, 1, v_mask, 3, t_mask, words_full)  # (N, K, M, L)
            dot_w = (e_w * s).sum(3)  # (N, K, M)
            norm2_w = (words_gram(e_w) * e_w).sum(3)  # (N, K, M)
            r_w = dot_w / norm2_w.clamp(min=EPS * EPS).sqrt()  # (N, K, M): cos(v_k, a_k)
            out["i2t"] = aggregate(r_w, regions_mask, opts.agg_i2t, opts.lse_i2t, 1, regions_full)  # (N, M)
            if "word" in weights:  # mean over the real regions of alpha = e_w / z_k
                per_region = regions_mask / regions_mask.sum(1, keepdim=True).clamp(min=1) / e_w.sum(3)  # (N, K, M)
                out["word_weights"] = (e_w * per_region[..., None]).sum(1)  # (N, M, L)
    return out


def xattn_all_pairs(
    v: torch.Tensor,
    v_mask: torch.Tensor,
    t: torch.Tensor,
    t_mask: torch.Tensor,
    opts: XAttn = XAttn(),
    weights: tuple[str, ...] = (),
    gram_v: torch.Tensor | None = None,
    gram_t: torch.Tensor | None = None,
    full: tuple[bool, bool] | None = None,
) -> dict[str, torch.Tensor]:
    """Cross attention for every pair of I images and T captions.

    v: (I, K, D) unit-norm regions, v_mask (I, K); t: (T, L, D) unit-norm words, t_mask (T, L);
    padded regions and words must be zero vectors (the heads' encoders zero them);
    gram_v (I, K, K) = v v^T and gram_t (T, L, L) = t t^T when the encoders cached them.
    Returns "t2i", "i2t" (I, T) (see `_xattn_core`) and, for the names in `weights` ("region",
    "word"), "region_weights" (I, T, K) and "word_weights" (I, T, L). Products run in the
    autocast dtype when one is active (bf16 scoring); everything after them runs in float32.
    full: (v_mask all True, t_mask all True) when the caller knows it (see `_xattn_core`).
    """
    n_i, k, d = v.shape
    n_t, l, _ = t.shape
    # One GEMM for every region-word cosine of the block, kept in its natural layout.
    s = (v.reshape(n_i * k, d) @ t.reshape(n_t * l, d).T).float().view(n_i, k, n_t, l)  # (I, K, T, L)
    gram_v = (v @ v.transpose(1, 2) if gram_v is None else gram_v).float()  # (I, K, K)

    def words_gram(x: torch.Tensor) -> torch.Tensor:
        g = (t @ t.transpose(1, 2) if gram_t is None else gram_t).float()  # (T, L, L)
        # per caption: (I*K, L) x (L, L); one copy to put the caption axis first
        xt = x.permute(2, 0, 1, 3).reshape(n_t, n_i * k, l)  # (T, I*K, L)
        return torch.bmm(xt, g).view(n_t, n_i, k, l).permute(1, 2, 0, 3)  # (I, K, T, L)

    return _xattn_core(s, v_mask[:, :, None, None], t_mask[None, None], gram_v, words_gram, opts, weights, full)


def xattn_paired(
    v: torch.Tensor,
    v_mask: torch.Tensor,
    t: torch.Tensor,
    t_mask: torch.Tensor,
    opts: XAttn = XAttn(),
    weights: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Cross attention of B given pairs (image b with caption b): outputs of shape (B,) / (B, K|L).
    Inputs as `xattn_all_pairs` (padded items zero vectors)."""
    b, k, _ = v.shape
    l = t.shape[1]
    s = (v @ t.transpose(1, 2)).float().view(b, k, 1, l)  # (B, K, 1, L)
    gram_v = (v @ v.transpose(1, 2)).float()  # (B, K, K)

    def words_gram(x: torch.Tensor) -> torch.Tensor:
        gram_t = (t @ t.transpose(1, 2)).float()  # (B, L, L)
        return torch.bmm(x.view(b, k, l), gram_t).view(b, k, 1, l)  # (B, K, 1, L)

    out = _xattn_core(s, v_mask[:, :, None, None], t_mask[:, None, None], gram_v, words_gram, opts, weights)
    return {name: x.squeeze(1) for name, x in out.items()}  # (B,) / (B, K) / (B, L)


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}  # feed-forward activations (GELU: the exact erf form)


class TransformerBlock(nn.Module):
    """One pre-built Transformer encoder layer over a padded sequence (batch first).

    forward(x (B, N, D), mask (B, N) bool True on real items) -> (B, N, D).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ff_dim: int | None = None,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
    ):
        super().__init__()
        # activation: "relu" (the original Transformer) or "gelu" (BERT's exact, erf form)
        self.layer = nn.TransformerEncoderLayer(
            dim, heads, ff_dim or 4 * dim, dropout, activation=activation, batch_first=True, norm_first=norm_first
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if mask is None else ~mask
        return self.layer(x, src_key_padding_mask=pad)


class CrossAttentionBlock(nn.Module):
    """Queries of one modality attend to keys/values of the other, with residual + norm + FFN.

    forward(q (B, Nq, D), kv (B, Nk, D), kv_mask (B, Nk) True on real items) ->
    (out (B, Nq, D), attention averaged over heads (B, Nq, Nk)).
    """

    def __init__(self, dim: int, heads: int, ff_dim: int | None = None, dropout: float = 0.1, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_dim or 4 * dim),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(ff_dim or 4 * dim, dim),
        )
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pad = None if kv_mask is None else ~kv_mask
        attended, weights = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
        x = self.norm1(q + self.drop(attended))
        x = self.norm2(x + self.drop(self.ff(x)))
        return x, weights
