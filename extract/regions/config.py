"""Configuration of the bottom-up-attention region detector and of its box selection.

Defaults are the test-time values of the Caffe Visual Genome model of Anderson et al.,
"Bottom-Up and Top-Down Attention for Image Captioning and Visual Question Answering"
(CVPR 2018); see `extract/regions/__init__.py` for where each value was checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

CONVENTIONS = ("caffe", "detectron2")
RESIZES = ("cv2", "pil")
ATTR_SOFTMAXES = ("all", "real")
MODES = ("fixed", "adaptive", "given", "d2-maxnms")
# What the stored boxes are, per selection mode (recorded in the store with the selection).
BOX_RULES = {
    "fixed": "rois",  # the RPN proposals themselves (generate_tsv.py)
    "adaptive": "rois",
    "given": "given",  # the boxes as given, not clipped
    "d2-maxnms": "max-class regressed",  # each kept ROI's box regressed for its best class
}


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
    # How an image reaches the test scale, and how boxes map between the two sizes:
    # "cv2" = py-faster-rcnn / bottom-up-attention.pytorch: one scale min_size/short, replaced
    #   by max_size/long when the *rounded* long side would pass max_size; the float image minus
    #   the mean resized bilinearly without antialiasing (cv2.INTER_LINEAR), sides rounded half
    #   to even (cvRound); boxes multiplied / divided by that one scale.
    # "pil" = detectron2's ResizeShortestEdge + ResizeTransform (py-bottom-up-attention): max_size
    #   tested on the *unrounded* long side, sides rounded half up; the uint8 image resized by
    #   PIL's BILINEAR (antialiased when shrinking, rounded to uint8) before the mean is
    #   subtracted; boxes scaled per axis by output size / input size, and clipped to the
    #   original image on the way back.
    resize: str = "cv2"
    # Attribute scores: "all" = softmax over all num_attributes outputs, "no attribute"
    # included (the Caffe prob layer; bottom-up-attention.pytorch), "real" = softmax over the
    # real attributes only (py-bottom-up-attention's demos drop the "no attribute" logit first).
    attr_softmax: str = "all"
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
        for name in (
            "width",
            "stem_channels",
            "res2_out",
            "rpn_hidden",
            "attr_embed_dim",
            "attr_hidden_dim",
            "pool_size",
            "min_size",
            "max_size",
            "size_divisibility",
            "roi_chunk",
            "cpu_roi_chunk",
            "feat_stride",
        ):
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
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        if self.attr_softmax not in ATTR_SOFTMAXES:
            raise ValueError(f"attr_softmax must be one of {ATTR_SOFTMAXES}, got {self.attr_softmax!r}")
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
    def from_json(cls, obj: dict[str, Any]) -> DetectorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown detector config keys: {', '.join(unknown)}")
        return cls(**obj)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> DetectorConfig:
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
    "slim": DetectorConfig(
        name="butd-slim",
        blocks=(1, 1, 1, 1),
        width=16,
        stem_channels=16,
        res2_out=64,
        rpn_hidden=64,
        attr_embed_dim=32,
        attr_hidden_dim=64,
        pool_size=7,
        min_size=192,
        max_size=320,
        rpn_post_nms_top_n=64,
    ),
    "tiny": DetectorConfig(
        name="butd-tiny",
        blocks=(1, 1, 1, 1),
        width=4,
        stem_channels=8,
        res2_out=16,
        rpn_hidden=16,
        attr_embed_dim=16,
        attr_hidden_dim=32,
        num_classes=21,
        pool_size=7,
        num_attributes=11,
        min_size=96,
        max_size=160,
        rpn_pre_nms_top_n=600,
        rpn_post_nms_top_n=50,
    ),
}


@dataclass
class SelectionConfig:
    """Which regions of an image are kept.

    "fixed" / "adaptive": the rule of `generate_tsv.py` (per-class NMS over the ROIs, then the
    K most confident, or a threshold with min..max). "given": the boxes supplied. "d2-maxnms":
    py-bottom-up-attention's `demo/detectron2_mscoco_proposal_maxnms.py` (LXMERT's detectron2
    36-box extraction): each ROI's box regressed for its best class, class-agnostic NMS at
    nms_thresh, raised by 0.1 (0.3, 0.4, ..., 0.9) until num_boxes survive, the num_boxes best.
    """

    mode: str = "fixed"  # "fixed" (the K most confident), "adaptive" (threshold, min..max), "given" or "d2-maxnms"
    num_boxes: int = 36  # K of the fixed and d2-maxnms modes (36 or 100 in the literature)
    conf_thresh: float = 0.2  # adaptive: keep boxes whose confidence reaches this
    min_boxes: int = 10  # adaptive: at least this many (the most confident) ...
    max_boxes: int = 100  # ... and at most this many
    nms_thresh: float = 0.3  # per-class NMS over the ROIs (d2-maxnms: the first class-agnostic threshold)
    rule: str = field(default="rois", init=False)  # what the stored boxes are (BOX_RULES)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        self.rule = BOX_RULES[self.mode]
        if self.num_boxes < 1 or self.min_boxes < 1 or self.max_boxes < self.min_boxes:
            raise ValueError("need num_boxes >= 1 and 1 <= min_boxes <= max_boxes")
        if not 0.0 <= self.conf_thresh <= 1.0 or not 0.0 < self.nms_thresh <= 1.0:
            raise ValueError("conf_thresh must be in [0, 1] and nms_thresh in (0, 1]")

    @property
    def fixed_k(self) -> bool:
        """Every image gets num_boxes rows (padded when fewer exist)."""
        return self.mode in ("fixed", "d2-maxnms")

    @property
    def max_out(self) -> int:
        """Most boxes an image can get (the fixed K, or max_boxes)."""
        return self.num_boxes if self.fixed_k else self.max_boxes

    @classmethod
    def for_job(cls, mode: str, num_boxes: int, rule: str | None = None) -> SelectionConfig:
        """A feature job's selection: its own mode and K, or `rule="d2-maxnms"` on a fixed-K job
        (the user option `selection=d2-maxnms`); rule None or "generate_tsv" keeps the job's mode."""
        if rule in (None, "", "generate_tsv"):
            return cls(mode=mode, num_boxes=num_boxes) if mode == "fixed" else cls(mode=mode)
        if rule != "d2-maxnms":
            raise ValueError(f"unknown selection {rule!r}; known: generate_tsv, d2-maxnms")
        if mode != "fixed":
            raise ValueError(f"selection=d2-maxnms keeps a fixed number of boxes; it does not apply to mode {mode!r}")
        return cls(mode="d2-maxnms", num_boxes=num_boxes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
