"""Box arithmetic against values and formulas written out independently."""

from __future__ import annotations

import math

import numpy as np
import torch

from lighthead.extract.regions import boxes as B


def test_caffe_anchors_match_py_faster_rcnn_table():
    # The 9 default anchors listed in py-faster-rcnn's generate_anchors.py (scales 8, 16, 32).
    expected = [
        [-84, -40, 99, 55],
        [-176, -88, 191, 103],
        [-360, -184, 375, 199],
        [-56, -56, 71, 71],
        [-120, -120, 135, 135],
        [-248, -248, 263, 263],
        [-36, -80, 51, 95],
        [-80, -168, 95, 183],
        [-168, -344, 183, 359],
    ]
    got = B.caffe_cell_anchors(16, (8, 16, 32), (0.5, 1.0, 2.0))
    assert got.tolist() == expected


def test_caffe_anchors_of_the_vg_model_have_twelve_ratio_major_entries():
    a = B.caffe_cell_anchors(16, (4, 8, 16, 32), (0.5, 1.0, 2.0))
    assert a.shape == (12, 4)
    w = a[:, 2] - a[:, 0] + 1
    h = a[:, 3] - a[:, 1] + 1
    # ratio 0.5 first: base 23x12 (rounded), times scales 4..32
    assert w[:4].tolist() == [92, 184, 368, 736] and h[:4].tolist() == [48, 96, 192, 384]
    assert torch.allclose((a[:, :2] + a[:, 2:]) / 2, torch.full((12, 2), 7.5))


def test_detectron2_anchors_size_major_centred_at_zero():
    a = B.detectron2_cell_anchors(16, (4, 8), (0.5, 1.0, 2.0))
    for i, (scale, ratio) in enumerate([(s, r) for s in (4, 8) for r in (0.5, 1.0, 2.0)]):
        size = scale * 16
        w = math.sqrt(size * size / ratio)
        h = ratio * w
        assert torch.allclose(a[i], torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))


def test_grid_anchors_order_is_y_x_a():
    cell = torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 2]])
    g = B.grid_anchors(cell, 2, 3, 16)
    assert g.shape == (12, 4)
    # row (y=1, x=2, a=1) -> index (1*3 + 2)*2 + 1
    assert g[11].tolist() == [32.0, 16.0, 34.0, 18.0]


def test_decode_matches_the_formula_with_and_without_plus_one():
    boxes = torch.tensor([[10.0, 20.0, 49.0, 99.0]])
    deltas = torch.tensor([[0.1, -0.2, 0.3, -0.4, 0.0, 0.0, 0.0, 0.0]])
    for offset in (0.0, 1.0):
        w, h = 39.0 + offset, 79.0 + offset
        cx, cy = 10 + 0.5 * w, 20 + 0.5 * h
        pcx, pcy = 0.1 * w + cx, -0.2 * h + cy
        pw, ph = math.exp(0.3) * w, math.exp(-0.4) * h
        want = [pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2]
        got = B.decode(deltas, boxes, (1.0, 1.0, 1.0, 1.0), offset)
        assert got.shape == (1, 8)
        assert torch.allclose(got[0, :4], torch.tensor(want), atol=1e-4)
        # zero deltas: the box back, except py-faster-rcnn's x2/y2 + 1 under inclusive pixels
        assert torch.allclose(got[0, 4:], boxes[0] + torch.tensor([0, 0, offset, offset]), atol=1e-4)
    big = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert B.decode(big, boxes, (1.0, 1.0, 1.0, 1.0), 0.0)[0, 2] < 2000  # clamped like detectron2
    assert B.decode(big, boxes, (1.0, 1.0, 1.0, 1.0), 1.0, None)[0, 2] > 2000  # Caffe does not clamp
    weighted = B.decode(deltas[:, :4] * torch.tensor([10.0, 10, 5, 5]), boxes, (10.0, 10.0, 5.0, 5.0), 0.0)
    assert torch.allclose(weighted, B.decode(deltas[:, :4], boxes, (1.0, 1.0, 1.0, 1.0), 0.0), atol=1e-4)


def test_clip_caffe_and_detectron2():
    b = torch.tensor([[-5.0, -1.0, 200.0, 80.0]])
    assert B.clip(b, 50, 100, 1.0).tolist() == [[0.0, 0.0, 99.0, 49.0]]
    assert B.clip(b, 50, 100, 0.0).tolist() == [[0.0, 0.0, 100.0, 50.0]]


def _caffe_py_cpu_nms(dets: np.ndarray, thresh: float) -> list[int]:
    """py-faster-rcnn's nms written out (inclusive-pixel areas)."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort(kind="stable")[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][ovr <= thresh]
    return keep


def test_nms_with_offset_equals_caffe_nms():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 60, (200, 2))
    wh = rng.uniform(1, 30, (200, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.permutation(200).astype(np.float64) / 200
    for thresh in (0.3, 0.7):
        want = _caffe_py_cpu_nms(np.concatenate([boxes, scores[:, None]], 1), thresh)
        got = B.nms_keep(
            torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), thresh, 1.0
        )
        assert got.tolist() == want
    plain = B.nms_keep(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), 0.3, 0.0)
    assert plain.tolist() != _caffe_py_cpu_nms(np.concatenate([boxes, scores[:, None]], 1), 0.3)
