"""The bottom-up-attention region detector (Anderson et al., CVPR 2018) in plain PyTorch.

ResNet-101 C4 Faster R-CNN trained on Visual Genome (1600 objects, 400 attributes), built
on torchvision.ops (nms, roi_pool, box_iou). Modules: `config` (DetectorConfig,
SelectionConfig, presets), `boxes` (anchors, deltas, clipping, NMS under Caffe or detectron2
pixel conventions), `backbone` (frozen-BN ResNet C4, res5), `rpn`, `roi_heads` (ROI pooling,
res5, class/box predictor, attribute head), `box_selection` (generate_tsv.py's rule and
py-bottom-up-attention's d2-maxnms), `model` (BottomUpDetector; boxes between original and
resized pixels), `checkpoints` (the .pkl/.pth users have, our safetensors; each format's
conventions), `batching` (each format's resize in DataLoader workers, padded batches by
orientation), `runner`
(the extraction loop with a background writer), `detectron2_backend` (the same network from
detectron2's modules, for parity, when installed).

What was checked against the reference code (search of the public repositories):

- peteanderson80/bottom-up-attention, models/vg/ResNet-101/faster_rcnn_end2end_final/test.prototxt:
  stem pool1 is a 3x3/2 max-pool with no padding (Caffe rounds pooled sizes up); the stride of
  res3a/res4a sits on branch2a, the first 1x1 conv; RPN conv 512 channels, rpn_cls_score 24 =
  2 x 12 anchors (softmax over bg/fg), rpn_bbox_pred 48; proposal layer scales (4, 8, 16, 32)
  with feat_stride 16; ROIPooling 14x14 at 1/16 on res4b22; res5a_branch1 and res5a_branch2a
  have stride 1 and every res5 3x3 conv has dilation 2, pad 2 - so res5 keeps 14x14 (SPEC said
  "stride 2 -> 7x7"; the prototxt and py-bottom-up-attention's RES5HALVE=False both say
  otherwise); pool5 = global average; cls_score 1601, bbox_pred 6404; attribute head: ArgMax
  over all 1601 cls_score outputs -> Embed(1601 -> 256) -> concat with pool5 (2304) -> fc_attr
  512 -> ReLU -> attr_score 401 -> softmax.
- same repo, lib/rpn/proposal_layer.py, lib/fast_rcnn/config.py, lib/fast_rcnn/bbox_transform.py:
  fg scores are the second half of the softmax channels; clip to [0, W-1]; drop proposals with
  width or height (x2-x1+1) < 16 * im_scale; sort, top 6000, NMS 0.7, top 300; TEST.SCALES 600,
  MAX_SIZE 1000, TEST.NMS 0.3, PIXEL_MEANS (102.9801, 115.9465, 122.7717); bbox_transform_inv
  uses +1 widths, x2 = ctr + w/2 and no clamp.
- same repo, tools/generate_tsv.py: boxes and features are those of the ROIs (rois / im_scale),
  not regressed boxes; per class (skipping 0) NMS at cfg.TEST.NMS over the ROIs, max_conf keeps
  the best surviving score; keep max_conf >= thresh, else top min_boxes / max_boxes by max_conf.
- MILVLG/bottom-up-attention.pytorch, bua/caffe/modeling/{backbone,rpn,rpn_outputs,roi_heads,
  fast_rcnn,box_regression}.py, configs/bua-caffe/extract-bua-caffe-r101.yaml, extract_features.py:
  stem max_pool2d(3, 2, padding=0, ceil_mode=True); RPN objectness 2A channels viewed as
  (N, 2, A, H, W) with softmax over dim 1; POOLER_TYPE ROIPool; RES5_DILATION 2; attribute
  layers cls_embed (1601x256), attr_linear1 (2304->512), attr_linear2 (512->401); extraction
  returns the proposal boxes; MIN_BOXES 10, MAX_BOXES 100, CONF_THRESH 0.2 with NMS 0.3 per
  class on the ROIs (the adaptive mode). Its .pth uses detectron2-style names under these.
- py-bottom-up-attention (read through adrelino/py-bottom-up-attention-extracted and
  furkanbiten/bottomup_topdown_features, which copy its diff; airsplay's repository itself is
  not in the index): stem padding 0 with ceil_mode (CAFFE_MAXPOOL); RPN hidden 512
  (HID_CHANNELS), one sigmoid logit per anchor; anchors SIZES [[64, 128, 256, 512]] (= 4..32 x 16)
  from detectron2's generator; RES5HALVE False = res5 stride 1, dilation 2; ROIPool; NUM_CLASSES
  1600 (detectron2 puts background last: its demos take scores[:, :-1]); attribute head
  cls_embedding (1601x256), fc_attr, attr_score (401; demos drop the last = "no attribute").

- airsplay/py-bottom-up-attention itself (fetched later), and facebookresearch/detectron2:
  detectron2/data/transforms/transform_gen.py `ResizeShortestEdge.get_transform` (upstream:
  `get_output_shape`): short side to min_size, long to scale * long, both shrunk when the
  unrounded long side passes max_size, then `int(x + 0.5)`; transform.py
  `ResizeTransform.apply_image`: `Image.fromarray(uint8).resize((new_w, new_h), BILINEAR)`;
  the model subtracts the mean afterwards. detectron2/modeling/postprocessing.py
  `detector_postprocess`: boxes times (output / input size) per axis, clipped to the output
  size, empty ones dropped. demo/detectron2_mscoco_proposal_maxnms.py (LXMERT's d2 36-box
  extraction): its own `fast_rcnn_inference_single_image` takes per ROI the best of the 1600
  classes, that class's regressed box (clipped), one class-agnostic NMS (torchvision) at
  `np.arange(0.3, 1.0, 0.1)` until >= 36 survive, top 36; `score_thresh=0.2` is passed and
  never used; features are those of the kept ROIs, attributes written as zeros.
  demo/demo_feature_extraction_attr.ipynb: attribute scores `pred_attr_logits[..., :-1].softmax(-1)`
  (400 real attributes); its box rule (detectron2's per-class `fast_rcnn_inference_single_image`
  with score > 0.2, NMS 0.5 -> 0.9 until exactly 36) is not offered here.
  demo/demo_feature_extraction_attr_given_box.ipynb: given boxes scaled by (new_w / w, new_h / h),
  not clipped, reported as given.
- MILVLG/bottom-up-attention.pytorch, bua/caffe/dataloader/transform_gen.py and
  utils/extract_utils.py `get_image_blob`: float image minus mean, `np.round(scale * long) >
  max_size` rule, `cv2.resize(fx=fy=scale, INTER_LINEAR)`; `save_roi_features`: boxes / im_scale,
  attribute conf = best of columns 1..400 of a softmax over all 401 (bua/caffe/modeling/fast_rcnn.py);
  utils/extract_features_singlegpu.py mode 3 (`bbox_feats`): given boxes * im_scale, not clipped.

Not verifiable from the index: the exact top level of `faster_rcnn_from_caffe*.pkl` (we accept
{"model": {...}}, {"blobs": {...}} or a flat dict, as detectron2's loader does), and whether
its converter reordered the RPN anchors for detectron2 (we run the .pkl exactly as detectron2
would: detectron2 anchors and order, continuous pixel boxes, box weights (10, 10, 5, 5); the
`conventions` field of DetectorConfig records which rules ran).
"""

from lighthead.extract.regions.checkpoints import (
    CheckpointError,
    LoadReport,
    export_checkpoint,
    load_checkpoint,
    save_safetensors,
)
from lighthead.extract.regions.config import PRESETS, DetectorConfig, SelectionConfig
from lighthead.extract.regions.model import BottomUpDetector, build_detector, init_random
from lighthead.extract.regions.runner import extract_regions, item_fields

__all__ = [
    "PRESETS",
    "BottomUpDetector",
    "CheckpointError",
    "DetectorConfig",
    "LoadReport",
    "SelectionConfig",
    "build_detector",
    "export_checkpoint",
    "extract_regions",
    "init_random",
    "item_fields",
    "load_checkpoint",
    "save_safetensors",
]
