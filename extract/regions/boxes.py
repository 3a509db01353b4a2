"""Box arithmetic under the two pixel conventions the checkpoints were trained or converted with.

Caffe (py-faster-rcnn, bottom-up-attention.pytorch) treats a box as inclusive pixels: its
width is `x2 - x1 + 1`, it is clipped to `[0, W - 1]`, and NMS uses `+1` areas. detectron2
(py-bottom-up-attention) uses continuous coordinates: width `x2 - x1`, clipped to `[0, W]`.
`offset` below is 1.0 or 0.0 accordingly. NMS and IoU run on torchvision.ops after shifting
`x2, y2` by `offset`, which makes the `+1` areas and intersections exact.

Boxes are float32 `(N, 4)` as (x1, y1, x2, y2).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.ops import box_iou, nms

# Largest log-scale a delta may apply (a 16 px box cannot grow past 1000 px), as in detectron2.
SCALE_CLAMP = math.log(1000.0 / 16)


def caffe_cell_anchors(stride: int, scales: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """The A anchors of one cell as py-faster-rcnn's `generate_anchors` makes them.

    A `stride x stride` base box `[0, 0, stride-1, stride-1]`, re-shaped per ratio with widths
    rounded half-to-even (numpy's round), then scaled; ratio-major order (A = ratio * S + scale).
    """
    base = float(stride)
    ctr = 0.5 * (base - 1.0)  # centre of the inclusive base box
    out = []
    for ratio in ratios:
        w = float(np.round(np.sqrt(base * base / ratio)))
        h = float(np.round(w * ratio))
        for scale in scales:
            ws, hs = w * scale, h * scale
            out.append([ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1), ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)])
    return torch.tensor(out, dtype=torch.float32)  # (A, 4)


def detectron2_cell_anchors(stride: int, scales: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """The A anchors of one cell as detectron2's DefaultAnchorGenerator makes them (offset 0).

    Centred on the cell's top-left corner, unrounded, size-major order (A = scale * R + ratio).
    """
    out = []
    for scale in scales:
        area = (scale * stride) ** 2
        for ratio in ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(out, dtype=torch.float32)  # (A, 4)


def grid_anchors(cell: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """Shift the (A, 4) cell anchors over an (height, width) map; rows ordered (y, x, a)."""
    ys = torch.arange(height, dtype=torch.float32, device=cell.device) * stride
    xs = torch.arange(width, dtype=torch.float32, device=cell.device) * stride
    sy, sx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
    return (shifts + cell.reshape(1, -1, 4)).reshape(-1, 4)  # (H*W*A, 4)


def decode(
    deltas: torch.Tensor,
    boxes: torch.Tensor,
    weights: tuple[float, ...],
    offset: float,
    scale_clamp: float | None = SCALE_CLAMP,
) -> torch.Tensor:
    """Apply (dx, dy, dw, dh) deltas to boxes (Fast R-CNN parameterisation).

    deltas: (N, 4*C) for C classes (C = 1 for the RPN); boxes: (N, 4). Returns (N, 4*C).
    As in py-faster-rcnn, x2 = centre + w/2 even with +1 widths (zero deltas move x2 by +1);
    scale_clamp None leaves dw/dh unclamped (Caffe), detectron2 clamps them.
    """
    deltas = deltas.float()
    boxes = boxes.float()
    widths = boxes[:, 2] - boxes[:, 0] + offset
    heights = boxes[:, 3] - boxes[:, 1] + offset
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = deltas[:, 2::4] / ww
    dh = deltas[:, 3::4] / wh
    if scale_clamp is not None:
        dw, dh = dw.clamp(max=scale_clamp), dh.clamp(max=scale_clamp)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    out = torch.stack(
        [pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h, pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h],
        dim=-1,
    )  # (N, C, 4)
    return out.flatten(1)  # (N, 4*C); N may be 0 (no anchor on a map with no valid cell)


def clip(boxes: torch.Tensor, height: float, width: float, offset: float) -> torch.Tensor:
    """Clip (N, 4) boxes to an image of the given size."""
    x = boxes[:, 0::2].clamp(min=0.0, max=width - offset)
    y = boxes[:, 1::2].clamp(min=0.0, max=height - offset)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def sizes(boxes: torch.Tensor, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Widths and heights of (N, 4) boxes."""
    return boxes[:, 2] - boxes[:, 0] + offset, boxes[:, 3] - boxes[:, 1] + offset


def _shift(boxes: torch.Tensor, offset: float) -> torch.Tensor:
    """(..., 4) boxes with x2, y2 moved by `offset` (a scalar add: no constant tensor to copy
    to the device, which on a GPU would make the host wait at every call)."""
    b = boxes.float()
    if offset == 0.0:
        return b
    return torch.cat([b[..., :2], b[..., 2:] + offset], dim=-1)


def nms_keep(boxes: torch.Tensor, scores: torch.Tensor, thresh: float, offset: float) -> torch.Tensor:
    """Indices kept by greedy NMS (suppress IoU > thresh), highest score first."""
    return nms(_shift(boxes, offset), scores.float(), thresh)


def iou_matrix(boxes: torch.Tensor, offset: float) -> torch.Tensor:
    """(N, N) IoU of boxes with themselves under the given convention."""
    b = _shift(boxes, offset)
    return box_iou(b, b)


def iou_matrices(boxes: torch.Tensor, offset: float) -> torch.Tensor:
    """(N, R, R) IoU of each of N sets of (R, 4) boxes with itself, all sets at once.

    The same float32 operations, in the same order, as torchvision's `box_iou` (which takes one
    set): the values equal `iou_matrix` of each set bit for bit.
    """
    b = _shift(boxes, offset)  # (N, R, 4)
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # (N, R)
    lt = torch.max(b[:, :, None, :2], b[:, None, :, :2])  # (N, R, R, 2)
    rb = torch.min(b[:, :, None, 2:], b[:, None, :, 2:])  # (N, R, R, 2)
    wh = (rb - lt).clamp(min=0)  # (N, R, R, 2)
    inter = wh[..., 0] * wh[..., 1]  # (N, R, R)
    union = area[:, :, None] + area[:, None, :] - inter
    return inter / union
