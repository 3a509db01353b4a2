"""Checkpoint loading: every format maps exactly; bad files are refused by name, nothing runs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from lighthead.extract.regions.checkpoints import (
    CheckpointError,
    export_checkpoint,
    format_config,
    load_checkpoint,
    read_pickle,
    state_for_export,
)
from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
from lighthead.extract.regions.model import BottomUpDetector, init_random
from tests.extract.regions.conftest import noise_images


def _model(cfg: DetectorConfig, fmt: str, attributes: bool = True) -> BottomUpDetector:
    model = init_random(BottomUpDetector(format_config(fmt, cfg, attributes)), seed=5)
    if fmt == "d2-pkl":  # detectron2 has no background box regression: make it zero to compare
        with torch.no_grad():
            model.roi_heads.box_predictor.bbox_pred.weight[:4] = 0
            model.roi_heads.box_predictor.bbox_pred.bias[:4] = 0
    return model


@pytest.mark.parametrize("fmt,ext", [("d2-pkl", "pkl"), ("bua-pth", "pth"), ("safetensors", "safetensors")])
def test_generated_checkpoint_loads_exactly(tmp_path, tiny_cfg, fmt, ext):
    model = _model(tiny_cfg, fmt)
    path = export_checkpoint(model, tmp_path / f"w.{ext}", fmt)
    loaded, report = load_checkpoint(path, tiny_cfg)
    assert report.format == fmt and len(report.sha256) == 64
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.cfg.conventions == ("detectron2" if fmt == "d2-pkl" else "caffe")
    x = noise_images([(96, 120)])[0]
    a = model.regions(model(x[None], [(96, 120)], [1.0]), SelectionConfig(num_boxes=10))[0]
    b = loaded.regions(loaded(x[None], [(96, 120)], [1.0]), SelectionConfig(num_boxes=10))[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["features"], b["features"])


def test_d2_layout_is_background_last_and_bua_rpn_is_two_way(tiny_cfg):
    model = _model(tiny_cfg, "d2-pkl")
    d2 = state_for_export(model, "d2-pkl")
    ours = {k: v.numpy() for k, v in model.state_dict().items()}
    cls = ours["roi_heads.box_predictor.cls_score.weight"]
    assert np.array_equal(d2["roi_heads.box_predictor.cls_score.weight"][-1], cls[0])  # background moved last
    assert np.array_equal(d2["roi_heads.box_predictor.cls_score.weight"][0], cls[1])
    assert d2["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 4 * (tiny_cfg.num_classes - 1)
    assert np.array_equal(
        d2["roi_heads.box_predictor.attr_score.weight"][-1], ours["roi_heads.attribute_head.attr_score.weight"][0]
    )
    bua = state_for_export(_model(tiny_cfg, "bua-pth"), "bua-pth")
    w = bua["proposal_generator.rpn_head.objectness_logits.weight"]
    assert w.shape[0] == 2 * tiny_cfg.num_anchors
    assert "roi_heads.box_predictor.attr_linear2.weight" in bua and "roi_heads.box_predictor.cls_embed.weight" in bua


def test_bua_two_way_softmax_equals_our_sigmoid(tmp_path, tiny_cfg):
    """A bua .pth whose background logits are not zero: p(fg) of Caffe's softmax must be kept."""
    model = _model(tiny_cfg, "bua-pth")
    state = state_for_export(model, "bua-pth")
    key = "proposal_generator.rpn_head.objectness_logits"
    A = tiny_cfg.num_anchors
    rng = np.random.default_rng(0)
    bg_w = rng.normal(size=state[key + ".weight"][:A].shape).astype(np.float32)
    bg_b = rng.normal(size=A).astype(np.float32)
    state[key + ".weight"] = np.concatenate([bg_w, state[key + ".weight"][A:] + bg_w])
    state[key + ".bias"] = np.concatenate([bg_b, state[key + ".bias"][A:] + bg_b])
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "w.pth")
    loaded, _ = load_checkpoint(tmp_path / "w.pth", tiny_cfg)
    feat = torch.randn(1, tiny_cfg.rpn_hidden, 3, 3)
    with torch.no_grad():
        two_way = torch.nn.functional.conv2d(
            feat, torch.from_numpy(state[key + ".weight"]), torch.from_numpy(state[key + ".bias"])
        )
        p_fg = torch.softmax(two_way.reshape(1, 2, A, 3, 3), dim=1)[:, 1]  # Caffe's reshape + softmax
        ours = torch.sigmoid(loaded.rpn.objectness_logits(feat))
    assert torch.allclose(ours, p_fg, atol=1e-5)


