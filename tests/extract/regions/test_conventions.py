"""Each checkpoint format's conventions against the reference's rule, written out independently.

"pil" is detectron2's as py-bottom-up-attention runs it (the .pkl), "cv2" py-faster-rcnn's as
bottom-up-attention.pytorch runs it (the .pth and our default). Each test reimplements the
reference's rule from its formula (resize, output size, box scale, attribute softmax, the
d2-maxnms selection, given boxes) and compares tensors.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import nms, roi_pool

from lighthead.extract.regions.batching import (
    Prepare,
    detectron2_size,
    image_scale,
    plan_resize,
    resize_like_pillow9,
    resized_size,
)
from lighthead.extract.regions.box_selection import maxnms_thresholds
from lighthead.extract.regions.checkpoints import format_config, state_for_export
from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
from lighthead.extract.regions.model import BottomUpDetector, init_random
from lighthead.extract.regions.runner import extract_regions, item_fields
from tests.extract.regions.conftest import noise_images

MEAN = np.array((102.9801, 115.9465, 122.7717), np.float32)


def _cfg(fmt: str, **overrides) -> DetectorConfig:
    return format_config(fmt, DetectorConfig.from_name("tiny", **overrides), True)


@pytest.fixture(scope="module")
def d2_model() -> BottomUpDetector:
    return init_random(BottomUpDetector(_cfg("d2-pkl")), seed=3)


@pytest.fixture(scope="module")
def bua_model() -> BottomUpDetector:
    return init_random(BottomUpDetector(_cfg("bua-pth")), seed=3)


def test_each_format_runs_its_own_rules():
    d2, bua = _cfg("d2-pkl"), _cfg("bua-pth")
    assert (d2.resize, d2.attr_softmax, d2.conventions) == ("pil", "real", "detectron2")
    assert (bua.resize, bua.attr_softmax, bua.conventions) == ("cv2", "all", "caffe")
    default = DetectorConfig()
    assert (default.resize, default.attr_softmax, default.conventions) == ("cv2", "all", "caffe")
    with pytest.raises(ValueError, match="resize"):
        DetectorConfig(resize="bicubic")
    with pytest.raises(ValueError, match="attr_softmax"):
        DetectorConfig(attr_softmax="400")


# --- 1. resize ---------------------------------------------------------------------------------


def _detectron2_prepare(rgb: np.ndarray, new_h: int, new_w: int) -> torch.Tensor:
    """What py-bottom-up-attention feeds the network: cv2.imread's BGR array through
    detectron2's ResizeTransform.apply_image (PIL), then `image - pixel_mean`."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    # Pillow 9's resize (py-bottom-up-attention's Pillow), checked against bytes Pillow 9.5 wrote
    # in test_pillow9_resize.py; a plain `.resize` under Pillow >= 10 differs on tall shrinks.
    resized = np.asarray(resize_like_pillow9(Image.fromarray(bgr), new_w, new_h))
    chw = resized.astype("float32").transpose(2, 0, 1)
    return torch.from_numpy(chw) - torch.from_numpy(MEAN).reshape(3, 1, 1)


@pytest.mark.parametrize("hw", [(150, 230), (61, 47), (300, 128), (96, 160), (20, 400)])
def test_pil_rule_equals_detectron2_resize_transform(hw):
    h, w = hw
    rng = np.random.default_rng(h * w)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # high frequencies: antialiasing shows
    cfg = _cfg("d2-pkl")
    out = Prepare(cfg)(Image.fromarray(rgb))
    new_h, new_w = detectron2_size(h, w, cfg.min_size, cfg.max_size)
    assert out["size"] == (new_h, new_w) and out["scale"] == (new_h / h, new_w / w)
    assert torch.equal(out["image"], _detectron2_prepare(rgb, new_h, new_w))


def test_pil_and_cv2_rules_differ_when_shrinking():
    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    pil = Prepare(_cfg("d2-pkl"))(Image.fromarray(rgb))["image"]
    cv2 = Prepare(_cfg("bua-pth"))(Image.fromarray(rgb))["image"]
    assert pil.shape == cv2.shape == (3, 96, 128)
    # the antialiased resize averages the noise away; the plain bilinear one keeps much of it
    assert (pil - cv2).abs().max() > 20 and pil.std() < 0.8 * cv2.std()


def test_cv2_rule_subtracts_the_mean_before_a_plain_bilinear_resize():
    """py-faster-rcnn: float image minus the mean, cv2.resize(fx=fy=scale, INTER_LINEAR)."""
    rgb = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = Prepare(_cfg("bua-pth"))(Image.fromarray(rgb))
    scale = 96 / 40
    assert out["size"] == (96, 120) and out["scale"] == (scale, scale)
    # cv2's INTER_LINEAR written out: source coordinate (dst + 0.5) / scale - 0.5, clamped
    src = np.asarray(rgb[:, :, ::-1], np.float64) - MEAN  # (40, 50, 3)

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) / scale - 0.5, 0, None)
        i0 = np.minimum(np.floor(pos).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, pos - i0

    y0, y1, fy = axis(96, 40)
    x0, x1, fx = axis(120, 50)
    rows = src[y0] * (1 - fy)[:, None, None] + src[y1] * fy[:, None, None]
    want = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    assert np.allclose(out["image"].permute(1, 2, 0).numpy(), want, atol=1e-3)


# --- 2. output size and the max-size rule ------------------------------------------------------


def _reference_sizes(h: np.ndarray, w: np.ndarray, mn: int, mx: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both references' output sizes, vectorised over many images, float64 as in Python.

    A side that rounds to 0 (a 1 x 2000 image) stops both references (PIL and cv2 refuse an
    empty size); it is 1 here, as in lighthead."""
    h, w = h.astype(np.float64), w.astype(np.float64)
    # detectron2 ResizeShortestEdge.get_transform: max_size tested before rounding, int(x + 0.5)
    s = mn * 1.0 / np.minimum(h, w)
    nh, nw = np.where(h < w, float(mn), s * h), np.where(h < w, s * w, float(mn))
    longer = np.maximum(nh, nw)
    shrink = np.where(longer > mx, mx * 1.0 / longer, 1.0)
    nh, nw = np.where(longer > mx, nh * shrink, nh), np.where(longer > mx, nw * shrink, nw)
    pil = (np.maximum(1, (nh + 0.5).astype(np.int64)), np.maximum(1, (nw + 0.5).astype(np.int64)))
    # py-faster-rcnn _get_image_blob: np.round(scale * long) > max_size; cv2 dsize = cvRound (half to even)
    s = float(mn) / np.minimum(h, w)
    s = np.where(np.round(s * np.maximum(h, w)) > mx, float(mx) / np.maximum(h, w), s)
    cv2 = (np.maximum(1, np.rint(h * s).astype(np.int64)), np.maximum(1, np.rint(w * s).astype(np.int64)))
    return {"pil": pil, "cv2": cv2}


@pytest.mark.parametrize("scale", [(600, 1000), (800, 1333)])
def test_output_sizes_over_a_sweep_of_image_sizes(scale):
    mn, mx = scale
    grid = np.arange(1, 2001, 13)
    pairs = {(int(a), int(b)) for a in grid for b in grid}
    for side in range(1, 2001):  # every side against the widths where the rules meet their limits
        for other in (16, 600, 1000, 1197, 1333, 2000):
            pairs |= {(side, other), (other, side)}
    hs, ws = (np.array(v) for v in zip(*sorted(pairs)))
    ref = _reference_sizes(hs, ws, mn, mx)
    for rule in ("pil", "cv2"):
        cfg = replace(DetectorConfig(), min_size=mn, max_size=mx, resize=rule)
        got = np.array([plan_resize(int(h), int(w), cfg)[0] for h, w in zip(hs, ws)])
        assert np.array_equal(got[:, 0], ref[rule][0]) and np.array_equal(got[:, 1], ref[rule][1]), rule
    # the sweep reaches the sizes where the two references disagree by a pixel
    differ = (ref["pil"][0] != ref["cv2"][0]) | (ref["pil"][1] != ref["cv2"][1])
    assert differ.sum() > 20 and (np.abs(ref["pil"][0] - ref["cv2"][0]) <= 1).all()


def test_known_sizes_of_each_rule():
    # 1197 x 2000: py-faster-rcnn's rounded long side 1002 passes 1000 -> scale 0.5, 598.5 -> 598 (cvRound)
    assert image_scale(1197, 2000, 600, 1000) == 0.5 and resized_size(1197, 2000, 0.5) == (598, 1000)
    assert detectron2_size(1197, 2000, 600, 1000) == (599, 1000)  # 598.50.. rounded half up
    # 1 x 16: scale 1000/16 = 62.5 exactly
    assert resized_size(1, 16, image_scale(1, 16, 600, 1000)) == (62, 1000)
    assert detectron2_size(1, 16, 600, 1000) == (63, 1000)
    # detectron2 compares the unrounded long side: 9 x 15 -> 1000.0000000000001 > 1000 shrinks it
    assert 600 / 9 * 15 > 1000 and round(600 / 9 * 15) == 1000
    assert detectron2_size(9, 15, 600, 1000) == (600, 1000)
    assert image_scale(9, 15, 600, 1000) == 600 / 9  # py-faster-rcnn keeps the short-side scale


# --- 3. box scale --------------------------------------------------------------------------------


def _scale_boxes(boxes: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """detectron2's Boxes.scale: x coordinates times scale_x, y coordinates times scale_y."""
    out = boxes.clone()
    out[:, 0::2] *= sx
    out[:, 1::2] *= sy
    return out


def test_pil_rule_scales_x_and_y_separately(d2_model):
    orig_h, orig_w = 23, 41  # tiny test scale 96/160: 96 x 171.1 -> shrunk to 89.77 x 160 -> 90 x 160
    (h, w), (sy, sx) = plan_resize(orig_h, orig_w, d2_model.cfg)
    assert (h, w) == (90, 160) and sy == 90 / 23 and sx == 160 / 41 and abs(sy / sx - 1) > 2e-3
    x = noise_images([(h, w)], seed=5)[0]
    given = torch.tensor([[2.0, 3.0, 20.0, 15.0], [10.5, 0.0, 41.0, 23.0]])
    out = d2_model(x[None], [(h, w)], [(sy, sx)], boxes=[given])[0]
    assert torch.equal(out["rois"], _scale_boxes(given, sx, sy))  # given-box demo: boxes.scale(sx, sy)
    assert torch.equal(out["boxes"], given)
    # detections: detector_postprocess scales by original / resized per axis and clips to the original
    det = d2_model(x[None], [(h, w)], [(sy, sx)])[0]
    want = _scale_boxes(det["rois"], orig_w / w, orig_h / h)
    want[:, 0::2] = want[:, 0::2].clamp(0, orig_w)
    want[:, 1::2] = want[:, 1::2].clamp(0, orig_h)
    assert torch.equal(det["boxes"], want)
    one_scale = det["rois"] / sy
    assert (det["boxes"] - one_scale).abs().max() > 0.1  # one scale would be off by a fraction of a pixel


def test_cv2_rule_uses_one_scale_both_ways(bua_model):
    (h, w), (sy, sx) = plan_resize(23, 41, bua_model.cfg)
    assert sy == sx == 160 / 41 and (h, w) == (90, 160)
    x = noise_images([(h, w)], seed=5)[0]
    given = torch.tensor([[2.0, 3.0, 20.0, 15.0]])
    out = bua_model(x[None], [(h, w)], [(sy, sx)], boxes=[given])[0]
    assert torch.equal(out["rois"], given * sy)  # bua: bbox * im_scale
    det = bua_model(x[None], [(h, w)], [(sy, sx)])[0]
    assert torch.equal(det["boxes"], det["rois"] / sy)  # generate_tsv.py / bua: rois / im_scale, no clip


# --- 4. attribute scores -------------------------------------------------------------------------


def _attr_hidden(model: BottomUpDetector, feats: torch.Tensor) -> torch.Tensor:
    head = model.roi_heads.attribute_head
    cls_logits = model.roi_heads.box_predictor.cls_score(feats)
    return F.relu(head.fc_attr(torch.cat([feats, head.cls_embedding(cls_logits.argmax(1))], 1)))


@pytest.mark.parametrize("fmt", ["d2-pkl", "bua-pth"])
def test_attribute_scores_follow_each_reference(fmt, d2_model, bua_model):
    model = d2_model if fmt == "d2-pkl" else bua_model
    x = noise_images([(96, 128)], seed=6)[0]
    given = torch.tensor([[0.0, 0.0, 60.0, 50.0], [30.0, 20.0, 127.0, 95.0], [10.0, 40.0, 50.0, 90.0]])
    out = model(x[None], [(96, 128)], [1.0], boxes=[given])[0]
    region = model.regions([out], SelectionConfig(mode="given"))[0]
    with torch.inference_mode():
        hidden = _attr_hidden(model, out["features"])
    state = state_for_export(model, fmt)  # the weights in the file's own layout
    if fmt == "d2-pkl":  # py-bottom-up-attention: pred_attr_logits[..., :-1].softmax(-1), "no attribute" last
        w, b = state["roi_heads.box_predictor.attr_score.weight"], state["roi_heads.box_predictor.attr_score.bias"]
        logits = hidden @ torch.from_numpy(w).T + torch.from_numpy(b)
        scores, ids = logits[:, :-1].softmax(-1).max(-1)
    else:  # bua: F.softmax over all 401 outputs, then the best of columns 1..400
        w, b = state["roi_heads.box_predictor.attr_linear2.weight"], state["roi_heads.box_predictor.attr_linear2.bias"]
        logits = hidden @ torch.from_numpy(w).T + torch.from_numpy(b)
        scores, ids = logits.softmax(-1)[:, 1:].max(-1)
    assert torch.equal(region["attr_ids"], ids)
    assert torch.allclose(region["attr_scores"], scores, atol=1e-6)
    other = replace(model.cfg, attr_softmax="all" if fmt == "d2-pkl" else "real")
    swapped = BottomUpDetector(other)
    swapped.load_state_dict(model.state_dict())
    alt = swapped.regions(swapped(x[None], [(96, 128)], [1.0], boxes=[given]), SelectionConfig(mode="given"))[0]
    assert torch.equal(alt["attr_ids"], ids)  # the best attribute is the same ...
    assert (alt["attr_scores"] - scores).abs().min() > 1e-4  # ... its score is not


# --- 5. the d2-maxnms selection ------------------------------------------------------------------


def _d2_apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights=(10.0, 10.0, 5.0, 5.0)) -> torch.Tensor:
    """detectron2's Box2BoxTransform.apply_deltas, for (R, 4K) deltas of (R, 4) boxes."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0::4] / weights[0], deltas[:, 1::4] / weights[1]
    dw = (deltas[:, 2::4] / weights[2]).clamp(max=np.log(1000.0 / 16))
    dh = (deltas[:, 3::4] / weights[3]).clamp(max=np.log(1000.0 / 16))
    px, py = dx * widths[:, None] + cx[:, None], dy * heights[:, None] + cy[:, None]
    pw, ph = torch.exp(dw) * widths[:, None], torch.exp(dh) * heights[:, None]
    out = torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], dim=-1)  # (R, K, 4)
    return out.reshape(deltas.shape)


def _reference_maxnms(out: dict, k: int, orig_hw: tuple[int, int]):
    """detectron2_mscoco_proposal_maxnms.py written out, on detectron2's layout (background last)."""
    probs = torch.cat([out["cls_prob"][:, 1:], out["cls_prob"][:, :1]], dim=1)  # (R, C): background last
    deltas = out["deltas"][:, 4:]  # detectron2 regresses the real classes only
    boxes = _d2_apply_deltas(deltas, out["rois"]).reshape(-1, 4)
    h, w = out["image_size"]
    boxes = torch.stack(
        [boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1
    ).reshape(len(probs), -1, 4)
    scores = probs[:, :-1]
    max_scores, max_classes = scores.max(1)
    max_boxes = boxes[torch.arange(len(probs)), max_classes]
    for thresh in np.arange(0.3, 1.0, 0.1):
        keep = nms(max_boxes, max_scores, thresh)[:k]
        if len(keep) >= k:
            break
    final = _scale_boxes(max_boxes[keep], orig_hw[1] / w, orig_hw[0] / h)  # detector_postprocess
    final[:, 0::2] = final[:, 0::2].clamp(0, orig_hw[1])
    final[:, 1::2] = final[:, 1::2].clamp(0, orig_hw[0])
    return keep, final, max_classes[keep], max_scores[keep], float(thresh)


def test_maxnms_equals_the_lxmert_script(d2_model):
    x = noise_images([(96, 150)], seed=7)[0]
    orig = (64, 99)
    scale = (96 / 64, 150 / 99)
    out = d2_model(x[None], [(96, 150)], [scale])[0]
    R = out["rois"].shape[0]
    used = set()
    for k in (5, 20, 35, R + 5):
        keep, boxes, classes, scores, thresh = _reference_maxnms(out, k, orig)
        used.add(round(thresh, 1))
        got = d2_model.regions([out], SelectionConfig(mode="d2-maxnms", num_boxes=k))[0]
        assert torch.equal(got["features"], out["features"][keep])
        assert torch.allclose(got["boxes"], boxes, atol=1e-4)
        assert torch.equal(got["object_ids"], classes) and torch.equal(got["object_scores"], scores)
        assert (got["boxes"][:, 2] <= orig[1]).all() and (got["boxes"][:, 3] <= orig[0]).all()
    assert len(used) >= 2 and 0.9 in used  # raised thresholds were needed, and K = R + 5 never fills


def test_maxnms_on_crafted_boxes():
    """Known outcomes: which boxes survive at which threshold, and the best class's deltas decide."""
    cfg = _cfg("d2-pkl", num_classes=3)
    model = BottomUpDetector(cfg)
    rois = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # A 0.90
            [0.0, 0.0, 10.0, 28.0],  # C 0.80: IoU(A, C) = 100 / 280 = 0.36
            [50.0, 50.0, 60.0, 60.0],  # D 0.70: far away
            [0.0, 0.0, 10.0, 12.0],  # B 0.60: IoU(A, B) = 0.83
            [0.0, 0.0, 10.0, 10.0],
        ]
    )  # E 0.65: A's copy, moved away by its best class's deltas
    cls_prob = torch.tensor([[0.05, 0.90, 0.05], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.3, 0.6, 0.1], [0.3, 0.05, 0.65]])
    deltas = torch.zeros(5, 12)  # (R, 4C), background first
    deltas[4, 8:10] = torch.tensor([60.0, 60.0])  # E's class 2: dx = dy = 60 / 10 widths -> +60 px
    out = {
        "rois": rois,
        "deltas": deltas,
        "cls_prob": cls_prob,
        "boxes": rois.clone(),
        "features": torch.arange(5.0)[:, None],
        "image_size": (100, 100),
        "scale": (1.0, 1.0),
    }

    def kept(k: int) -> list[float]:
        return model.regions([out], SelectionConfig(mode="d2-maxnms", num_boxes=k))[0]["features"][:, 0].tolist()

    assert kept(3) == [0.0, 2.0, 4.0]  # 0.3: C and B lie on A; E moved off it
    assert kept(4) == [0.0, 1.0, 2.0, 4.0]  # 0.3 keeps 3 < 4 -> 0.4 keeps C (0.36)
    assert kept(5) == [0.0, 1.0, 2.0, 4.0, 3.0]  # B (0.83) needs 0.9
    assert kept(2) == [0.0, 2.0]  # the K best of the first threshold that keeps K
    got = model.regions([out], SelectionConfig(mode="d2-maxnms", num_boxes=4))[0]
    assert torch.allclose(got["boxes"][3], torch.tensor([60.0, 60.0, 70.0, 70.0]))
    assert got["object_ids"].tolist() == [0, 0, 1, 1] and torch.allclose(got["confidence"], got["object_scores"])
    assert maxnms_thresholds(0.3) == list(np.arange(0.3, 1.0, 0.1)) and len(maxnms_thresholds(0.3)) == 7


