"""Box selection rules on hand-made score tensors, against generate_tsv.py's loop written out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import nms

from lighthead.extract.regions.box_selection import labels, max_confidence, select
from lighthead.extract.regions.config import SelectionConfig


def reference_max_conf(boxes: torch.Tensor, cls_prob: torch.Tensor, thresh: float = 0.3) -> torch.Tensor:
    """The per-class loop of generate_tsv.py: one NMS per class, keep each ROI's best surviving score."""
    shifted = boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])  # Caffe's inclusive-pixel areas
    max_conf = torch.zeros(boxes.shape[0])
    for c in range(1, cls_prob.shape[1]):
        scores = cls_prob[:, c]
        keep = nms(shifted, scores, thresh)
        max_conf[keep] = torch.where(scores[keep] > max_conf[keep], scores[keep], max_conf[keep])
    return max_conf


def test_hand_made_case():
    # ROIs 0 and 1 overlap heavily (IoU ~0.8); ROI 2 is far away.
    boxes = torch.tensor([[0.0, 0, 99, 99], [5, 5, 104, 104], [300, 300, 349, 349]])
    cls_prob = torch.tensor([
        [0.1, 0.6, 0.3],  # ROI 0 wins class 1
        [0.1, 0.5, 0.4],  # ROI 1 is suppressed in class 1 by ROI 0, but wins class 2
        [0.7, 0.2, 0.1],  # ROI 2 survives everywhere; background ignored
    ])
    conf = max_confidence(boxes, cls_prob, 0.3, 1.0)
    assert torch.allclose(conf, torch.tensor([0.6, 0.4, 0.2]))
    # ROI 1 also loses class 2 if ROI 0 scores higher there
    cls_prob[0, 2] = 0.45
    conf = max_confidence(boxes, cls_prob, 0.3, 1.0)
    assert torch.allclose(conf, torch.tensor([0.6, 0.0, 0.2]))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_vectorised_nms_equals_per_class_loop(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(0)
    R, C = 120, 40
    xy = torch.rand(R, 2, generator=g) * 300
    wh = torch.rand(R, 2, generator=g) * 120 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    cls_prob = torch.softmax(torch.randn(R, C, generator=g) * 2, dim=1)
    want = reference_max_conf(boxes, cls_prob)
    got = max_confidence(boxes.to(device), cls_prob.to(device), 0.3, 1.0).cpu()
    assert torch.equal(got, want)


def test_fixed_k_takes_the_most_confident_in_order():
    conf = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.05])
    got = select(conf, SelectionConfig(mode="fixed", num_boxes=3))
    assert got.tolist() == [1, 3, 2]
    assert select(conf, SelectionConfig(mode="fixed", num_boxes=10)).tolist() == [1, 3, 2, 0, 4]


def test_adaptive_rule_min_middle_max():
    cfg = SelectionConfig(mode="adaptive", conf_thresh=0.2, min_boxes=10, max_boxes=100)
    rng = np.random.default_rng(0)
    # fewer than 10 pass: the 10 most confident
    conf = torch.tensor(rng.uniform(0, 0.19, 50), dtype=torch.float32)
    conf[[3, 7]] = torch.tensor([0.5, 0.3])
    got = select(conf, cfg)
    assert len(got) == 10 and got[:2].tolist() == [3, 7]
    assert set(got.tolist()) == set(torch.argsort(conf, descending=True)[:10].tolist())
    # between 10 and 100 pass: exactly those, in ROI order
    conf = torch.tensor(rng.uniform(0, 1, 200), dtype=torch.float32)
    conf[conf >= 0.2] = 0.1
    passing = rng.choice(200, 40, replace=False)
    conf[passing] = torch.tensor(rng.uniform(0.2, 1, 40), dtype=torch.float32)
    assert select(conf, cfg).tolist() == sorted(passing.tolist())
    # more than 100 pass: the 100 most confident
    conf = torch.tensor(rng.uniform(0.25, 1, 300), dtype=torch.float32)
    got = select(conf, cfg)
    assert len(got) == 100 and conf[got].min() >= torch.sort(conf, descending=True).values[99]


def test_threshold_is_inclusive():
    cfg = SelectionConfig(mode="adaptive", conf_thresh=0.2, min_boxes=1, max_boxes=5)
    conf = torch.tensor([0.2, 0.19999, 0.5])
    assert select(conf, cfg).tolist() == [0, 2]


def test_labels_skip_background_and_no_attribute():
    cls_prob = torch.tensor([[0.9, 0.06, 0.04], [0.2, 0.3, 0.5]])
    attr_prob = torch.tensor([[0.8, 0.15, 0.05], [0.1, 0.1, 0.8]])
    lab = labels(cls_prob, attr_prob)
    assert lab["object_ids"].tolist() == [0, 1]
    assert torch.allclose(lab["object_scores"], torch.tensor([0.06, 0.5]))
    assert lab["attr_ids"].tolist() == [0, 1] and torch.allclose(lab["attr_scores"], torch.tensor([0.15, 0.8]))
    none = labels(cls_prob, None)
    assert none["attr_ids"].tolist() == [-1, -1] and none["attr_scores"].tolist() == [0.0, 0.0]


def test_selection_config_validation():
    with pytest.raises(ValueError):
        SelectionConfig(mode="everything")
    with pytest.raises(ValueError):
        SelectionConfig(mode="adaptive", min_boxes=20, max_boxes=10)
