"""The bottom-up-attention detector: trunk -> RPN -> ROI pooling -> res5 -> predictions.

Shape letters: B images in a batch, H x W padded input, R ROIs (proposals or given boxes)
of one image, C classes (1601), A attributes (401), D feature size (2048), K kept regions.

Two entry points, as detectron2 has `inference` and `forward_with_given_boxes`:
`forward(images, ...)` detects (RPN proposals become the ROIs), `forward(images, ..., boxes=...)`
pools features for boxes supplied per image. `regions(...)` then applies the box selection.

Boxes between original and resized pixels (`to_resized`, `to_original`), per the config's
`resize` rule: "cv2" multiplies / divides by the one scale (bottom-up-attention.pytorch:
`bbox * im_scale` in, `boxes / im_scale` out; generate_tsv.py: `rois / im_scale`); "pil"
scales x and y separately, in with new size / old size (py-bottom-up-attention's given-box
demo: `boxes.scale(new_w / raw_w, new_h / raw_h)`), out with old size / new size and a clip
to the original image (detectron2's `detector_postprocess`). Given boxes are never clipped:
neither reference clips them (bua's `bbox_feats` mode hands them to the ROI pooling as they
are, py-bottom-up-attention's given-box demo too); ROI pooling reads zeros outside the image.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from lighthead.extract.regions import boxes as B
from lighthead.extract.regions.backbone import ResNetC4, fold_frozen_bn
from lighthead.extract.regions.box_selection import batch_max_confidence, labels, max_class_boxes, maxnms_keep, select
from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
from lighthead.extract.regions.roi_heads import ROIHeads
from lighthead.extract.regions.rpn import ProposalGenerator, RPNHead


class BottomUpDetector(nn.Module):
    """Faster R-CNN, ResNet-C4, 1601 classes + 401 attributes, eval mode only."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNetC4(cfg.blocks[:3], cfg.width, cfg.stem_channels, cfg.res2_out, cfg.bn_eps)
        self.rpn = RPNHead(cfg.res4_channels, cfg.rpn_hidden, cfg.num_anchors)
        self.proposals = ProposalGenerator(cfg)
        self.roi_heads = ROIHeads(cfg)
        self.channels_last = False
        self.eval()

    def train(self, mode: bool = True) -> BottomUpDetector:
        if mode:
            raise RuntimeError("the region detector runs in eval mode only (frozen BatchNorm, test-time RPN)")
        return super().train(False)

    def optimize_for_inference(self, channels_last: bool = False) -> BottomUpDetector:
        """Fold the frozen BatchNorms into the convs and pick the memory layout (after loading)."""
        fold_frozen_bn(self)
        self.channels_last = channels_last
        self.roi_heads.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        return self

    @torch.inference_mode()
    def forward(
        self,
        images: torch.Tensor,
        image_sizes: list[tuple[int, int]],
        scales: Sequence[Any],
        boxes: list[torch.Tensor] | None = None,
    ) -> list[dict[str, Any]]:
        """Run the detector on a padded batch.

        images: (B, 3, H, W) mean-subtracted BGR, each image at the top-left of its slot;
        image_sizes: (h, w) of each resized image; scales: resize factor of each image, a float
        or the (scale_y, scale_x) pair of `batching.Prepare`; boxes: optional list of (R_i, 4)
        boxes per image in original pixels (features for given boxes; no RPN). Returns per
        image a dict: float32 tensors "boxes" (R, 4) in original pixels (the ROIs), "rois"
        (R, 4) the same in resized pixels, "features" (R, D), "cls_prob" (R, C), "attr_prob"
        (R, A) (when the model has the attribute head), "deltas" (R, 4C) class box deltas
        (relative to "rois"); and "image_size" (h, w), "scale" (scale_y, scale_x).
        """
        cfg = self.cfg
        x = images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        res4, valid = self.backbone(x, [h for h, _ in image_sizes], [w for _, w in image_sizes])
        rois: list[torch.Tensor] = []
        if boxes is None:
            logits, deltas = self.rpn(res4)  # (B, A, h, w), (B, 4A, h, w)
            for i, (hw, s) in enumerate(zip(image_sizes, scales)):
                h4, w4 = valid.heights[i], valid.widths[i]
                props, _ = self.proposals(logits[i, :, :h4, :w4], deltas[i, :, :h4, :w4], hw, axis_scales(s)[0])
                rois.append(props)
        else:
            for s, b in zip(scales, boxes):
                rois.append(to_resized(b.to(images.device, torch.float32).reshape(-1, 4), s))
        counts = [r.shape[0] for r in rois]
        batch_rois = torch.cat(
            [
                torch.cat([torch.full((n, 1), float(i), device=images.device), r], dim=1)
                for i, (n, r) in enumerate(zip(counts, rois))
            ],
            dim=0,
        )  # (sum R, 5)
        feats = self.roi_heads.pooled_features(res4.float(), batch_rois)  # (sum R, D)
        preds = self.roi_heads.predict(feats)
        out = []
        for i, part in enumerate(zip(feats.split(counts), *(p.split(counts) for p in preds.values()))):
            given = None if boxes is None else boxes[i]
            out.append(
                pack_output(rois[i], part[0], dict(zip(preds.keys(), part[1:])), image_sizes[i], scales[i], cfg, given)
            )
        return out

    def regions(self, outputs: list[dict[str, Any]], selection: SelectionConfig) -> list[dict[str, torch.Tensor]]:
        """Apply the box selection to `forward`'s outputs; returns per image the kept regions.

        Keys: boxes (K, 4), features (K, D), object_ids/object_scores/attr_ids/attr_scores (K,),
        confidence (K,) (the per-class-NMS confidence; the class score for given boxes and d2-maxnms).
        """
        result = []
        confidences: list[torch.Tensor | None] = [None] * len(outputs)
        if selection.mode not in ("given", "d2-maxnms"):
            # generate_tsv.py and bua run this NMS on the ROIs in original pixels (rois / im_scale);
            # all images in one go: the NMS's sequential steps then do not multiply by the batch size
            confidences = batch_max_confidence(
                [o["boxes"] for o in outputs],
                [o["cls_prob"] for o in outputs],
                selection.nms_thresh,
                self.cfg.pixel_offset,
            )
        for out, conf in zip(outputs, confidences):
            lab = labels(out["cls_prob"], out.get("attr_prob"))
            boxes = out["boxes"]
            if selection.mode == "given":
                keep = torch.arange(boxes.shape[0], device=boxes.device)
                conf = lab["object_scores"]
            elif selection.mode == "d2-maxnms":
                cfg = self.cfg
                reg = max_class_boxes(
                    out["rois"],
                    out["deltas"],
                    out["cls_prob"],
                    cfg.box_reg_weights,
                    cfg.pixel_offset,
                    None if cfg.conventions == "caffe" else B.SCALE_CLAMP,
                )
                reg = B.clip(reg, out["image_size"][0], out["image_size"][1], cfg.pixel_offset)
                conf = lab["object_scores"]
                keep = maxnms_keep(reg, conf, selection.num_boxes, selection.nms_thresh, cfg.pixel_offset)
                boxes = to_original(reg, out["scale"], out["image_size"], cfg)
            else:
                keep = select(conf, selection)
            item = {"boxes": boxes[keep], "features": out["features"][keep], "confidence": conf[keep]}
            item.update({k: v[keep] for k, v in lab.items()})
            result.append(item)
        return result


