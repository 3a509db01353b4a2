"""Building blocks of the MMCA head (`heads/mmca.py`): the paper's Transformer unit, the
masked region mean (Eq. 5), the all-pairs concatenation of the cross-modal pass, and the text
CNN (Eqs. 6-7).

Letters: B batch, K regions, L positions, d width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lighthead.heads.attention import masked_mean


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
