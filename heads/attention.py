"""Attention blocks shared by the heads.

1. Stacked cross attention between regions and words (SCAN, Lee et al. ECCV 2018; CASC,
   Xu et al. TNNLS 2020, Eq. 3-7 and 10), computed for every (image, caption) pair of two
   blocks at once. Letters: I images, T captions, K regions, L words, D width.

   With unit-norm regions v_k and words t_l, s_kl = v_k . t_l is their cosine (Eq. 3).
   I2T (Eq. 4-5): alpha_kl = softmax_l(lambda1 s_kl), a_k = sum_l alpha_kl t_l, score
   mean_k cos(v_k, a_k). T2I (Eq. 6-7): alpha'_kl = softmax_k(lambda2 s_kl),
   a_l = sum_k alpha'_kl v_k, score mean_l cos(t_l, a_l).
   The attended vectors are never built: v_k . a_k = sum_l alpha_kl s_kl, and
   |a_k|^2 = alpha_k G_t alpha_k^T with the word Gram matrix G_t = T T^T (L x L), so a block
   of pairs costs one GEMM for the cosines plus O(I T K L (L + K)) instead of O(I T K L D),
   and memory stays at a few (I, K, T, L) tensors. A cosine does not change when alpha_k is
   scaled, so the softmax normaliser is never applied: exp(lambda s) is used as it is.

2. A Transformer block (`nn.TransformerEncoderLayer`) and a cross-attention block
   (`nn.MultiheadAttention`, queries from one modality, keys/values from the other).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = EPS) -> torch.Tensor:
    """x / ||x|| along `dim` (zero vectors stay zero)."""
    return x / x.norm(dim=dim, keepdim=True).clamp(min=eps)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of `x` over `dim` where `mask` (broadcastable to x) is True."""
    if mask.shape[dim] == x.shape[dim] and bool(mask.all()):
        return x.mean(dim)  # no padding: skip the masked product (the common fixed-K case)
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def _clipped_l2(s: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """SCAN's "clipped_l2norm" of the raw similarities: LeakyReLU(0.1), then L2 over `dim`."""
    s = F.leaky_relu(s, 0.1) * mask.to(s.dtype)
    return s / s.norm(dim=dim, keepdim=True).clamp(min=EPS)


SHIFT_FREE_LAMBDA = 20.0  # up to here exp(lambda * s) of cosines stays well inside float32


def _exp_weights(s: torch.Tensor, lam: float, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax weights over `dim` up to a positive factor per row: exp(lambda s), masked.

    The cosines and the normalised weights below are invariant to that factor, so the softmax
    normaliser is never applied to the whole tensor. With |s| <= 1 (unit vectors, or SCAN's
    clipped normalisation) and lambda <= 20, exp(lambda s) and its square stay far from float32's
    limits; larger lambdas subtract the row maximum (over real entries) first.
    """
    full = bool(mask.all())
    if lam <= SHIFT_FREE_LAMBDA:
        e = torch.mul(s, lam).exp_()
    else:  # shift by the largest real entry (a padded 0 above every real cosine would underflow them)
        top = (s if full else s.masked_fill(~mask, float("-inf"))).amax(dim, keepdim=True)
        e = torch.mul(s, lam).sub_(lam * top).exp_()
    return e if full else e * mask.to(e.dtype)


def _xattn_core(s: torch.Tensor, v_mask: torch.Tensor, t_mask: torch.Tensor, gram_v: torch.Tensor,
                words_gram: Callable[[torch.Tensor], torch.Tensor], lambda_i2t: float, lambda_t2i: float,
                attn_norm: str, weights: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Both attention directions from float32 region-word cosines in the layout (N, K, M, L).

    All pairs: N = I images, M = T captions; given pairs: N = B, M = 1. v_mask (N, K, 1, 1) and
    t_mask (N | 1, 1, M, L) bool; gram_v (N, K, K); words_gram(x) contracts x (N, K, M, L) with
    each caption's word Gram matrix over L. Returns (N, M) "i2t" / "t2i" and, for the names in
    `weights`, "region_weights" (N, M, K) and "word_weights" (N, M, L).
    """
    n, k, m, l = s.shape
    if attn_norm == "none":
        s_i2t = s_t2i = s
    elif attn_norm == "clipped_l2":
        pair_mask = v_mask & t_mask  # (N, K, M, L)
        s_i2t = _clipped_l2(s, pair_mask, dim=1)  # each word normalised over regions
        s_t2i = _clipped_l2(s, pair_mask, dim=3)  # each region normalised over words
    else:
        raise ValueError(f"attn_norm must be 'none' or 'clipped_l2', got {attn_norm!r}")
    words_mask = t_mask.squeeze(1)  # (N | 1, M, L)
    regions_mask = v_mask.squeeze(-1)  # (N, K, 1)
    out = {}
    with torch.autocast(s.device.type, enabled=False):  # the small Gram products stay float32
        # T2I (Eq. 6-7): every word attends over the regions (axis 1).
        e = _exp_weights(s_t2i, lambda_t2i, v_mask, dim=1)  # (N, K, M, L)
        dot = (e * s).sum(1)  # (N, M, L): z_l (t_l . a_l), z_l the softmax normaliser
        ge = torch.bmm(gram_v, e.view(n, k, m * l)).view(n, k, m, l)  # (N, K, M, L)
        norm2 = (ge * e).sum(1)  # (N, M, L): z_l^2 |a_l|^2
        out["t2i"] = masked_mean(dot / norm2.clamp(min=EPS * EPS).sqrt(), words_mask, dim=-1)  # (N, M)

        # I2T (Eq. 4-5): every region attends over the words (axis 3).
        e_w = _exp_weights(s_i2t, lambda_i2t, t_mask, dim=3)  # (N, K, M, L)
        dot_w = (e_w * s).sum(3)  # (N, K, M)
        norm2_w = (words_gram(e_w) * e_w).sum(3)  # (N, K, M)
        out["i2t"] = masked_mean(dot_w / norm2_w.clamp(min=EPS * EPS).sqrt(), regions_mask, dim=1)  # (N, M)

        if "region" in weights:  # mean over the real words of alpha' = e / z_l
            per_word = words_mask / words_mask.sum(-1, keepdim=True).clamp(min=1) / e.sum(1)  # (N, M, L)
            out["region_weights"] = (e * per_word[:, None]).sum(3).transpose(1, 2)  # (N, M, K)
        if "word" in weights:  # mean over the real regions of alpha = e_w / z_k
            per_region = regions_mask / regions_mask.sum(1, keepdim=True).clamp(min=1) / e_w.sum(3)  # (N, K, M)
            out["word_weights"] = (e_w * per_region[..., None]).sum(1)  # (N, M, L)
    return out


def xattn_all_pairs(v: torch.Tensor, v_mask: torch.Tensor, t: torch.Tensor, t_mask: torch.Tensor,
                    lambda_i2t: float, lambda_t2i: float, attn_norm: str = "none",
                    weights: tuple[str, ...] = (), gram_v: torch.Tensor | None = None,
                    gram_t: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Cross attention for every pair of I images and T captions.

    v: (I, K, D) unit-norm regions, v_mask (I, K); t: (T, L, D) unit-norm words, t_mask (T, L);
    gram_v (I, K, K) = v v^T and gram_t (T, L, L) = t t^T when the encoders cached them.
    Returns "i2t", "t2i" (I, T) and, for the names in `weights` ("region", "word"),
    "region_weights" (I, T, K) and "word_weights" (I, T, L). Products run in the autocast dtype when one is active (bf16
    scoring); everything after them runs in float32.
    """
    n_i, k, d = v.shape
    n_t, l, _ = t.shape
    # One GEMM for every region-word cosine of the block, kept in its natural layout.
    s = (v.reshape(n_i * k, d) @ t.reshape(n_t * l, d).T).float().view(n_i, k, n_t, l)  # (I, K, T, L)
    gram_v = (v @ v.transpose(1, 2) if gram_v is None else gram_v).float()  # (I, K, K)
    gram_t = (t @ t.transpose(1, 2) if gram_t is None else gram_t).float()  # (T, L, L)

    def words_gram(x: torch.Tensor) -> torch.Tensor:
        # per caption: (I*K, L) x (L, L); one copy to put the caption axis first
        xt = x.permute(2, 0, 1, 3).reshape(n_t, n_i * k, l)  # (T, I*K, L)
        return torch.bmm(xt, gram_t).view(n_t, n_i, k, l).permute(1, 2, 0, 3)  # (I, K, T, L)

    return _xattn_core(s, v_mask[:, :, None, None], t_mask[None, None], gram_v, words_gram,
                       lambda_i2t, lambda_t2i, attn_norm, weights)


def xattn_paired(v: torch.Tensor, v_mask: torch.Tensor, t: torch.Tensor, t_mask: torch.Tensor,
                 lambda_i2t: float, lambda_t2i: float, attn_norm: str = "none",
                 weights: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Cross attention of B given pairs (image b with caption b): outputs of shape (B,) / (B, K|L)."""
    b, k, _ = v.shape
    l = t.shape[1]
    s = (v @ t.transpose(1, 2)).float().view(b, k, 1, l)  # (B, K, 1, L)
    gram_v = (v @ v.transpose(1, 2)).float()  # (B, K, K)
    gram_t = (t @ t.transpose(1, 2)).float()  # (B, L, L)

    def words_gram(x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x.view(b, k, l), gram_t).view(b, k, 1, l)  # (B, K, 1, L)

    out = _xattn_core(s, v_mask[:, :, None, None], t_mask[:, None, None], gram_v, words_gram,
                      lambda_i2t, lambda_t2i, attn_norm, weights)
    return {name: x.squeeze(1) for name, x in out.items()}  # (B,) / (B, K) / (B, L)


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}  # feed-forward activations (GELU: the exact erf form)


class TransformerBlock(nn.Module):
    """One pre-built Transformer encoder layer over a padded sequence (batch first).

    forward(x (B, N, D), mask (B, N) bool True on real items) -> (B, N, D).
    """

    def __init__(self, dim: int, heads: int, ff_dim: int | None = None, dropout: float = 0.1,
                 norm_first: bool = False, activation: str = "relu"):
        super().__init__()
        # activation: "relu" (the original Transformer) or "gelu" (BERT's exact, erf form)
        self.layer = nn.TransformerEncoderLayer(dim, heads, ff_dim or 4 * dim, dropout, activation=activation,
                                                batch_first=True, norm_first=norm_first)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if mask is None else ~mask
        return self.layer(x, src_key_padding_mask=pad)


class CrossAttentionBlock(nn.Module):
    """Queries of one modality attend to keys/values of the other, with residual + norm + FFN.

    forward(q (B, Nq, D), kv (B, Nk, D), kv_mask (B, Nk) True on real items) ->
    (out (B, Nq, D), attention averaged over heads (B, Nq, Nk)).
    """

    def __init__(self, dim: int, heads: int, ff_dim: int | None = None, dropout: float = 0.1,
                 activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim or 4 * dim), ACTIVATIONS[activation](), nn.Dropout(dropout),
                                nn.Linear(ff_dim or 4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor,
                kv_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pad = None if kv_mask is None else ~kv_mask
        attended, weights = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=True,
                                      average_attn_weights=True)
        x = self.norm1(q + self.drop(attended))
        x = self.norm2(x + self.drop(self.ff(x)))
        return x, weights
