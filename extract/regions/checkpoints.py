"""Load the bottom-up-attention checkpoints users already have, exactly, and our safetensors export.

Formats:
- "d2-pkl": py-bottom-up-attention's `faster_rcnn_from_caffe.pkl` / `faster_rcnn_from_caffe_attr.pkl`,
  a pickle of numpy arrays under detectron2 names (background class and "no attribute" last,
  1600 x 4 box deltas, one sigmoid logit per anchor). Read with a restricted unpickler.
- "bua-pth": bottom-up-attention.pytorch's `bua-caffe-frcn-r101_with_attributes.pth` (Caffe
  layouts: background first, 1601 x 4 deltas, two-way softmax RPN). Read with
  `torch.load(weights_only=True)`.
- "safetensors": our own export of the canonical state dict plus its config.

Every format is mapped onto our canonical state dict (Caffe class layout). The load is all or
nothing: a missing, unexpected or mis-shaped key is reported by name and nothing is loaded.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lighthead.extract.regions.config import DetectorConfig
from lighthead.extract.regions.model import BottomUpDetector
from lighthead.extract.torch_files import TorchFileError, load_tensors
from lighthead.store import sha256_file
from lighthead.store.safe_pickle import CHECKPOINT_ARRAYS, UnsafePickle, restricted_load

FORMATS = ("d2-pkl", "bua-pth", "safetensors")
# Entries that carry no weights: BatchNorm step counters of a trained-then-frozen model.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
D2_ANCHOR_KEY = "proposal_generator.anchor_generator.cell_anchors.0"


class CheckpointError(Exception):
    """A checkpoint is unreadable, unsafe, or does not match the model; the message says why."""


@dataclass
class LoadReport:
    """What loading a checkpoint did."""

    path: str  # the file
    format: str  # one of FORMATS
    sha256: str  # of the file
    config: DetectorConfig  # the config the weights were loaded into
    notes: list[str] = field(default_factory=list)  # conversions applied, for the store attrs


# ---------------------------------------------------------------------------------------------
# Reading files safely


def read_pickle(path: Path) -> dict[str, np.ndarray]:
    """The name -> array dict of a detectron2-style pickle, read without running any code."""
    try:
        with open(path, "rb") as fh:
            # Python 2 pickles of numpy arrays need latin1
            data = restricted_load(fh, CHECKPOINT_ARRAYS, encoding="latin1")
    except UnsafePickle as exc:
        what = f"asks for {exc.module}.{exc.name}" if exc.module else "uses persistent ids"
        raise CheckpointError(
            f"{path}: refused to load: the pickle {what}; a checkpoint pickle "
            "may hold only numpy arrays, dtypes and plain containers (is this file what you think it is?)"
        ) from None
    except Exception as exc:  # truncated or not a pickle at all
        raise CheckpointError(f"{path}: not a readable checkpoint pickle ({type(exc).__name__}: {exc})") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]  # detectron2 model-zoo layout: {"model": {...}, "__author__": ...}
    elif isinstance(data, dict) and isinstance(data.get("blobs"), dict):
        data = data["blobs"]  # Caffe2/Detectron1 layout
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of arrays, found {type(data).__name__}")
    return _arrays(data, path)


def read_torch(path: Path) -> dict[str, np.ndarray]:
    """The name -> array dict of a `.pth`, read with `torch.load(weights_only=True)`."""
    try:
        data = load_tensors(path)
    except TorchFileError as exc:
        raise CheckpointError(str(exc)) from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    elif isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(data).__name__}")
    return _arrays(data, path)


def _arrays(data: dict, path: Path) -> dict[str, np.ndarray]:
    out = {}
    for k, v in data.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        if not isinstance(k, str) or not isinstance(v, np.ndarray) or v.dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: entry {k!r} is not a numeric array ({type(v).__name__})")
        out[k] = v
    return out


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        return "d2-pkl"
    if suffix in (".pth", ".pt"):
        return "bua-pth"
    if suffix == ".safetensors":
        return "safetensors"
    raise CheckpointError(f"{path}: unknown checkpoint type {suffix!r}; expected .pkl, .pth or .safetensors")


# ---------------------------------------------------------------------------------------------
# Key maps. Each format: rename(source key) -> our key (or None) and per-key value transforms.


def _bg_first(a: np.ndarray) -> np.ndarray:
    """Rows with the background (or "no attribute") last -> first."""
    return np.concatenate([a[-1:], a[:-1]], axis=0)


def _bg_last(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[1:], a[:1]], axis=0)


def _common_rename(key: str) -> str | None:
    if key.startswith("backbone."):
        return key
    if key.startswith("proposal_generator.rpn_head."):
        return "rpn." + key[len("proposal_generator.rpn_head.") :]
    if key.startswith("roi_heads.res5."):
        return "roi_heads.res5.blocks." + key[len("roi_heads.res5.") :]
    if key.startswith("roi_heads.box_predictor.cls_score.") or key.startswith("roi_heads.box_predictor.bbox_pred."):
        return key
    return None


def _d2_rename(key: str) -> str | None:
    for src in ("cls_embedding", "fc_attr", "attr_score"):
        if key.startswith(f"roi_heads.box_predictor.{src}."):
            return f"roi_heads.attribute_head.{src}." + key.rsplit(".", 1)[1]
    return _common_rename(key)


def _bua_rename(key: str) -> str | None:
    for src, ours in (("cls_embed", "cls_embedding"), ("attr_linear1", "fc_attr"), ("attr_linear2", "attr_score")):
        if key.startswith(f"roi_heads.box_predictor.{src}."):
            return f"roi_heads.attribute_head.{ours}." + key.rsplit(".", 1)[1]
    return _common_rename(key)


def _d2_in(key: str, a: np.ndarray) -> np.ndarray:
    if key.startswith(
        (
            "roi_heads.box_predictor.cls_score.",
            "roi_heads.attribute_head.cls_embedding.",
            "roi_heads.attribute_head.attr_score.",
        )
    ):
        return _bg_first(a)
    if key.startswith("roi_heads.box_predictor.bbox_pred."):
        # detectron2 regresses the 1600 objects only; background rows are never used: zeros.
        return np.concatenate([np.zeros((4,) + a.shape[1:], a.dtype), a], axis=0)
    return a


def _d2_out(key: str, a: np.ndarray) -> np.ndarray:
    if key.startswith(
        (
            "roi_heads.box_predictor.cls_score.",
            "roi_heads.attribute_head.cls_embedding.",
            "roi_heads.attribute_head.attr_score.",
        )
    ):
        return _bg_last(a)
    if key.startswith("roi_heads.box_predictor.bbox_pred."):
        return a[4:]
    return a


def _bua_in(key: str, a: np.ndarray) -> np.ndarray:
    if key.startswith("rpn.objectness_logits."):
        # Caffe two-way softmax over (bg, fg): channels [0, A) are bg, [A, 2A) fg; p(fg) = sigmoid(fg - bg).
        half = a.shape[0] // 2
        return a[half:] - a[:half] if a.shape[0] % 2 == 0 else a
    return a


def _bua_out(key: str, a: np.ndarray) -> np.ndarray:
    if key.startswith("rpn.objectness_logits."):
        return np.concatenate([np.zeros_like(a), a], axis=0)
    return a


_MAPS: dict[str, tuple[Callable[[str], str | None], Callable, Callable]] = {
    "d2-pkl": (_d2_rename, _d2_in, _d2_out),
    "bua-pth": (_bua_rename, _bua_in, _bua_out),
}


def _to_source_key(fmt: str, ours: str) -> str:
    """Our key -> the key the source format uses (the inverse of the rename)."""
    if ours.startswith("rpn."):
        return "proposal_generator.rpn_head." + ours[len("rpn.") :]
    if ours.startswith("roi_heads.res5.blocks."):
        return "roi_heads.res5." + ours[len("roi_heads.res5.blocks.") :]
    if ours.startswith("roi_heads.attribute_head."):
        name, param = ours[len("roi_heads.attribute_head.") :].rsplit(".", 1)
        if fmt == "bua-pth":
            name = {"cls_embedding": "cls_embed", "fc_attr": "attr_linear1", "attr_score": "attr_linear2"}[name]
        return f"roi_heads.box_predictor.{name}.{param}"
    return ours


def format_config(fmt: str, cfg: DetectorConfig, has_attributes: bool) -> DetectorConfig:
    """The config a checkpoint format runs under: the rules of the code it was made for."""
    if fmt == "d2-pkl":
        # py-bottom-up-attention runs on detectron2: continuous boxes, detectron2 anchors, top-k
        # before clipping, no minimum proposal size, ROI box weights (10, 10, 5, 5), detectron2's
        # resize (PIL on uint8, per-axis box scales), attribute softmax over the 400 real ones.
        return replace(
            cfg,
            conventions="detectron2",
            rpn_min_size=0.0,
            box_reg_weights=(10.0, 10.0, 5.0, 5.0),
            attributes=has_attributes,
            resize="pil",
            attr_softmax="real",
        )
    if fmt == "bua-pth":
        # bottom-up-attention.pytorch's Caffe mode: py-faster-rcnn's resize (cv2 on the float
        # image, one scale), attribute softmax over all 401 outputs.
        return replace(
            cfg,
            conventions="caffe",
            rpn_min_size=16.0,
            box_reg_weights=(1.0, 1.0, 1.0, 1.0),
            attributes=has_attributes,
            resize="cv2",
            attr_softmax="all",
        )
    return cfg


def map_state(fmt: str, source: dict[str, np.ndarray], model: BottomUpDetector, path: str) -> tuple[dict, list[str]]:
    """Map a source state dict onto `model`'s keys; raise CheckpointError listing every problem."""
    rename, transform, _ = _MAPS[fmt]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    unexpected, mismatched, notes = [], [], []
    anchors = None
    for key, arr in source.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if key in ("pixel_mean", "pixel_std"):
            want = np.array(model.cfg.pixel_mean if key == "pixel_mean" else (1.0, 1.0, 1.0))
            if arr.size != 3 or not np.allclose(arr.reshape(-1), want, atol=1e-3):
                mismatched.append(f"{key}: checkpoint {arr.reshape(-1).tolist()}, model {want.tolist()}")
            continue
        if key == D2_ANCHOR_KEY and fmt == "d2-pkl":
            # detectron2 loads its anchor buffer from the checkpoint when present, so do we.
            if arr.shape != (model.cfg.num_anchors, 4):
                mismatched.append(f"{key}: shape {arr.shape}, expected {(model.cfg.num_anchors, 4)}")
            else:
                anchors = torch.from_numpy(arr.astype(np.float32))
            continue
        ours = rename(key)
        if ours is None or ours not in expected:
            unexpected.append(key)
            continue
        seen.add(ours)
        value = transform(ours, arr)
        if tuple(value.shape) != expected[ours]:
            want = tuple(_MAPS[fmt][2](ours, np.zeros(expected[ours], np.float32)).shape)
            mismatched.append(f"{key}: shape {tuple(arr.shape)}, expected {want}")
            continue
        mapped[ours] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    missing = sorted(_to_source_key(fmt, k) for k in set(expected) - seen)
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(sorted(unexpected))}")
    if mismatched:
        problems.append(f"wrong shapes: {'; '.join(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{path}: does not match the {model.cfg.name} model ({fmt}); nothing loaded. " + " | ".join(problems)
        )
    if anchors is not None:
        model.proposals.cell_anchors.copy_(anchors)
        notes.append("cell anchors taken from the checkpoint")
    return mapped, notes


