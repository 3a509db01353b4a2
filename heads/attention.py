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
   of pairs costs O(I T K L (L + K)) instead of O(I T K L D), and memory stays at a few
   (I, T, K, L) tensors.

2. A Transformer block (`nn.TransformerEncoderLayer`) and a cross-attention block
   (`nn.MultiheadAttention`, queries from one modality, keys/values from the other).
"""

from __future__ import annotations

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


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over `dim` ignoring entries where the (broadcastable) mask is False.

    Every row keeps at least one real entry (a caption has >= 1 word, an image >= 1 region).
    The mask stays in its small broadcast shape: an additive 0 / -inf bias, skipped when all True.
    """
    if bool(mask.all()):
        return torch.softmax(logits, dim=dim)
    bias = torch.zeros(mask.shape, dtype=logits.dtype, device=logits.device).masked_fill_(~mask, float("-inf"))
    return torch.softmax(logits + bias, dim=dim)


def xattn_from_sims(s: torch.Tensor, v_mask: torch.Tensor, t_mask: torch.Tensor,
                    gram_v: torch.Tensor, gram_t: torch.Tensor, lambda_i2t: float,
                    lambda_t2i: float, attn_norm: str = "none",
                    want_weights: bool = False) -> dict[str, torch.Tensor]:
    """Both attention directions from region-word cosines.

    s: (..., K, L) cosines; v_mask (..., K, 1) and t_mask (..., 1, L) bool, broadcastable;
    gram_v (..., K, K) and gram_t (..., L, L): region and word Gram matrices, broadcastable.
    attn_norm: "none" = the CASC equations (softmax of lambda * s); "clipped_l2" = SCAN's code,
    which first clips and L2-normalises s over the other modality.
    Returns "i2t" and "t2i" (...,) scores; with want_weights also "region_weights" (..., K),
    the mean over words of alpha' (so A^I = sum_k w_k v_k, Eq. 10) and "word_weights"
    (..., L), the mean over regions of alpha (A^T = sum_l w_l t_l).
    """
    if attn_norm == "none":
        s_i2t = s_t2i = s
    elif attn_norm == "clipped_l2":
        pair_mask = v_mask & t_mask  # (..., K, L)
        s_i2t = _clipped_l2(s, pair_mask, dim=-2)  # each word normalised over regions
        s_t2i = _clipped_l2(s, pair_mask, dim=-1)  # each region normalised over words
    else:
        raise ValueError(f"attn_norm must be 'none' or 'clipped_l2', got {attn_norm!r}")

    # I2T: every region attends over the words.
    alpha = _masked_softmax(lambda_i2t * s_i2t, t_mask, dim=-1)  # (..., K, L)
    dot = (alpha * s).sum(-1)  # (..., K): v_k . a_k
    norm2 = ((alpha @ gram_t) * alpha).sum(-1)  # (..., K): |a_k|^2
    cos_regions = dot / norm2.clamp(min=EPS * EPS).sqrt()
    i2t = masked_mean(cos_regions, v_mask.squeeze(-1), dim=-1)

    # T2I: every word attends over the regions.
    alpha_t = _masked_softmax(lambda_t2i * s_t2i, v_mask, dim=-2)  # (..., K, L)
    dot_t = (alpha_t * s).sum(-2)  # (..., L): t_l . a_l
    norm2_t = ((gram_v @ alpha_t) * alpha_t).sum(-2)  # (..., L): |a_l|^2
    cos_words = dot_t / norm2_t.clamp(min=EPS * EPS).sqrt()
    t2i = masked_mean(cos_words, t_mask.squeeze(-2), dim=-1)

    out = {"i2t": i2t, "t2i": t2i}
    if want_weights:
        out["region_weights"] = masked_mean(alpha_t, t_mask, dim=-1)  # (..., K)
        out["word_weights"] = masked_mean(alpha, v_mask, dim=-2)  # (..., L)
    return out


def xattn_all_pairs(v: torch.Tensor, v_mask: torch.Tensor, t: torch.Tensor, t_mask: torch.Tensor,
                    lambda_i2t: float, lambda_t2i: float, attn_norm: str = "none",
                    want_weights: bool = False) -> dict[str, torch.Tensor]:
    """Cross attention for every pair of I images and T captions.

    v: (I, K, D) unit-norm regions, v_mask (I, K); t: (T, L, D) unit-norm words, t_mask (T, L).
    Returns "i2t", "t2i" (I, T) and, with want_weights, "region_weights" (I, T, K) and
    "word_weights" (I, T, L).
    """
    n_i, k, d = v.shape
    n_t, l, _ = t.shape
    # One GEMM for every region-word cosine of the block.
    s = (v.reshape(n_i * k, d) @ t.reshape(n_t * l, d).T).view(n_i, k, n_t, l)  # (I, K, T, L)
    s = s.permute(0, 2, 1, 3).contiguous()  # (I, T, K, L); one copy here saves several later
    gram_v = (v @ v.transpose(1, 2))[:, None]  # (I, 1, K, K)
    gram_t = (t @ t.transpose(1, 2))[None]  # (1, T, L, L)
    vm = v_mask[:, None, :, None]  # (I, 1, K, 1)
    tm = t_mask[None, :, None, :]  # (1, T, 1, L)
    return xattn_from_sims(s, vm, tm, gram_v, gram_t, lambda_i2t, lambda_t2i, attn_norm, want_weights)


def xattn_paired(v: torch.Tensor, v_mask: torch.Tensor, t: torch.Tensor, t_mask: torch.Tensor,
                 lambda_i2t: float, lambda_t2i: float, attn_norm: str = "none",
                 want_weights: bool = False) -> dict[str, torch.Tensor]:
    """Cross attention of B given pairs (image b with caption b): outputs of shape (B,) / (B, K|L)."""
    s = v @ t.transpose(1, 2)  # (B, K, L)
    gram_v = v @ v.transpose(1, 2)  # (B, K, K)
    gram_t = t @ t.transpose(1, 2)  # (B, L, L)
    return xattn_from_sims(s, v_mask[:, :, None], t_mask[:, None, :], gram_v, gram_t,
                           lambda_i2t, lambda_t2i, attn_norm, want_weights)


class TransformerBlock(nn.Module):
    """One pre-built Transformer encoder layer over a padded sequence (batch first).

    forward(x (B, N, D), mask (B, N) bool True on real items) -> (B, N, D).
    """

    def __init__(self, dim: int, heads: int, ff_dim: int | None = None, dropout: float = 0.1,
                 norm_first: bool = False):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, heads, ff_dim or 4 * dim, dropout,
                                                batch_first=True, norm_first=norm_first)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if mask is None else ~mask
        return self.layer(x, src_key_padding_mask=pad)


class CrossAttentionBlock(nn.Module):
    """Queries of one modality attend to keys/values of the other, with residual + norm + FFN.

    forward(q (B, Nq, D), kv (B, Nk, D), kv_mask (B, Nk) True on real items) ->
    (out (B, Nq, D), attention averaged over heads (B, Nq, Nk)).
    """

    def __init__(self, dim: int, heads: int, ff_dim: int | None = None, dropout: float = 0.1):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim or 4 * dim), nn.ReLU(), nn.Dropout(dropout),
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