def axis_scales(scale: Any) -> tuple[float, float]:
    """(scale_y, scale_x) of a float scale or a (scale_y, scale_x) pair."""
    if isinstance(scale, (tuple, list)):
        return float(scale[0]), float(scale[1])
    return float(scale), float(scale)


def to_resized(boxes: torch.Tensor, scale: Any) -> torch.Tensor:
    """(N, 4) boxes in original pixels -> resized pixels (not clipped; see the module docstring)."""
    sy, sx = axis_scales(scale)
    if sx == sy:
        return boxes * sx
    out = boxes.clone()
    out[:, 0::2] *= sx
    out[:, 1::2] *= sy
    return out


def to_original(boxes: torch.Tensor, scale: Any, image_size: tuple[int, int], cfg: DetectorConfig) -> torch.Tensor:
    """(N, 4) boxes in resized pixels -> original pixels.

    "cv2": divided by the scale (generate_tsv.py, bua). "pil": multiplied per axis by original
    size / resized size, then clipped to the original image (detectron2's detector_postprocess);
    the original size is recovered exactly by rounding resized size / scale.
    """
    sy, sx = axis_scales(scale)
    if cfg.resize != "pil":
        if sx == sy:
            return boxes / sx
        out = boxes.clone()  # scalar divisions: no constant tensor to copy to the device
        out[:, 0::2] /= sx
        out[:, 1::2] /= sy
        return out
    h, w = image_size
    orig_h, orig_w = round(h / sy), round(w / sx)
    out = boxes.clone()
    out[:, 0::2] *= orig_w / w
    out[:, 1::2] *= orig_h / h
    return B.clip(out, orig_h, orig_w, cfg.pixel_offset)