def _has_attributes(source: dict[str, np.ndarray], fmt: str) -> bool:
    probe = (
        "roi_heads.box_predictor.cls_embed.weight"
        if fmt == "bua-pth"
        else "roi_heads.box_predictor.cls_embedding.weight"
    )
    return probe in source


def load_checkpoint(
    path: str | Path, cfg: DetectorConfig | str = "r101", device: str = "cpu"
) -> tuple[BottomUpDetector, LoadReport]:
    """Build the detector and load `path` into it, exactly (see the module docstring).

    cfg gives the network sizes (a preset name or a config); the format fixes the pixel
    conventions. Returns the model in eval mode and a report for the store's attributes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    cfg = DetectorConfig.from_name(cfg) if isinstance(cfg, str) else cfg
    fmt = detect_format(path)
    if fmt == "safetensors":
        model, notes = _load_safetensors(path, cfg)
    else:
        source = read_pickle(path) if fmt == "d2-pkl" else read_torch(path)
        if fmt == "bua-pth" and "proposal_generator.rpn_head.objectness_logits.weight" in source:
            if source["proposal_generator.rpn_head.objectness_logits.weight"].shape[0] == cfg.num_anchors:
                fmt = "d2-pkl"  # a detectron2 state dict saved with torch.save: one logit per anchor
        model = BottomUpDetector(format_config(fmt, cfg, _has_attributes(source, fmt)))
        mapped, notes = map_state(fmt, source, model, str(path))
        model.load_state_dict(mapped, strict=True)
    report = LoadReport(str(path), fmt, sha256_file(path), model.cfg, notes)
    return model.to(device), report


def state_for_export(model: BottomUpDetector, fmt: str) -> dict[str, np.ndarray]:
    """Our weights in a source format's names and layouts (tests generate checkpoints with it)."""
    _, _, out = _MAPS[fmt]
    return {_to_source_key(fmt, k): out(k, v.detach().cpu().numpy()) for k, v in model.state_dict().items()}


