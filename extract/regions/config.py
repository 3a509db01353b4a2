"""Configuration of the bottom-up-attention region detector and of its box selection.

Defaults are the test-time values of the Caffe Visual Genome model of Anderson et al.,
"Bottom-Up and Top-Down Attention for Image Captioning and Visual Question Answering"
(CVPR 2018); see `extract/regions/__init__.py` for where each value was checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

CONVENTIONS = ("caffe", "detectron2")
MODES = ("fixed", "adaptive", "given")


@dataclass
class DetectorConfig:
    """Sizes and test-time settings of the ResNet-C4 Faster R-CNN with attribute head."""

    name: str = "butd-r101-vg"  # preset name, recorded in the store
    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)  # bottleneck blocks of res2..res5 (ResNet-101)
    width: int = 64  # bottleneck channels of res2, doubled per stage (64 = the standard ResNet)
    stem_channels: int = 64  # output channels of the 7x7 stem conv
    res2_out: int = 256  # output channels of res2, doubled per stage (res4 = 4x, res5 = 8x)
    res5_dilation: int = 2  # Caffe VG model: res5 keeps stride 1 and dilates its 3x3 convs by 2
    bn_eps: float = 1e-5  # eps of the frozen BatchNorm (Caffe and detectron2 default)
    num_classes: int = 1601  # object classes incl. background at index 0 (1600 VG objects)
    num_attributes: int = 401  # attribute classes incl. "no attribute" at index 0 (400 VG attributes)
    attributes: bool = True  # has the attribute head (faster_rcnn_from_caffe.pkl has none)
    attr_embed_dim: int = 256  # embedding of the predicted class fed to the attribute head
    attr_hidden_dim: int = 512  # hidden FC of the attribute head
    rpn_hidden: int = 512  # channels of the RPN 3x3 conv
    anchor_scales: tuple[float, ...] = (4, 8, 16, 32)  # anchor sizes in units of feat_stride
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # anchor height/width ratios
    feat_stride: int = 16  # stride of res4, where anchors and ROI pooling live
    rpn_pre_nms_top_n: int = 6000  # proposals kept before the RPN NMS (test)
    rpn_post_nms_top_n: int = 300  # proposals kept after the RPN NMS (test): the ROIs
    rpn_nms_thresh: float = 0.7  # IoU threshold of the RPN NMS
    rpn_min_size: float = 16.0  # proposals narrower than this (original pixels) are dropped
    pool_size: int = 14  # ROI max-pooling output (res5 keeps it at 14x14 with dilation 2)
    pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)  # BGR mean, no std scaling
    min_size: int = 600  # test scale: shorter side resized to this
    max_size: int = 1000  # ... unless the longer side would exceed this
    size_divisibility: int = 32  # batched images are padded to a multiple of this
    conventions: str = "caffe"  # box arithmetic: "caffe" (+1 pixel widths, Caffe anchors) or "detectron2"
    box_reg_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # divide class box deltas
    roi_chunk: int = 256  # ROIs per res5 call on a GPU (bounds memory; results do not depend on it)
    cpu_roi_chunk: int = 16  # ROIs per res5 call on a CPU, where small chunks stay in cache

    def __post_init__(self) -> None:
        self.blocks = tuple(int(b) for b in self.blocks)
        self.anchor_scales = tuple(float(s) for s in self.anchor_scales)
        self.anchor_ratios = tuple(float(r) for r in self.anchor_ratios)
        self.pixel_mean = tuple(float(m) for m in self.pixel_mean)
        self.box_reg_weights = tuple(float(w) for w in self.box_reg_weights)
        if len(self.blocks) != 4 or min(self.blocks) < 1:
            raise ValueError(f"blocks must be 4 positive counts (res2..res5), got {self.blocks}")
        for name in ("width", "stem_channels", "res2_out", "rpn_hidden", "attr_embed_dim", "attr_hidden_dim",
                     "pool_size", "min_size", "max_size", "size_divisibility", "roi_chunk", "cpu_roi_chunk",
                     "feat_stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2, got {self.res5_dilation}")
        if self.num_classes < 2 or self.num_attributes < 2:
            raise ValueError("num_classes and num_attributes count the background/'no attribute' entry: >= 2")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} > max_size {self.max_size}")
        if self.conventions not in CONVENTIONS:
            raise ValueError(f"conventions must be one of {CONVENTIONS}, got {self.conventions!r}")
        if not 0.0 < self.rpn_nms_thresh <= 1.0:
            raise ValueError(f"rpn_nms_thresh must be in (0, 1], got {self.rpn_nms_thresh}")
        if self.rpn_post_nms_top_n < 1 or self.rpn_pre_nms_top_n < self.rpn_post_nms_top_n:
            raise ValueError("need 1 <= rpn_post_nms_top_n <= rpn_pre_nms_top_n")
        if len(self.pixel_mean) != 3 or len(self.box_reg_weights) != 4:
            raise ValueError("pixel_mean needs 3 values and box_reg_weights 4")

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)

    @property
    def res4_channels(self) -> int:
        return self.res2_out * 4

    @property
    def feature_dim(self) -> int:
        """Size of a region feature: the output channels of res5."""
        return self.res2_out * 8

    @property
    def pixel_offset(self) -> float:
        """1 under Caffe's inclusive pixel boxes (width = x2 - x1 + 1), 0 under detectron2's."""
        return 1.0 if self.conventions == "caffe" else 0.0

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "DetectorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown detector config keys: {', '.join(unknown)}")
        return cls(**obj)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "DetectorConfig":
        """A preset (see PRESETS) with field overrides, e.g. `from_name("r101", min_size=192)`."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise KeyError(f"unknown detector preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
        return replace(base, **overrides)


