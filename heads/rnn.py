"""The GRU every head uses: always float32, under autocast or not.

Training runs under bf16 autocast on a GPU, and the GradScaler is on only for fp16. PyTorch's
autocast rule for cuDNN RNNs casts input, hidden state and weights to float16 whatever the
autocast dtype, so a plain `nn.GRU` would train in unscaled fp16 there (small gradients flush
to zero without a word); on a CPU a bf16 hidden state (the output of a linear layer under
autocast, as mFSR's decoder feeds it) turns the whole GRU into bf16. The heads' GRUs are small:
running them in float32 costs little and keeps their gradients exact.

`FP32GRU` is an `nn.GRU` (same parameters, same state-dict keys, so older checkpoints load)
whose forward turns autocast off and casts its input and hidden state to its weights' dtype:
float32, unless the module itself was converted (`.double()` in the reference tests). A test walks
every registered head and checks that each RNN it builds is one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence


class FP32GRU(nn.GRU):
    """`nn.GRU` run in its weights' dtype (float32) with autocast off; takes and returns what
    `nn.GRU` does (a tensor or a PackedSequence, and the hidden state)."""

    def forward(self, input, hx=None):  # noqa: A002 - nn.GRU's own argument name
        data = input.data if isinstance(input, PackedSequence) else input
        dtype = self.weight_ih_l0.dtype
        with torch.autocast(device_type=data.device.type, enabled=False):
            return super().forward(input.to(dtype), None if hx is None else hx.to(dtype))