def export_checkpoint(model: BottomUpDetector, path: str | Path, fmt: str) -> Path:
    """Write `model` as a d2-pkl, bua-pth or safetensors checkpoint."""
    path = Path(path)
    if fmt == "safetensors":
        return save_safetensors(model, path)
    state = state_for_export(model, fmt)
    if fmt == "d2-pkl":
        with open(path, "wb") as fh:
            pickle.dump({"model": state, "__author__": "lighthead export"}, fh, protocol=2)
    elif fmt == "bua-pth":
        torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path)
    else:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return path


def save_safetensors(model: BottomUpDetector, path: str | Path) -> Path:
    """Save the canonical (unfolded) weights and the config in one safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if not any(k.endswith("norm.running_var") for k in state):
        raise CheckpointError("save the model before optimize_for_inference(): its BatchNorms are folded")
    state["proposals.cell_anchors"] = model.proposals.cell_anchors.detach().cpu().contiguous()
    save_file(state, str(path), metadata={"format": "lighthead-butd", "config": json.dumps(model.cfg.to_json())})
    return path


def _load_safetensors(path: Path, cfg: DetectorConfig) -> tuple[BottomUpDetector, list[str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    if meta.get("format") != "lighthead-butd" or "config" not in meta:
        raise CheckpointError(f"{path}: not a lighthead region-detector export (metadata format/config missing)")
    try:
        saved = DetectorConfig.from_json(json.loads(meta["config"]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad config in metadata: {exc}") from None
    # The file fixes the network; the caller's config may only change test-time settings.
    runtime = {
        k: getattr(cfg, k)
        for k in ("min_size", "max_size", "roi_chunk", "cpu_roi_chunk", "rpn_post_nms_top_n", "rpn_pre_nms_top_n")
    }
    model = BottomUpDetector(replace(saved, **runtime))
    anchors = state.pop("proposals.cell_anchors", None)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: shape {tuple(state[k].shape)}, expected {expected[k]}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong or anchors is None:
        raise CheckpointError(
            f"{path}: does not match its own config; nothing loaded. missing: {missing}, "
            f"unexpected: {unexpected}, wrong shapes: {wrong}, anchors: {anchors is not None}"
        )
    model.load_state_dict(state, strict=True)
    model.proposals.cell_anchors.copy_(anchors)
    return model, []