def test_maxnms_through_the_extraction_loop(d2_model, tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (70, 101, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    sel = SelectionConfig(mode="d2-maxnms", num_boxes=60)  # more than the tiny model's 50 ROIs: padded
    got = {}
    stats = extract_regions(d2_model, [("a", str(tmp_path / "a.png"))], got.__setitem__, sel, loader_workers=0)
    assert stats.written == 1
    item = got["a"]
    fields = {n: s for n, s, _ in item_fields(sel, d2_model.cfg.feature_dim)}
    assert item["features"].shape == fields["features"] == (60, d2_model.cfg.feature_dim)
    n = int(item["num_boxes"])
    assert 0 < n < 60 and (item["object_ids"][n:] == -1).all()
    b = item["boxes"][:n]
    assert (b >= 0).all() and (b[:, 2] <= 101).all() and (b[:, 3] <= 70).all()
    assert sel.rule == "max-class regressed" and SelectionConfig(mode="given").rule == "given"


def test_selection_for_a_job():
    assert SelectionConfig.for_job("fixed", 36, "d2-maxnms") == SelectionConfig(mode="d2-maxnms", num_boxes=36)
    assert SelectionConfig.for_job("fixed", 100, None) == SelectionConfig(num_boxes=100)
    assert SelectionConfig.for_job("adaptive", 100, "generate_tsv").mode == "adaptive"
    with pytest.raises(ValueError, match="fixed number"):
        SelectionConfig.for_job("adaptive", 100, "d2-maxnms")
    with pytest.raises(ValueError, match="unknown selection"):
        SelectionConfig.for_job("fixed", 36, "maxnms")


# --- 6. given boxes outside the image --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["d2-pkl", "bua-pth"])
def test_given_boxes_outside_the_image_are_kept_as_given(fmt, d2_model, bua_model):
    model = d2_model if fmt == "d2-pkl" else bua_model
    x = noise_images([(96, 128)], seed=8)[0]
    scale = (1.5, 1.6) if fmt == "d2-pkl" else (1.5, 1.5)
    given = torch.tensor(
        [
            [-20.0, -10.0, 40.0, 30.0],  # over the top-left corner
            [50.0, 40.0, 120.0, 90.0],  # past the bottom-right corner
            [200.0, 200.0, 260.0, 240.0],  # wholly outside
            [5.0, 5.0, 30.0, 30.0],
        ]
    )  # inside
    out = model(x[None], [(96, 128)], [scale], boxes=[given])[0]
    assert torch.equal(out["boxes"], given)
    rois = _scale_boxes(given, scale[1], scale[0])
    assert torch.equal(out["rois"], rois)
    with torch.inference_mode():  # what both references do: ROI pooling on the scaled, unclipped boxes
        res4, _ = model.backbone(x[None])
        pooled = roi_pool(res4, torch.cat([torch.zeros(4, 1), rois], 1), model.cfg.pool_size, 1 / 16)
        want = model.roi_heads.res5(pooled).mean(dim=(2, 3))
        clipped = torch.stack(
            [rois[:, 0].clamp(0, 128), rois[:, 1].clamp(0, 96), rois[:, 2].clamp(0, 128), rois[:, 3].clamp(0, 96)], 1
        )
        pooled = roi_pool(res4, torch.cat([torch.zeros(4, 1), clipped], 1), model.cfg.pool_size, 1 / 16)
        if_clipped = model.roi_heads.res5(pooled).mean(dim=(2, 3))
    assert torch.allclose(out["features"], want, atol=1e-5)
    assert (out["features"][:2] - if_clipped[:2]).abs().max() > 1e-3  # clipping would change them
    # batched beside a larger image, the boxes reach into padding: the features stay the same
    big = noise_images([(128, 160)], seed=9)[0]
    canvas = torch.zeros(2, 3, 128, 160)
    canvas[0, :, :96, :128], canvas[1] = x, big
    both = model(canvas, [(96, 128), (128, 160)], [scale, scale], boxes=[given, given])
    assert torch.allclose(both[0]["features"], out["features"], atol=1e-5)
