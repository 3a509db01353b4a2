"""Region proposal network on res4: head convs plus the test-time proposal step per image.

The objectness conv has one output per anchor, a logit whose sigmoid is the foreground
probability. Caffe's two-way softmax (background, foreground) equals `sigmoid(fg - bg)`, and
the checkpoint loader folds the two-way weights into this form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lighthead.extract.regions import boxes as B
from lighthead.extract.regions.config import DetectorConfig


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to A objectness logits and 4A anchor deltas."""

    def __init__(self, cin: int, hidden: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden, num_anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) -> logits (B, A, H, W), deltas (B, 4A, H, W), both float32."""
        t = F.relu(self.conv(x))
        # The small output convs run in float32 even under autocast: box deltas and the score
        # order of 6000 proposals need more than bf16's 8 bits of mantissa.
        with torch.autocast(x.device.type, enabled=False):
            t = t.float()
            return self.objectness_logits(t), self.anchor_deltas(t)


class ProposalGenerator(nn.Module):
    """Turns the head outputs of one image into at most `rpn_post_nms_top_n` proposals."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        make = B.caffe_cell_anchors if cfg.conventions == "caffe" else B.detectron2_cell_anchors
        self.register_buffer(
            "cell_anchors", make(cfg.feat_stride, cfg.anchor_scales, cfg.anchor_ratios), persistent=False
        )

    def forward(
        self, logits: torch.Tensor, deltas: torch.Tensor, image_hw: tuple[int, int], scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Proposals of one image.

        logits: (A, h, w) and deltas (4A, h, w), already cut to the image's valid extent;
        image_hw: size of the resized image (before padding); scale: resize factor.
        Returns boxes (P, 4) in resized-image pixels and their scores (P,), best first.
        """
        cfg = self.cfg
        A, h, w = logits.shape
        offset = cfg.pixel_offset
        anchors = B.grid_anchors(self.cell_anchors, h, w, cfg.feat_stride)  # (h*w*A, 4)
        scores = logits.float().permute(1, 2, 0).reshape(-1)  # (h*w*A,) ordered (y, x, a)
        d = deltas.float().reshape(A, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4)  # (h*w*A, 4)
        if cfg.conventions == "detectron2":
            # detectron2 takes the top-k logits first, then clips and drops empty boxes.
            k = min(cfg.rpn_pre_nms_top_n, scores.numel())
            scores, order = scores.topk(k)
            anchors, d = anchors[order], d[order]
        clamp = None if cfg.conventions == "caffe" else B.SCALE_CLAMP
        props = B.decode(d, anchors, (1.0, 1.0, 1.0, 1.0), offset, clamp)
        props = B.clip(props, image_hw[0], image_hw[1], offset)
        ws, hs = B.sizes(props, offset)
        min_size = cfg.rpn_min_size * scale
        keep = (ws >= min_size) & (hs >= min_size) & (ws > 0) & (hs > 0)
        props, scores = props[keep], scores[keep]
        if cfg.conventions == "caffe":
            order = torch.sort(scores, descending=True, stable=True).indices[: cfg.rpn_pre_nms_top_n]
            props, scores = props[order], scores[order]
        keep = B.nms_keep(props, scores, cfg.rpn_nms_thresh, offset)[: cfg.rpn_post_nms_top_n]
        return props[keep], torch.sigmoid(scores[keep])