def pack_output(
    rois: torch.Tensor,
    features: torch.Tensor,
    preds: dict[str, torch.Tensor],
    image_size: tuple[int, int],
    scale: Any,
    cfg: DetectorConfig,
    given: torch.Tensor | None = None,
) -> dict[str, Any]:
    """One image's `forward` output (shared with the detectron2 backend). Given boxes are
    reported as given; ROIs are mapped back to original pixels."""
    if given is not None:
        boxes = given.to(rois.device, torch.float32).reshape(-1, 4)
    else:
        boxes = to_original(rois, scale, image_size, cfg)
    item: dict[str, Any] = {"boxes": boxes, "rois": rois, "features": features}
    item.update(preds)
    item["image_size"] = (int(image_size[0]), int(image_size[1]))
    item["scale"] = axis_scales(scale)
    return item


def init_random(model: BottomUpDetector, seed: int = 0) -> BottomUpDetector:
    """Deterministic random weights (tests, demo): same seed, same weights on every process.

    Convs get He-normal weights; each residual branch ends with a small BN scale so that the
    activations of a deep random ResNet stay in range; classifiers get unit-scale logits.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.state_dict(keep_vars=True).items()):
            if name.endswith("running_var") or (name.endswith("norm.weight") and "conv3" not in name):
                p.fill_(1.0)
            elif name.endswith("norm.weight"):
                p.fill_(0.2)  # last BN of a residual branch
            elif name.endswith("bias") or name.endswith("running_mean"):
                p.zero_()
            elif p.dim() == 4:
                fan_out = p.shape[0] * p.shape[2] * p.shape[3]
                std = math.sqrt(2.0 / fan_out)
                if "stem" in name:
                    std /= 64.0  # input pixels span about +-128: bring activations to unit scale
                elif "anchor_deltas" in name:
                    std *= 0.05  # small deltas keep random proposals near their anchors
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif p.dim() == 2:
                std = 1.0 / math.sqrt(p.shape[1])
                if "bbox_pred" in name:
                    std *= 0.05
                elif "cls_score" in name or "attr_score" in name:
                    std *= 20.0  # spread the random class scores: fewer near-ties between ROIs
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def build_detector(cfg: DetectorConfig | str = "r101", **overrides: Any) -> BottomUpDetector:
    """A detector with uninitialised weights (load a checkpoint or call `init_random`)."""
    if isinstance(cfg, str):
        cfg = DetectorConfig.from_name(cfg, **overrides)
    elif overrides:
        cfg = DetectorConfig.from_json({**cfg.to_json(), **overrides})
    return BottomUpDetector(cfg)