# Presets. "r101" is the model users hold weights for; the others exist for speed on a CPU:
# "r101-demo" keeps the real network (2048-d features) but a small test scale and fewer
# ROIs; "slim" is a narrow, shallow network with 7x7 ROI pooling and 512-d features for the
# demo on random weights (a CPU runs it at tens of images per second); "tiny" is for unit tests. Every preset is recorded by name and value in the store.
PRESETS: dict[str, DetectorConfig] = {
    "r101": DetectorConfig(),
    "r101-demo": DetectorConfig(name="butd-r101-vg-demo", min_size=192, max_size=320, rpn_post_nms_top_n=100),
    "slim": DetectorConfig(name="butd-slim", blocks=(1, 1, 1, 1), width=16, stem_channels=16, res2_out=64,
                           rpn_hidden=64, attr_embed_dim=32, attr_hidden_dim=64, pool_size=7, min_size=192,
                           max_size=320, rpn_post_nms_top_n=64),
    "tiny": DetectorConfig(name="butd-tiny", blocks=(1, 1, 1, 1), width=4, stem_channels=8, res2_out=16,
                           rpn_hidden=16, attr_embed_dim=16, attr_hidden_dim=32, num_classes=21, pool_size=7,
                           num_attributes=11, min_size=96, max_size=160, rpn_pre_nms_top_n=600,
                           rpn_post_nms_top_n=50),
}


@dataclass
class SelectionConfig:
    """Which regions of an image are kept (the rule of `generate_tsv.py` and its ports)."""

    mode: str = "fixed"  # "fixed" (the K most confident), "adaptive" (threshold, min..max) or "given"
    num_boxes: int = 36  # K of the fixed mode (36 or 100 in the literature)
    conf_thresh: float = 0.2  # adaptive: keep boxes whose confidence reaches this
    min_boxes: int = 10  # adaptive: at least this many (the most confident) ...
    max_boxes: int = 100  # ... and at most this many
    nms_thresh: float = 0.3  # per-class NMS over the ROIs before the confidence is taken
    rule: str = field(default="rois", init=False)  # reported boxes are the RPN ROIs, not class-regressed boxes

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_boxes < 1 or self.min_boxes < 1 or self.max_boxes < self.min_boxes:
            raise ValueError("need num_boxes >= 1 and 1 <= min_boxes <= max_boxes")
        if not 0.0 <= self.conf_thresh <= 1.0 or not 0.0 < self.nms_thresh <= 1.0:
            raise ValueError("conf_thresh must be in [0, 1] and nms_thresh in (0, 1]")

    @property
    def max_out(self) -> int:
        """Most boxes an image can get (the fixed K, or max_boxes)."""
        return self.num_boxes if self.mode == "fixed" else self.max_boxes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
