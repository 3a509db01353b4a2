"""Which ROIs of an image become its regions: the rule of bottom-up-attention's `generate_tsv.py`,
and py-bottom-up-attention's max-class NMS.

generate_tsv.py (modes "fixed" and "adaptive"): for every object class (background skipped)
NMS runs over the ROIs with that class's scores; a ROI's confidence is its highest class score
among the classes where it survived. Then: fixed K keeps the K most confident ROIs; adaptive
keeps those with confidence >= threshold, topped up to `min_boxes` or cut to `max_boxes` by
confidence (bottom-up-attention.pytorch's extractor). The NMS of all classes runs at once on
one shared IoU matrix (the ROIs are the same for every class), which equals one torchvision NMS
per class, and the images of a batch run in the same sequential steps.

"d2-maxnms" (py-bottom-up-attention, `demo/detectron2_mscoco_proposal_maxnms.py`, the
detectron2 36-box extraction written for LXMERT; read in airsplay/py-bottom-up-attention):
per ROI the best of the real classes and its score; the ROI's box regressed with that class's
deltas and clipped to the resized image; one class-agnostic NMS over these boxes by that
score, at thresholds `np.arange(0.3, 1.0, 0.1)` in turn until at least K boxes survive (else
the last, 0.9), keeping the K best. The features are those of the kept ROIs; the reported
boxes are the regressed ones. The script passes `score_thresh=0.2` to its NMS function, which
never uses it, so no score threshold applies here either.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from lighthead.extract.regions import boxes as B
from lighthead.extract.regions.config import SelectionConfig


def max_confidence(boxes: torch.Tensor, cls_prob: torch.Tensor, nms_thresh: float, offset: float) -> torch.Tensor:
    """Per-ROI confidence after per-class NMS of one image (see `batch_max_confidence`).

    boxes: (R, 4); cls_prob: (R, C) with background in column 0. Returns (R,) float32.
    """
    return batch_max_confidence([boxes], [cls_prob], nms_thresh, offset)[0]


def batch_max_confidence(
    boxes: Sequence[torch.Tensor], cls_prob: Sequence[torch.Tensor], nms_thresh: float, offset: float
) -> list[torch.Tensor]:
    """Per-ROI confidence after per-class NMS for every image of a batch at once.

    boxes[i]: (R_i, 4); cls_prob[i]: (R_i, C) with background in column 0. Returns (R_i,)
    float32 per image. The greedy NMS visits ROIs in score order, so it takes R sequential steps
    (about 6 kernel launches each on a GPU); the images run in the same steps, padded to
    R = max R_i: a padded ROI scores -inf, so every class visits it after all real ROIs, when
    what it suppresses no longer matters. Results equal one image at a time.
    """
    counts = [int(b.shape[0]) for b in boxes]
    R = max(counts, default=0)
    if R == 0:
        return [p.new_zeros((0,), dtype=torch.float32) for p in cls_prob]
    padded = pad_sequence([b.float() for b in boxes], batch_first=True)  # (N, R, 4)
    scores = (
        pad_sequence([p[:, 1:].float() for p in cls_prob], batch_first=True, padding_value=float("-inf"))
        .transpose(1, 2)
        .contiguous()
    )  # (N, C-1, R)
    over = B.iou_matrices(padded, offset) > nms_thresh  # (N, R, R): which ROI suppresses which
    order = torch.sort(scores, dim=2, descending=True, stable=True).indices  # (N, C-1, R)
    if scores.device.type == "cpu":
        kept = torch.from_numpy(_lockstep_nms_numpy(over.numpy(), order.numpy()))
    else:
        kept = _lockstep_nms_torch(over, order)
    conf = torch.where(kept, scores, torch.zeros_like(scores)).amax(dim=1)  # (N, R)
    return [conf[i, :n] for i, n in enumerate(counts)]


def _lockstep_nms_torch(over: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Greedy NMS of every class of every image at once: step i visits each class's i-th best ROI.

    over: (N, R, R) bool; order: (N, C, R) ROI indices, best first. Returns (N, C, R) kept.
    """
    n, n_cls, R = order.shape
    suppressed = torch.zeros((n, n_cls, R), dtype=torch.bool, device=order.device)
    kept = torch.zeros((n, n_cls, R), dtype=torch.bool, device=order.device)
    img = torch.arange(n, device=order.device)[:, None]  # (N, 1)
    cls = torch.arange(n_cls, device=order.device)[None, :]  # (1, C)
    for i in range(R):
        b = order[:, :, i]  # (N, C)
        alive = ~suppressed[img, cls, b]  # (N, C)
        kept[img, cls, b] = alive
        suppressed |= over[img, b] & alive[..., None]  # over[img, b]: (N, C, R)
    return kept


