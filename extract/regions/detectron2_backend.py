"""The same detector assembled from detectron2's own modules, when detectron2 is installed.

This is the reference py-bottom-up-attention runs (a detectron2 C4 Faster R-CNN with a Caffe
max-pool stem, a 512-channel RPN conv, res5 at stride 1 with dilation 2 and ROIPool). It
takes the weights of a `BottomUpDetector` in the "detectron2" conventions, so the parity test
can compare both on the same weights, and it offers the same `forward`/`regions` interface,
so `-o backend=detectron2` can run it in the pipeline. It processes one image at a time
(detectron2's RPN sees the padding of a batch). Nothing here imports detectron2 at import time.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from lighthead.extract.regions.checkpoints import state_for_export
from lighthead.extract.regions.model import BottomUpDetector, pack_output, to_resized


def available() -> bool:
    """True when `import detectron2` works."""
    if importlib.util.find_spec("detectron2") is None:
        return False
    try:
        importlib.import_module("detectron2.modeling")
    except Exception:  # a broken build (e.g. compiled for another torch) counts as absent
        return False
    return True


class Detectron2Detector(nn.Module):
    """detectron2 backbone, RPN and ROI pooling; our class/attribute heads (detectron2 has none)."""

    def __init__(self, ours: BottomUpDetector):
        super().__init__()
        from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
        from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, ResNet
        from detectron2.modeling.box_regression import Box2BoxTransform
        from detectron2.modeling.matcher import Matcher
        from detectron2.modeling.poolers import ROIPooler
        from detectron2.modeling.proposal_generator.rpn import RPN, StandardRPNHead

        cfg = ours.cfg
        if cfg.conventions != "detectron2":
            raise ValueError(
                "the detectron2 backend runs checkpoints in the detectron2 conventions "
                "(py-bottom-up-attention's .pkl); use the torch backend for Caffe-convention weights"
            )
        self.cfg = cfg

        class CaffeMaxPoolStem(BasicStem):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                x = F.relu_(self.conv1(x))
                return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)

        def stage(n: int, cin: int, bottleneck: int, cout: int, stride: int, dilation: int = 1) -> list[nn.Module]:
            return ResNet.make_stage(
                block_class=BottleneckBlock,
                num_blocks=n,
                stride_per_block=[stride] + [1] * (n - 1),
                in_channels=cin,
                bottleneck_channels=bottleneck,
                out_channels=cout,
                num_groups=1,
                norm="FrozenBN",
                stride_in_1x1=True,
                dilation=dilation,
            )

        w, r2 = cfg.width, cfg.res2_out
        stem = CaffeMaxPoolStem(3, cfg.stem_channels, norm="FrozenBN")
        stages = [
            stage(cfg.blocks[0], cfg.stem_channels, w, r2, 1),
            stage(cfg.blocks[1], r2, 2 * w, 2 * r2, 2),
            stage(cfg.blocks[2], 2 * r2, 4 * w, 4 * r2, 2),
        ]
        self.backbone = ResNet(stem, stages, out_features=["res4"])
        head = StandardRPNHead(
            in_channels=cfg.res4_channels, num_anchors=cfg.num_anchors, box_dim=4, conv_dims=[cfg.rpn_hidden]
        )
        anchors = DefaultAnchorGenerator(
            sizes=[[s * cfg.feat_stride for s in cfg.anchor_scales]],
            aspect_ratios=[list(cfg.anchor_ratios)],
            strides=[cfg.feat_stride],
            offset=0.0,
        )
        self.proposal_generator = RPN(
            in_features=["res4"],
            head=head,
            anchor_generator=anchors,
            anchor_matcher=Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True),
            box2box_transform=Box2BoxTransform((1.0, 1.0, 1.0, 1.0)),
            batch_size_per_image=256,
            positive_fraction=0.5,
            pre_nms_topk=(cfg.rpn_pre_nms_top_n,) * 2,
            post_nms_topk=(cfg.rpn_post_nms_top_n,) * 2,
            nms_thresh=cfg.rpn_nms_thresh,
            min_box_size=cfg.rpn_min_size,
        )
        self.pooler = ROIPooler(
            output_size=cfg.pool_size, scales=(1.0 / cfg.feat_stride,), sampling_ratio=0, pooler_type="ROIPool"
        )
        n5 = cfg.blocks[3]
        stride5 = 1 if cfg.res5_dilation == 2 else 2
        self.res5 = nn.Sequential(*stage(n5, 4 * r2, 8 * w, 8 * r2, stride5, cfg.res5_dilation))
        self.roi_heads = ours.roi_heads  # class, box and attribute predictors: plain linear layers
        self._load(ours)
        self.eval()

    def _load(self, ours: BottomUpDetector) -> None:
        state = state_for_export(ours, "d2-pkl")
        mapping = {}
        for key, value in state.items():
            if key.startswith("backbone."):
                mapping[key] = value
            elif key.startswith("proposal_generator."):
                mapping[key] = value
            elif key.startswith("roi_heads.res5."):
                mapping["res5." + key[len("roi_heads.res5.") :]] = value
        own = {
            k: v for k, v in self.state_dict().items() if not k.startswith("roi_heads.") and "anchor_generator" not in k
        }
        missing = sorted(set(own) - set(mapping))
        unexpected = sorted(set(mapping) - set(own))
        if missing or unexpected:
            raise RuntimeError(f"detectron2 backend: weights do not fit (missing {missing}, unexpected {unexpected})")
        self.load_state_dict({k: torch.as_tensor(mapping[k]) for k in own}, strict=False)
        self.proposal_generator.anchor_generator.cell_anchors[0].copy_(ours.proposals.cell_anchors)

    @torch.inference_mode()
    def forward(
        self,
        images: torch.Tensor,
        image_sizes: list[tuple[int, int]],
        scales: list,
        boxes: list[torch.Tensor] | None = None,
    ) -> list[dict]:
        """Same contract as `BottomUpDetector.forward`, one image at a time."""
        from detectron2.structures import Boxes, ImageList

        out = []
        for i, ((h, w), s) in enumerate(zip(image_sizes, scales)):
            x = images[i : i + 1, :, :h, :w].contiguous()
            feats = self.backbone(x)
            if boxes is None:
                proposals, _ = self.proposal_generator(ImageList(x, [(h, w)]), feats, None)
                rois = proposals[0].proposal_boxes.tensor.float()
            else:  # given boxes go in scaled and unclipped, as py-bottom-up-attention's given-box demo
                rois = to_resized(boxes[i].to(x.device, torch.float32).reshape(-1, 4), s)
            pooled = self.pooler([feats["res4"].float()], [Boxes(rois)])
            feature = self.res5(pooled).float().mean(dim=(2, 3))  # (R, D)
            given = None if boxes is None else boxes[i]
            out.append(pack_output(rois, feature, self.roi_heads.predict(feature), (h, w), s, self.cfg, given))
        return out

    def regions(self, outputs, selection):
        return BottomUpDetector.regions(self, outputs, selection)  # the same selection code
