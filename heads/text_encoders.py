"""Trainable text encoders over cached inputs (word ids or frozen token features).

`GRUTextEncoder` is the caption encoder of VSE++ (Faghri et al., BMVC 2018), SCAN and CASC
(word embedding 300 -> (bi)GRU) and of mFSR (deeper, wider GRU): one module, sizes from the
caller. `TokenProjection` maps cached token features of a frozen encoder (BERT, MiniLM) to
the joint width instead.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lighthead.heads.rnn import FP32GRU


class GRUTextEncoder(nn.Module):
    """Word embedding -> GRU (float32 under autocast: `heads/rnn.py`).

    forward(word_ids (B, L) long, lengths (B,) long) -> (states (B, L, H), sentence (B, H)).
    states: per-word outputs, zero on padding; with `bidirectional` the two directions are
    averaged (SCAN's choice), so H = hidden either way. sentence: the last real step of the
    forward GRU (VSE++); bidirectional: the mean of the forward last step and the backward
    first step.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int,
        hidden: int,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (0 is padding), got {vocab_size}")
        self.hidden = hidden
        self.bidirectional = bidirectional
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = FP32GRU(
            word_dim,
            hidden,
            layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        # VSE++ initialises the embedding uniformly in [-0.1, 0.1].
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embed.weight[0].zero_()

    def forward(self, word_ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, l = word_ids.shape
        x = self.embed(word_ids)  # (B, L, E)
        lengths_cpu = lengths.clamp(min=1).to("cpu", torch.int64)
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=l)  # (B, L, H * dirs)
        if self.bidirectional:
            states = states.view(b, l, 2, self.hidden).mean(dim=2)  # (B, L, H)
            sentence = h_n[-2:].mean(dim=0)  # last layer, both directions: (B, H)
        else:
            sentence = h_n[-1]  # (B, H)
        return states, sentence


class TokenProjection(nn.Module):
    """Cached token features (B, L, D_tok) -> (B, L, H) with one linear map.

    The token encoder (BERT, RoBERTa, MiniLM) stays frozen and is never run here: its outputs
    come from the store. sentence = masked mean of the projected tokens.
    """

    def __init__(self, token_dim: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(token_dim, hidden)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.fc(tokens.float()) * mask[..., None].float()  # (B, L, H)
        sentence = states.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).float()
        return states, sentence


def caption_encoder(
    text_set: str,
    embed_size: int,
    *,
    token_dim: int = 0,
    vocab_size: int = 0,
    word_dim: int = 300,
    gru_layers: int = 1,
    bidirectional: bool = False,
) -> nn.Module:
    """The caption side of the retrieval heads: a projection of cached token features when
    `text_set` names a `text/...` feature set, else a word embedding + GRU over word ids."""
    if text_set.startswith("text/"):
        if token_dim < 1:
            raise ValueError(f"text={text_set!r} needs token_dim from the data")
        return TokenProjection(token_dim, embed_size)
    return GRUTextEncoder(vocab_size, word_dim, embed_size, gru_layers, bidirectional)
