"""What each part measures: `REAL` on a GPU, `DRY` on a CPU (--dry-run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckSizes:
    """What the self-check measures (bench/gpu_parts/check.py)."""

    detector: str  # detector preset of the host-sync count
    detector_overrides: dict[str, Any]  # DetectorConfig fields changed from the preset
    image_hw: tuple[int, int]  # the larger of its two images (the other is narrower: padded)
    nms: tuple[int, int, int]  # (images, ROIs, classes incl. background) of the NMS timing
    pin_batch: int  # images per prepared batch (pad / pin timing)
    score_size: tuple[int, int]  # images x captions of the scoring host-sync count
    tf32_size: tuple[int, int]  # images x captions of the TF32 score difference


@dataclass(frozen=True)
class Sizes:
    """What each part measures; `REAL` on a GPU, `DRY` on a CPU (--dry-run)."""

    detector: str  # detector preset (extract/regions/config.py)
    detector_overrides: dict[str, Any]  # DetectorConfig fields changed from the preset
    image_hw: tuple[int, int]  # size of the generated JPEGs (about; they vary by 1/8)
    detector_images: int  # images per timed pass
    detector_batches: tuple[int, ...]  # batch sizes, smallest first (its memory scales the others)
    rounds: int  # timed passes per detector / text case after the warm-up (the best counts)
    boxes: tuple[int, ...]  # fixed K of the box selection
    loop_batch: int  # batch of the whole-loop row
    loop_workers: int  # DataLoader workers decoding JPEGs in the whole-loop row
    bert: dict[str, Any]  # BertConfig fields ({}: BERT-base)
    sentences: int  # sentences per text pass
    text_batches: tuple[int, ...]  # TextEncoder batch sizes
    forward: tuple[int, int]  # (B, L) of the forward-only row
    score_sizes: tuple[tuple[int, int], ...]  # images x captions, smallest first
    score_info: dict[str, int]  # data sizes the scoring heads are built for
    score_overrides: dict[str, dict[str, str]]  # per head config overrides
    train_store: dict[str, Any]  # build_retrieval_store arguments
    train_sentiment: dict[str, Any]  # add_sentiment arguments
    train_steps: int  # timed training steps per head
    train_batch: int | None  # batch size of every head (None: each head's own)
    check: CheckSizes  # the self-check
    train_heads: tuple[str, ...] = ()  # heads to train (empty: every registered head)
    train_extra: dict[str, str] = field(default_factory=dict)  # config overrides of every head


REAL = Sizes(
    detector="r101",
    detector_overrides={},
    image_hw=(480, 640),
    detector_images=32,
    detector_batches=(1, 4, 8, 16),
    rounds=2,
    boxes=(36, 100),
    loop_batch=8,
    loop_workers=4,
    bert={},
    sentences=8192,
    text_batches=(64, 512),
    forward=(256, 128),
    score_sizes=((1000, 5000), (5000, 25000)),
    score_info={"region_dim": 2048, "vocab_size": 10_000, "token_dim": 768, "num_labels": 500},
    score_overrides={},
    train_store={"n_images": 1000, "splits": (980, 10, 10)},
    train_sentiment={},
    train_steps=10,
    train_batch=None,
    check=CheckSizes(
        detector="r101",
        detector_overrides={},
        image_hw=(600, 1000),
        nms=(8, 300, 1601),
        pin_batch=8,
        score_size=(500, 2500),
        tf32_size=(200, 1000),
    ),
)

DRY = Sizes(
    detector="tiny",
    detector_overrides={"rpn_post_nms_top_n": 100},
    image_hw=(96, 128),
    detector_images=2,
    detector_batches=(1, 2),
    rounds=1,
    boxes=(36, 100),
    loop_batch=2,
    loop_workers=0,
    bert={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    sentences=32,
    text_batches=(8, 16),
    forward=(4, 16),
    score_sizes=((6, 30), (12, 60)),
    score_info={"region_dim": 32, "vocab_size": 50, "token_dim": 16, "num_labels": 20},
    score_overrides={
        "casc": {"text": "text/x", "embed_size": "24", "label_hidden": "12"},
        "scan": {"text": "text/x", "embed_size": "24"},
        "mmca": {"embed_dim": "32", "heads": "4", "filters": "16"},
    },
    train_store={
        "n_images": 24,
        "splits": (16, 4, 4),
        "region_dim": 32,
        "num_regions": 8,
        "global_dim": 32,
        "token_dim": 16,
    },
    train_sentiment={"n_images": 24, "token_dim": 16, "region_dim": 32},
    train_steps=1,
    train_batch=4,
    check=CheckSizes(
        detector="tiny",
        detector_overrides={"rpn_post_nms_top_n": 100},
        image_hw=(96, 128),
        nms=(2, 100, 21),
        pin_batch=2,
        score_size=(6, 30),
        tf32_size=(6, 30),
    ),
    train_heads=("casc", "mmca", "itin"),  # GRU, Transformer, sentiment task
    train_extra={
        "embed_size": "16",
        "embed_dim": "24",
        "label_hidden": "16",
        "num_labels": "20",
        "d": "16",
        "k": "16",
        "heads": "2",
        "ff": "32",
        "word_dim": "16",
        "gru_layers": "1",
        "gen_width": "4",
        "disc_width": "4",
        "filters": "8",
    },
)
