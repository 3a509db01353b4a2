"""ROI pooling on res4, res5 per ROI, mean pooling, class/box predictor and attribute head.

Class layout is Caffe's: index 0 is background (objects are 1..1600) and attribute index 0
is "no attribute" (attributes are 1..400); the checkpoint loader reorders detectron2-layout
weights into it.

Attribute probabilities follow the config's `attr_softmax`: "all" is a softmax over all 401
outputs (Caffe's attr_prob layer; bottom-up-attention.pytorch's `F.softmax(attr_linear2(...))`,
its extractor then takes the best of columns 1..400); "real" is a softmax over the 400 real
attributes only, with column 0 ("no attribute") set to 0 (py-bottom-up-attention's demos:
`pred_attr_logits[..., :-1].softmax(-1)`, its "no attribute" logit being last). The best
attribute is the same under both; its score is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_pool

from lighthead.extract.regions.backbone import Res5
from lighthead.extract.regions.config import DetectorConfig


class BoxPredictor(nn.Module):
    """Linear classifier over num_classes and class-specific box deltas (num_classes x 4)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(dim, num_classes)
        self.bbox_pred = nn.Linear(dim, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class AttributeHead(nn.Module):
    """[feature, embed(argmax class)] -> FC -> ReLU -> attribute logits (Caffe `fc_attr`)."""

    def __init__(self, dim: int, num_classes: int, embed_dim: int, hidden: int, num_attributes: int):
        super().__init__()
        self.cls_embedding = nn.Embedding(num_classes, embed_dim)
        self.fc_attr = nn.Linear(dim + embed_dim, hidden)
        self.attr_score = nn.Linear(hidden, num_attributes)

    def forward(self, x: torch.Tensor, cls_logits: torch.Tensor) -> torch.Tensor:
        # The class fed back is the argmax over all classes, background included (Caffe ArgMax).
        emb = self.cls_embedding(cls_logits.argmax(dim=1))  # (R, E)
        return self.attr_score(F.relu(self.fc_attr(torch.cat([x, emb.to(x.dtype)], dim=1))))


class ROIHeads(nn.Module):
    """Features and predictions for given ROIs of a batch."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.channels_last = False  # set by the model: run res5 in channels-last layout
        self.res5 = Res5(cfg.blocks[3], cfg.width, cfg.res2_out, cfg.res5_dilation, cfg.bn_eps)
        dim = cfg.feature_dim
        self.box_predictor = BoxPredictor(dim, cfg.num_classes)
        self.attribute_head = (
            AttributeHead(dim, cfg.num_classes, cfg.attr_embed_dim, cfg.attr_hidden_dim, cfg.num_attributes)
            if cfg.attributes
            else None
        )

    def pooled_features(self, res4: torch.Tensor, rois: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Mean-pooled res5 features of ROIs.

        res4: (B, C, H, W); rois: (R, 5) rows (batch index, x1, y1, x2, y2) in resized pixels.
        Returns (R, D) float32. ROIs go through res5 in chunks to bound memory.
        """
        chunk = chunk or (self.cfg.roi_chunk if res4.is_cuda else self.cfg.cpu_roi_chunk)
        out = []
        for start in range(0, rois.shape[0], chunk):
            part = rois[start : start + chunk].to(res4.dtype)
            x = roi_pool(res4, part, output_size=self.cfg.pool_size, spatial_scale=1.0 / self.cfg.feat_stride)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)  # (r, C, P, P)
            x = self.res5(x)
            out.append(x.float().mean(dim=(2, 3)))  # (r, D)
        if not out:
            return res4.new_zeros((0, self.cfg.feature_dim), dtype=torch.float32)
        return torch.cat(out, dim=0)

    def predict(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class (and attribute, when the head exists) probabilities and box deltas of (R, D) features."""
        with torch.autocast(feats.device.type, enabled=False):  # scores decide the selection: float32
            return self._predict(feats.float())

    def _predict(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        cls_logits, deltas = self.box_predictor(feats)
        out = {
            "cls_prob": F.softmax(cls_logits.float(), dim=1),  # (R, num_classes)
            "deltas": deltas.float(),  # (R, 4 * num_classes)
        }
        if self.attribute_head is not None:
            attr_logits = self.attribute_head(feats, cls_logits).float()  # (R, num_attributes)
            if self.cfg.attr_softmax == "real":
                real = F.softmax(attr_logits[:, 1:], dim=1)  # (R, num_attributes - 1)
                out["attr_prob"] = torch.cat([torch.zeros_like(attr_logits[:, :1]), real], dim=1)
            else:
                out["attr_prob"] = F.softmax(attr_logits, dim=1)
        return out
