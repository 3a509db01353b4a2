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
    cls_prob = torch.tensor(
        [
            [0.1, 0.6, 0.3],  # ROI 0 wins class 1
            [0.1, 0.5, 0.4],  # ROI 1 is suppressed in class 1 by ROI 0, but wins class 2
            [0.7, 0.2, 0.1],  # ROI 2 survives everywhere; background ignored
        ]
    )
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


# ---- the NMS of a whole batch at once --------------------------------------------------------


def per_image_max_conf(boxes: torch.Tensor, cls_prob: torch.Tensor, thresh: float, offset: float) -> torch.Tensor:
    """The earlier per-image code: one image's lockstep NMS over a torchvision IoU matrix."""
    from lighthead.extract.regions import boxes as B

    scores = cls_prob[:, 1:].float().t().contiguous()  # (C-1, R)
    over = (B.iou_matrix(boxes, offset) > thresh).numpy()  # (R, R)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices.numpy()  # (C-1, R)
    n_cls, R = order.shape
    suppressed = np.zeros((n_cls, R), dtype=bool)
    kept = np.zeros((n_cls, R), dtype=bool)
    rows = np.arange(n_cls)
    for i in range(R):
        b = order[:, i]
        alive = ~suppressed[rows, b]
        kept[rows, b] = alive
        suppressed |= over[b] & alive[:, None]
    return torch.where(torch.from_numpy(kept), scores, torch.zeros_like(scores)).max(dim=0).values


def random_images(counts: list[int], classes: int, seed: int, ties: bool):
    """Boxes and class probabilities of images with `counts` ROIs; with `ties`, duplicated boxes
    and scores rounded to a few values, so that equal scores and equal IoUs abound."""
    g = torch.Generator().manual_seed(seed)
    boxes, probs = [], []
    for r in counts:
        xy = torch.rand(r, 2, generator=g) * 200
        wh = torch.rand(r, 2, generator=g) * 100 + 2
        b = torch.cat([xy, xy + wh], 1)
        p = torch.softmax(torch.randn(r, classes, generator=g) * 2, dim=1)
        if ties and r > 3:
            b = (b / 10).round() * 10  # equal coordinates: IoUs that tie, some exactly at the threshold
            b[1::3] = b[0::3][: b[1::3].shape[0]]  # identical boxes
            p = (p * 8).round() / 8  # few distinct scores: ties in every class
        boxes.append(b)
        probs.append(p)
    return boxes, probs


def torch_lockstep(monkeypatch) -> None:
    """Run the GPU's torch lockstep on the CPU (where the numpy one runs by default)."""
    from lighthead.extract.regions import box_selection as bs

    monkeypatch.setattr(
        bs,
        "_lockstep_nms_numpy",
        lambda over, order: bs._lockstep_nms_torch(torch.from_numpy(over), torch.from_numpy(order)).numpy(),
    )


@pytest.mark.parametrize("kernel", ["numpy", "torch"])
@pytest.mark.parametrize("ties", [False, True])
def test_batched_nms_equals_one_image_at_a_time(monkeypatch, kernel, ties):
    from lighthead.extract.regions.box_selection import batch_max_confidence

    if kernel == "torch":
        torch_lockstep(monkeypatch)
    counts = [60, 0, 17, 60, 1, 45]  # unequal ROI counts: the batch pads them; an image without ROIs
    boxes, probs = random_images(counts, classes=12, seed=3, ties=ties)
    for offset in (1.0, 0.0):
        got = batch_max_confidence(boxes, probs, 0.3, offset)
        assert [g.shape[0] for g in got] == counts
        for b, p, g in zip(boxes, probs, got):
            assert torch.equal(g, per_image_max_conf(b, p, 0.3, offset))  # bit for bit
    if not ties:  # torchvision's NMS orders tied scores its own way: compare without ties
        for b, p, g in zip(boxes, probs, batch_max_confidence(boxes, probs, 0.3, 1.0)):
            assert torch.equal(g, reference_max_conf(b, p))


def test_batched_iou_equals_torchvision_bit_for_bit():
    from lighthead.extract.regions import boxes as B

    boxes, _ = random_images([40, 40, 40], classes=2, seed=5, ties=True)
    stacked = torch.stack(boxes)  # (3, 40, 4)
    for offset in (1.0, 0.0):
        got = B.iou_matrices(stacked, offset)
        for i, b in enumerate(boxes):
            # bit for bit (empty boxes under offset 0 give 0 / 0 = NaN in both)
            torch.testing.assert_close(got[i], B.iou_matrix(b, offset), rtol=0, atol=0, equal_nan=True)


def test_nms_launches_do_not_grow_with_the_batch(monkeypatch, tiny_cfg):
    """The box selection of a batch of 8 dispatches about as many torch ops as that of one image:
    the NMS steps (R of them, ~6 ops each) run once per batch, not once per image."""
    from lighthead.extract.regions.model import BottomUpDetector
    from tests.dispatch_count import OpCounter

    torch_lockstep(monkeypatch)
    model = BottomUpDetector(tiny_cfg)
    R, C = 80, 21
    boxes, probs = random_images([R] * 8, classes=C, seed=7, ties=False)
    outputs = [{"boxes": b, "cls_prob": p, "features": torch.randn(R, 16)} for b, p in zip(boxes, probs)]
    selection = SelectionConfig(mode="fixed", num_boxes=10)

    def ops(n: int) -> int:
        with OpCounter() as counter:
            model.regions(outputs[:n], selection)
        return counter.total

    one, eight = ops(1), ops(8)
    assert one > 6 * R  # the R lockstep steps are there
    assert eight - one < 7 * 40  # a few ops per image (labels, top-K), nothing per NMS step