def test_checkpoint_without_attributes_loads_without_the_head(tmp_path, tiny_cfg):
    model = _model(tiny_cfg, "d2-pkl", attributes=False)
    path = export_checkpoint(model, tmp_path / "noattr.pkl", "d2-pkl")
    loaded, _ = load_checkpoint(path, tiny_cfg)
    assert loaded.roi_heads.attribute_head is None
    x = noise_images([(80, 80)])[0]
    region = loaded.regions(loaded(x[None], [(80, 80)], [1.0]), SelectionConfig(num_boxes=5))[0]
    assert (region["attr_ids"] == -1).all()


def test_missing_key_is_refused_by_name(tmp_path, tiny_cfg):
    state = state_for_export(_model(tiny_cfg, "d2-pkl"), "d2-pkl")
    del state["backbone.res3.0.conv2.norm.running_var"]
    with open(tmp_path / "w.pkl", "wb") as fh:
        pickle.dump({"model": state}, fh)
    with pytest.raises(CheckpointError, match=r"missing keys: backbone\.res3\.0\.conv2\.norm\.running_var") as e:
        load_checkpoint(tmp_path / "w.pkl", tiny_cfg)
    assert "w.pkl" in str(e.value) and "nothing loaded" in str(e.value)


def test_wrong_shape_and_unexpected_key_are_refused_by_name(tmp_path, tiny_cfg):
    state = state_for_export(_model(tiny_cfg, "bua-pth"), "bua-pth")
    state["roi_heads.box_predictor.cls_score.weight"] = state["roi_heads.box_predictor.cls_score.weight"][:-1]
    state["roi_heads.mask_head.weight"] = np.zeros(3, np.float32)
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "w.pth", tiny_cfg)
    msg = str(e.value)
    assert "wrong shapes: roi_heads.box_predictor.cls_score.weight: shape (20," in msg
    assert "unexpected keys: roi_heads.mask_head.weight" in msg
    assert "missing" not in msg  # a mis-shaped key is reported once, as mis-shaped


def test_full_size_key_set_of_each_format_is_complete():
    """Every expected key of the real model is produced by, and mapped back from, each format."""
    model = BottomUpDetector(DetectorConfig())
    for fmt in ("d2-pkl", "bua-pth"):
        from lighthead.extract.regions.checkpoints import map_state

        state = state_for_export(model, fmt)
        assert len(state) == len(model.state_dict())
        mapped, _ = map_state(fmt, state, BottomUpDetector(format_config(fmt, DetectorConfig(), True)), "mem")
        assert set(mapped) == set(model.state_dict())


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, tiny_cfg):
    marker = tmp_path / "pwned"
    _Evil.marker = marker
    path = tmp_path / "faster_rcnn_from_caffe_attr.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": {"backbone.stem.conv1.weight": _Evil()}}, fh)
    with pytest.raises(CheckpointError, match=r"faster_rcnn_from_caffe_attr\.pkl: refused to load: .*system"):
        load_checkpoint(path, tiny_cfg)
    assert not marker.exists()


def test_restricted_unpickler_reads_numpy_pickles_of_every_protocol(tmp_path):
    data = {
        "model": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float64(1.5) * np.ones(2)},
        "__author__": "x",
    }
    for proto in (0, 2, 4, 5):
        path = tmp_path / f"p{proto}.pkl"
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=proto)
        got = read_pickle(path)
        assert np.array_equal(got["a"], data["model"]["a"]) and got["a"].dtype == np.float32


def test_torch_checkpoint_with_code_is_refused(tmp_path, tiny_cfg):
    torch.save({"model": {"x": _Evil()}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_checkpoint(tmp_path / "bad.pth", tiny_cfg)


def test_missing_file_and_unknown_type(tmp_path, tiny_cfg):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pkl", tiny_cfg)
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        load_checkpoint(tmp_path / "w.bin", tiny_cfg)
