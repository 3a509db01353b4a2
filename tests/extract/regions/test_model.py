"""The tiny detector end to end on CPU: shapes, batch and padding invariance, given boxes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_pool

from lighthead.extract.regions.batching import pad_batch
from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
from lighthead.extract.regions.model import BottomUpDetector, init_random
from tests.extract.regions.conftest import noise_images

SIZES = [(96, 128), (80, 150), (111, 97), (64, 64)]


def run(model, images, selection, boxes=None, divisibility=32):
    out = model(pad_batch(images, divisibility), [tuple(x.shape[1:]) for x in images], [1.0] * len(images), boxes)
    return out, model.regions(out, selection)


def test_end_to_end_shapes_and_ranges(tiny_model):
    cfg = tiny_model.cfg
    images = noise_images(SIZES[:2])
    out, regions = run(tiny_model, images, SelectionConfig(mode="fixed", num_boxes=20))
    for o, r, (h, w) in zip(out, regions, SIZES):
        R = o["boxes"].shape[0]
        assert 20 <= R <= cfg.rpn_post_nms_top_n
        assert o["features"].shape == (R, cfg.feature_dim) and o["cls_prob"].shape == (R, cfg.num_classes)
        assert o["attr_prob"].shape == (R, cfg.num_attributes)
        assert torch.isfinite(o["features"]).all()
        assert torch.allclose(o["cls_prob"].sum(1), torch.ones(R), atol=1e-5)
        b = r["boxes"]
        assert b.shape == (20, 4) and (b[:, 0] >= 0).all() and (b[:, 2] <= w - 1).all() and (b[:, 3] <= h - 1).all()
        assert (r["object_ids"] >= 0).all() and (r["object_ids"] < cfg.num_classes - 1).all()
        assert (r["attr_ids"] >= 0).all() and (r["attr_ids"] < cfg.num_attributes - 1).all()
        assert torch.all(r["confidence"][:-1] >= r["confidence"][1:])  # fixed K: most confident first


def test_batch_size_invariance(tiny_model):
    images = noise_images(SIZES)
    sel = SelectionConfig(mode="fixed", num_boxes=20)
    single = [run(tiny_model, [x], sel)[1][0] for x in images]
    _, batched = run(tiny_model, images, sel)
    for a, b in zip(single, batched):
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-4)
        assert torch.allclose(a["features"], b["features"], atol=1e-4)
        assert torch.equal(a["object_ids"], b["object_ids"]) and torch.equal(a["attr_ids"], b["attr_ids"])


def test_padding_invariance(tiny_model):
    """An image alone and unpadded gives what it gives padded into a much larger canvas."""
    x = noise_images([(90, 120)])[0]
    sel = SelectionConfig(mode="adaptive", conf_thresh=0.2, min_boxes=5, max_boxes=30)
    plain_out = tiny_model(x[None], [(90, 120)], [1.0])
    plain = tiny_model.regions(plain_out, sel)[0]
    canvas = torch.full((1, 3, 256, 320), 77.0)  # garbage in the padding must not leak
    canvas[0, :, :90, :120] = x
    padded = tiny_model.regions(tiny_model(canvas, [(90, 120)], [1.0]), sel)[0]
    assert torch.allclose(plain["boxes"], padded["boxes"], atol=1e-4)
    assert torch.allclose(plain["features"], padded["features"], atol=1e-4)
    res4_plain, _ = tiny_model.backbone(x[None])
    res4_pad, valid = tiny_model.backbone(canvas, [90], [120])
    h, w = valid.heights[0], valid.widths[0]
    assert (h, w) == tuple(res4_plain.shape[2:])
    assert torch.allclose(res4_pad[0, :, :h, :w], res4_plain[0], atol=1e-5)
    assert res4_pad[0, :, h:, :].abs().max() == 0 and res4_pad[0, :, :, w:].abs().max() == 0


@pytest.mark.parametrize("mode", ["fixed", "adaptive", "d2-maxnms", "given"])
def test_extreme_aspect_ratios_give_no_proposal_and_leave_the_batch_alone(tiny_model, mode):
    """1 x 5000 and 5000 x 1 images resize to 160 x 1 / 1 x 160 (a map with no valid cell at
    stride 16), and no box of them passes the 16 px minimum: no regions, not an error. Given
    boxes are pooled as usual; the other image of the batch gets what it gets alone."""
    from lighthead.extract.regions.batching import Prepare

    prepare = Prepare(tiny_model.cfg)
    tall, wide = (prepare(Image.new("RGB", size, (200, 30, 30))) for size in ((1, 5000), (5000, 1)))
    assert tall["size"] == (160, 1) and wide["size"] == (1, 160)
    normal = noise_images([(96, 128)])[0]
    if mode == "given":
        sel = SelectionConfig(mode="given")
    else:
        sel = SelectionConfig.for_job(
            "fixed" if mode != "adaptive" else mode, 20, "d2-maxnms" if mode == "d2-maxnms" else None
        )
    images = [tall["image"], wide["image"], normal]
    scales = [tall["scale"], wide["scale"], 1.0]
    boxes = [torch.tensor([[0.0, 0.0, 0.0, 40.0], [0.0, 0.0, 0.0, 4999.0]])] * 3 if mode == "given" else None
    out = tiny_model(pad_batch(images, 32), [tuple(x.shape[1:]) for x in images], scales, boxes)
    regions = tiny_model.regions(out, sel)
    alone = tiny_model.regions(tiny_model(pad_batch([normal], 32), [(96, 128)], [1.0], boxes and boxes[:1]), sel)[0]
    for r in regions[:2]:
        n = 2 if mode == "given" else 0
        assert r["boxes"].shape == (n, 4) and r["features"].shape == (n, tiny_model.cfg.feature_dim)
        assert r["object_ids"].shape == r["attr_scores"].shape == (n,)
        assert torch.isfinite(r["features"]).all()
    assert torch.allclose(regions[2]["features"], alone["features"], atol=1e-4)
    assert torch.equal(regions[2]["object_ids"], alone["object_ids"])


def test_given_boxes_equal_direct_roi_pool_res5_mean(tiny_model):
    x = noise_images([(100, 140)])[0]
    given = torch.tensor([[10.0, 12.0, 60.0, 70.0], [0.0, 0.0, 139.0, 99.0], [70.0, 40.0, 130.0, 95.0]])
    scale = 1.5  # boxes arrive in original pixels; the image was resized by 1.5
    out = tiny_model(x[None], [(100, 140)], [scale], boxes=[given / scale])[0]
    with torch.inference_mode():
        res4, _ = tiny_model.backbone(x[None])
        rois = torch.cat([torch.zeros(3, 1), given.clamp(min=0)], dim=1)
        pooled = roi_pool(res4, rois, output_size=tiny_model.cfg.pool_size, spatial_scale=1 / 16)
        feats = tiny_model.roi_heads.res5(pooled).mean(dim=(2, 3))
        probs = F.softmax(tiny_model.roi_heads.box_predictor.cls_score(feats), dim=1)
    assert torch.allclose(out["features"], feats, atol=1e-5)
    assert torch.allclose(out["cls_prob"], probs, atol=1e-5)
    assert torch.allclose(out["boxes"], given / scale, atol=1e-4)
    regions = tiny_model.regions([out], SelectionConfig(mode="given"))[0]
    assert regions["boxes"].shape == (3, 4)  # every given box, in order, no selection


def test_folding_batchnorm_keeps_the_outputs(tiny_cfg):
    model = init_random(BottomUpDetector(tiny_cfg), seed=3)
    gen = torch.Generator().manual_seed(5)  # its own generator: the result must not depend on earlier tests
    with torch.no_grad():  # non-trivial BN statistics, so folding has something to fold
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0, generator=gen)
            elif name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1, generator=gen)
    folded = copy.deepcopy(model).optimize_for_inference()
    images = noise_images(SIZES[:2])
    sel = SelectionConfig(mode="fixed", num_boxes=10)
    _, a = run(model, images, sel)
    _, b = run(folded, images, sel)
    for ra, rb in zip(a, b):
        assert torch.allclose(ra["features"], rb["features"], atol=1e-4, rtol=1e-4)
        assert torch.allclose(ra["boxes"], rb["boxes"], atol=1e-3)


def test_channels_last_gives_the_same_regions(tiny_cfg):
    model = init_random(BottomUpDetector(tiny_cfg), seed=0).optimize_for_inference()
    cl = copy.deepcopy(model).optimize_for_inference(channels_last=True)
    images = noise_images(SIZES[:2])
    sel = SelectionConfig(mode="fixed", num_boxes=10)
    for ra, rb in zip(run(model, images, sel)[1], run(cl, images, sel)[1]):
        assert torch.allclose(ra["features"], rb["features"], atol=1e-4)


def test_full_size_architecture_matches_the_caffe_model():
    """ResNet-101 C4 with the VG head: layer counts and shapes of the Caffe prototxt."""
    model = BottomUpDetector(DetectorConfig())
    sd = model.state_dict()
    assert len(model.backbone.res4) == 23 and len(model.roi_heads.res5.blocks) == 3
    assert sd["rpn.conv.weight"].shape == (512, 1024, 3, 3)
    assert sd["rpn.objectness_logits.weight"].shape == (12, 512, 1, 1)
    assert sd["rpn.anchor_deltas.weight"].shape == (48, 512, 1, 1)
    assert sd["roi_heads.box_predictor.cls_score.weight"].shape == (1601, 2048)
    assert sd["roi_heads.box_predictor.bbox_pred.weight"].shape == (6404, 2048)
    assert sd["roi_heads.attribute_head.cls_embedding.weight"].shape == (1601, 256)
    assert sd["roi_heads.attribute_head.fc_attr.weight"].shape == (512, 2304)
    assert sd["roi_heads.attribute_head.attr_score.weight"].shape == (401, 512)
    block = model.roi_heads.res5.blocks[0]
    assert block.conv1.stride == (1, 1) and block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
    assert model.backbone.res3[0].conv1.stride == (2, 2) and model.backbone.res3[0].conv2.stride == (1, 1)


def test_eval_only(tiny_model):
    with pytest.raises(RuntimeError):
        tiny_model.train()


def test_runs_under_bf16_autocast_with_float32_boxes(tiny_model):
    """The GPU path (autocast) exercised on the CPU: boxes and scores stay float32."""
    x = noise_images([(96, 128)])[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_model(x[None], [(96, 128)], [1.0])[0]
    assert out["boxes"].dtype == torch.float32 and out["cls_prob"].dtype == torch.float32
    assert out["features"].dtype == torch.float32 and torch.isfinite(out["features"]).all()
    given = [torch.tensor([[4.0, 6.0, 70.0, 80.0], [30.0, 10.0, 120.0, 90.0]])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = tiny_model(x[None], [(96, 128)], [1.0], boxes=given)[0]["features"]
    full = tiny_model(x[None], [(96, 128)], [1.0], boxes=given)[0]["features"]
    assert (half - full).norm() / full.norm() < 0.05  # bf16 convolutions move features by about 1%