def _lockstep_nms_numpy(over: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The same on the CPU, where numpy's boolean kernels are much faster than torch's."""
    n, n_cls, R = order.shape
    suppressed = np.zeros((n, n_cls, R), dtype=bool)
    kept = np.zeros((n, n_cls, R), dtype=bool)
    img = np.arange(n)[:, None]
    cls = np.arange(n_cls)[None, :]
    for i in range(R):
        b = order[:, :, i]
        alive = ~suppressed[img, cls, b]
        kept[img, cls, b] = alive
        suppressed |= over[img, b] & alive[..., None]
    return kept


def max_class_boxes(
    rois: torch.Tensor,
    deltas: torch.Tensor,
    cls_prob: torch.Tensor,
    weights: tuple[float, ...],
    offset: float,
    scale_clamp: float | None,
) -> torch.Tensor:
    """Each ROI's box regressed with the deltas of its best real class (background skipped).

    rois: (R, 4); deltas: (R, 4C); cls_prob: (R, C) with background in column 0. Returns (R, 4).
    """
    R, C = cls_prob.shape
    best = cls_prob[:, 1:].argmax(dim=1) + 1  # (R,) index among all C columns
    d = deltas.reshape(R, C, 4)[torch.arange(R, device=deltas.device), best]  # (R, 4)
    return B.decode(d, rois, weights, offset, scale_clamp)


def maxnms_thresholds(start: float) -> list[float]:
    """The NMS thresholds d2-maxnms tries in turn: `np.arange(start, 1.0, 0.1)` as the script has them."""
    return [float(t) for t in np.arange(start, 1.0, 0.1)] or [float(start)]


def maxnms_keep(boxes: torch.Tensor, scores: torch.Tensor, k: int, start: float, offset: float) -> torch.Tensor:
    """Indices kept by the raised-threshold class-agnostic NMS (best first), at most k."""
    keep = boxes.new_zeros((0,), dtype=torch.long)
    for thresh in maxnms_thresholds(start):
        keep = B.nms_keep(boxes, scores, thresh, offset)[:k]
        if keep.numel() >= k:
            break
    return keep


def select(conf: torch.Tensor, cfg: SelectionConfig) -> torch.Tensor:
    """Indices of the kept ROIs given their (R,) confidences (mode "fixed" or "adaptive")."""
    by_conf = torch.sort(conf, descending=True, stable=True).indices
    if cfg.mode == "fixed":
        return by_conf[: cfg.num_boxes]
    if cfg.mode != "adaptive":
        raise ValueError(f"select() needs mode fixed or adaptive, not {cfg.mode!r}")
    keep = torch.nonzero(conf >= cfg.conf_thresh).flatten()  # ROI order, as the reference keeps it
    if keep.numel() < cfg.min_boxes:
        return by_conf[: cfg.min_boxes]
    if keep.numel() > cfg.max_boxes:
        return by_conf[: cfg.max_boxes]
    return keep


def labels(cls_prob: torch.Tensor, attr_prob: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Best object (of the C-1 real classes) and attribute (of the real ones) per ROI.

    Ids count from 0 over the real classes (0..1599 and 0..399 for the VG model), i.e. they
    index the lines of the usual `objects_vocab.txt` / `attributes_vocab.txt`. Without an
    attribute head (attr_prob None) attribute ids are -1 with score 0.
    """
    obj_scores, obj_ids = cls_prob[:, 1:].max(dim=1)
    if attr_prob is None:
        attr_ids = torch.full_like(obj_ids, -1)
        attr_scores = torch.zeros_like(obj_scores)
    else:
        attr_scores, attr_ids = attr_prob[:, 1:].max(dim=1)
    return {"object_ids": obj_ids, "object_scores": obj_scores, "attr_ids": attr_ids, "attr_scores": attr_scores}
