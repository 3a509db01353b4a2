"""Building blocks of the mFSR head (Zhang & Wu, Pattern Recognition 2021): the DCGAN
generator and discriminators of the image reconstruction, the GRU caption decoder, and the
loss terms (Eqs. 7, 10, 14, and the BCE form of Eqs. 11-13). The head is `heads/mfsr.py`.

Letters: B batch, P width of one separated part, S thumbnail side, L caption length, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lighthead.heads.rnn import FP32GRU


def _stages(size: int) -> int:
    """Stride-2 stages between a 4x4 map and a size x size image (DCGAN layout)."""
    n = int(round(math.log2(size))) - 2
    if size < 8 or 2 ** (n + 2) != size:
        raise ValueError(f"thumbnail side must be a power of two >= 8, got {size}")
    return n


class Generator(nn.Module):
    """DCGAN generator (Radford et al. 2016): code (B, Z) -> image (B, 3, S, S) in [-1, 1].

    A 4x4 transposed convolution from the code, then stride-2 transposed convolutions that
    halve the channels and double the side, BatchNorm + ReLU between, tanh at the end.
    """

    def __init__(self, code_dim: int, size: int = 64, width: int = 64):
        super().__init__()
        n = _stages(size)
        ch = width * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(code_dim, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)  # (B, ch, 4, 4)
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code[:, :, None, None])  # (B, Z, 1, 1) -> (B, 3, S, S)


class Discriminator(nn.Module):
    """DCGAN discriminator: image(s) (B, C, S, S) -> one logit per sample (B,).

    D1 reads one image (C = 3, real vs generated); D2 reads a generated image stacked on the
    real one along channels (C = 6, matched vs mismatched).
    """

    def __init__(self, in_channels: int = 3, size: int = 64, width: int = 64):
        super().__init__()
        n = _stages(size)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        ch = width
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # (B, 1, 1, 1) -> (B,)


class CaptionDecoder(nn.Module):
    """GRU caption decoder conditioned on the separated text code (Eq. 5).

    The code sets the initial hidden state of every layer; step t reads the embedding of word
    t-1 (a learned start vector at t = 0) and predicts word t (teacher forcing).
    """

    def __init__(self, embedding: nn.Embedding, code_dim: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = embedding  # W_e, shared with the text encoder (Eq. 5 reuses it)
        self.layers = layers
        self.init = nn.Linear(code_dim, hidden)
        self.start = nn.Parameter(torch.zeros(embedding.embedding_dim))
        self.gru = FP32GRU(embedding.embedding_dim, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, embedding.num_embeddings)  # FC_2

    def forward(self, code: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
        """code (B, Z), word_ids (B, L) -> logits (B, L, V) of word t given words < t."""
        b = word_ids.shape[0]
        prev = self.embedding(word_ids[:, :-1])  # (B, L-1, E)
        inputs = torch.cat([self.start.expand(b, 1, -1), prev], dim=1)  # (B, L, E)
        h0 = torch.tanh(self.init(code)).unsqueeze(0).expand(self.layers, -1, -1).contiguous()  # (layers, B, H)
        out, _ = self.gru(inputs, h0)  # (B, L, H)
        return self.out(out)  # (B, L, V)


def caption_loss(logits: torch.Tensor, word_ids: torch.Tensor, lengths: torch.Tensor,
                 per_token: bool = False) -> torch.Tensor:
    """Eq. 14: -sum_t log p(w_t | w_<t) over each caption's real words, averaged over captions.

    logits (B, L, V), word_ids (B, L), lengths (B,). `per_token` averages over words instead.
    """
    mask = torch.arange(word_ids.shape[1], device=word_ids.device)[None, :] < lengths[:, None]  # (B, L)
    nll = F.cross_entropy(logits.transpose(1, 2), word_ids, reduction="none")  # (B, L)
    nll = (nll * mask).sum()
    return nll / mask.sum().clamp(min=1) if per_token else nll / word_ids.shape[0]


def modal_loss(v_mo: torch.Tensor, l_mo: torch.Tensor) -> torch.Tensor:
    """Eq. 7: each modal part close to its modality's batch mean, the two means pushed apart.

    mean_i (||v_i - v_bar|| + ||l_i - l_bar||) + exp(-||v_bar - l_bar||); v_mo, l_mo (B, P).
    """
    v_bar, l_bar = v_mo.mean(dim=0), l_mo.mean(dim=0)  # (P,)
    spread = (v_mo - v_bar).norm(dim=1) + (l_mo - l_bar).norm(dim=1)  # (B,)
    return spread.mean() + torch.exp(-(v_bar - l_bar).norm())


def specific_loss(v_se: torch.Tensor, v_sp: torch.Tensor, l_se: torch.Tensor, l_sp: torch.Tensor) -> torch.Tensor:
    """Eq. 10: mean_i exp(v_sp_i . v_se_i) + exp(l_sp_i . l_se_i); all (B, P)."""
    return (torch.exp((v_sp * v_se).sum(dim=1)) + torch.exp((l_sp * l_se).sum(dim=1))).mean()


def bce(logit: torch.Tensor, target: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of logits against a constant target, over `rows` if given."""
    if rows is not None:
        logit = logit[rows]
        if logit.numel() == 0:
            return logit.sum()  # no valid row: a zero that keeps the graph
    return F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, target))


def to_image(thumb: torch.Tensor) -> torch.Tensor:
    """uint8 thumbnail (B, 3, S, S) in [0, 255] -> float in [-1, 1], the generator's range."""
    return thumb.float() / 127.5 - 1.0
