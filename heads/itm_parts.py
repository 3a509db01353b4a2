"""Building blocks of the ITM head (`heads/itm.py`): the IoU alignment target of the paper's
Fig. 3b, the released code's head-averaged attention scores, and BERT's initialisation.

Shapes: B batch, K regions, D width, H heads.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_iou


def alignment_target(boxes: torch.Tensor, target_box: torch.Tensor, threshold: float = 0.5,
                     inclusive: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Fig. 3b: IoU of every region with the annotated box, zero below `threshold`
    (and at it unless `inclusive`: the release's boxes_utils keeps IoU >= 0.5, the paper's text
    "larger than 0.5"), renormalised to sum to 1.

    boxes (B, K, 4), target_box (B, 4), both x1 y1 x2 y2 -> A (B, K) and nonzero (B,) bool.
    A row with no region kept stays all-zero and is flagged False.
    """
    b, k = boxes.shape[:2]
    iou = box_iou(boxes.reshape(b * k, 4), target_box)  # (B * K, B): every region vs every target box
    iou = torch.diagonal(iou.view(b, k, b), dim1=0, dim2=2).T  # (B, K): each region vs its own box
    keep = iou >= threshold if inclusive else iou > threshold
    kept = torch.where(keep, iou, torch.zeros_like(iou))
    total = kept.sum(-1, keepdim=True)  # (B, 1)
    nonzero = total.squeeze(-1) > 0
    return kept / total.clamp_min(1e-12), nonzero


def head_mean_scores(mha: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor,
                     kv_mask: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product scores q_h . k_h / sqrt(d_h) averaged over the heads, -inf on padded
    keys: q (B, Nq, D), kv (B, Nk, D), kv_mask (B, Nk) -> (B, Nq, Nk). The released code's
    `attn_map`, whose softmax is its alignment distribution."""
    (b, nq, d), nk, h = q.shape, kv.shape[1], mha.num_heads
    wq, wk, _ = mha.in_proj_weight.split(d)
    bq, bk, _ = mha.in_proj_bias.split(d)
    qh = F.linear(q, wq, bq).view(b, nq, h, d // h).transpose(1, 2)  # (B, H, Nq, D/H)
    kh = F.linear(kv, wk, bk).view(b, nk, h, d // h).transpose(1, 2)  # (B, H, Nk, D/H)
    scores = (qh @ kh.transpose(-1, -2)).mean(1) / math.sqrt(d // h)  # (B, Nq, Nk)
    return scores.masked_fill(~kv_mask[:, None, :], float("-inf"))


def bert_init(module: nn.Module) -> None:
    """BERT's initialisation (the released `init_weight`): Linear weights N(0, 0.02), biases 0,
    LayerNorm 1 and 0; the attention's packed q/k/v projection likewise."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
        nn.init.normal_(module.in_proj_weight, 0.0, 0.02)
        nn.init.zeros_(module.in_proj_bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
