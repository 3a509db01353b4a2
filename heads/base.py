"""What every head is: an `nn.Module` with a config dataclass, registered by name, built from
its config and the data's sizes. This module is the contract between the heads and the
pipeline (training loop, tasks, scoring): it declares every method, hook and setting the
pipeline may call or read on a head or its config, each hook with a documented default.

Heads receive tensors only (never images, text models or HDF5). A batch is a dict of tensors;
the keys a head reads are listed in its `inputs` (see `BATCH_KEYS`), and the task layer in
`pipelines/tasks/` builds exactly those from the store.

Configs (dataclasses, one per head):
- `HeadConfig`: what the loop reads from every head (`epochs`, `batch_size`, `grad_clip`),
  `num_regions`, and `DATASET_DEFAULTS`;
- `RetrievalConfig`: adds `semantic_labels()` (the multi-hot labels a head reads, CASC's);
- `SentimentConfig`: adds `records`, `aux_every` and `aux_store`;
- feature sources: the fields declared with `source(...)`; `feature_sources(cfg)` lists them.

Heads (`nn.Module`s):
- `Head`: `from_config(cfg, data)` (builds the head from its config and a `DataInfo`),
  `loss(batch)`, `optimizers()`; hooks `start_epoch(epoch)` and `optimizer_for(batch)`;
- `RetrievalHead`: `encode_image(batch)`, `encode_text(batch)`, `score(image_enc, text_enc)
  -> (n_images, n_texts)`, so evaluation encodes each side once and scores blocks of pairs;
  hook `pair_bytes(image_enc, text_enc)`;
- `SentimentHead`: `forward(batch) -> logits (B, 3)`; hooks `explain(batch)` and
  `alignment_target(batch)`.
"""

from __future__ import annotations

import dataclasses
import operator
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar, Mapping, TypeVar

import torch
from torch import nn

from lighthead.store.registry import Registry

# Batch keys and their shapes. Letters: B batch, K regions, L tokens, D feature width,
# C label vocabulary, H/W thumbnail size.
BATCH_KEYS = {
    "regions": "(B, K, 2048) float: region features",
    "region_mask": "(B, K) bool: True on real regions (variable-K sets are padded)",
    "boxes": "(B, K, 4) float: region boxes, x1 y1 x2 y2, in pixels",
    "image_size": "(B, 2) float: image width, height",
    "global": "(B, D) float: global CNN feature",
    "thumb": "(B, 3, H, W) uint8: thumbnail",
    "word_ids": "(B, L) long: caption word ids (0 = padding)",
    "tokens": "(B, L, D) float: cached token features of a frozen text encoder",
    "text_mask": "(B, L) bool: True on real words/tokens",
    "text_len": "(B,) long: number of real words/tokens",
    "image_index": "(B,) long: which image a caption belongs to (for in-batch positives)",
    "labels": "(B, C) float: multi-hot semantic labels (CASC)",
    "label": "(B,) long: sentiment (0 negative, 1 neutral, 2 positive)",
    "relevance": "(B,) long: image-target relevance (ITM)",
    "target_box": "(B, 4) float: annotated box of the target (ITM)",
    "has_box": "(B,) bool: the sample has an annotated box (ITM)",
    "target_tokens": "(B, L, D) float: token features of the target phrase alone (ITM)",
    "target_mask": "(B, L) bool: True on real target tokens (ITM)",
}

HEADS: Registry[type[Head]] = Registry("head")

# ---- feature sources ------------------------------------------------------------------------

# Kind of feature set -> the prefix of its names in the store. The kinds are what the task reads:
# "regions" (keyed by image: features, boxes), "global" (by image: one vector), "thumbs" (by
# image: uint8 thumbnails), "words" (by caption: word ids), "tokens" (by caption: cached token
# features of a frozen text encoder, in the store's "text/..." sets).
SOURCE_PREFIXES = {
    "regions": "regions/",
    "global": "global/",
    "thumbs": "thumbs/",
    "words": "words/",
    "tokens": "text/",
}
_SOURCE = "lighthead.source"  # the dataclass field metadata key that marks a feature source


def source(*kinds: str, default: str) -> Any:
    """A config field that names a feature set the head reads: `default`, of one of `kinds`.

    `regions: str = source("regions", default="regions/butd-r101-vg-36")`. A field that may name
    either of two kinds (VSE++'s image: a global vector or regions) lists both; the value's
    prefix (`SOURCE_PREFIXES`) says which one a run reads. An empty value reads nothing.
    """
    unknown = [k for k in kinds if k not in SOURCE_PREFIXES]
    if not kinds or unknown:
        raise ValueError(f"source kinds must be among {', '.join(SOURCE_PREFIXES)}, got {kinds}")
    return dataclasses.field(default=default, metadata={_SOURCE: kinds})


def source_kinds(config_class: type) -> dict[str, tuple[str, ...]]:
    """Field name -> the kinds it may name, for every field declared with `source`."""
    return {f.name: f.metadata[_SOURCE] for f in dataclasses.fields(config_class) if _SOURCE in f.metadata}


def feature_sources(cfg: Any) -> dict[str, tuple[str, str]]:
    """Field name -> (kind, feature set name) of every feature set the config reads.

    Only fields declared with `source` count; an empty one reads nothing. A value outside its
    declared kinds raises ValueError naming the field.
    """
    out: dict[str, tuple[str, str]] = {}
    for f in dataclasses.fields(cfg):
        if _SOURCE not in f.metadata:
            continue
        value = getattr(cfg, f.name)  # a declared field of this dataclass
        if value == "":
            continue
        kinds = f.metadata[_SOURCE]
        kind = next((k for k in kinds if isinstance(value, str) and value.startswith(SOURCE_PREFIXES[k])), None)
        if kind is None:
            allowed = " or ".join(f"{SOURCE_PREFIXES[k]}..." for k in kinds)
            raise ValueError(f"{f.name} must name a {allowed} feature set, got {value!r}")
        out[f.name] = (kind, value)
    return out


# ---- configs ----------------------------------------------------------------------------------


@dataclass
class HeadConfig:
    """What the pipeline reads from every head's config. A head's config subclasses
    `RetrievalConfig` or `SentimentConfig` and re-declares these fields with its own defaults."""

    epochs: int = 10  # training epochs (passes over the training set)
    batch_size: int = 128  # samples per training batch
    grad_clip: float = 0.0  # the loop clips each optimiser's gradient norm to this (0 = off)

    # dataset name (or store profile, e.g. "precomp") -> field values that replace the defaults
    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    @property
    def num_regions(self) -> int:
        """Regions per image the task reads: the first K of each image's (0 = all).
        A config that has a setting for it overrides this (a field, or a property)."""
        return 0


@dataclass
class RetrievalConfig(HeadConfig):
    """Base of every retrieval head's config."""

    def semantic_labels(self) -> tuple[str, int] | None:
        """(label type, label count) of the multi-hot semantic labels the head reads as batch key
        "labels" (the task builds them from the training captions and stores them), or None
        (default): the head reads none."""
        return None


@dataclass
class SentimentConfig(HeadConfig):
    """Base of every sentiment head's config."""

    RECORD_KIND: ClassVar[str] = "auto"  # the records the head trains on, when it has no `records` field

    @property
    def records(self) -> str:
        """Which records train the head: "post" (image-text posts), "target" (sentence, target,
        image) or "auto" (targets when the store has labelled ones). Default: `RECORD_KIND`;
        a config with a `records` field lets the user choose."""
        return self.RECORD_KIND

    @property
    def aux_every(self) -> int:
        """One auxiliary (annotation) batch before every `aux_every` main batches; 0 (default): none."""
        return 0

    @property
    def aux_store(self) -> str:
        """Store holding the auxiliary annotations; "" (default): the training store."""
        return ""


# ---- the data's sizes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DataInfo:
    """Sizes measured from the data by the task, which a head's `from_config` passes to its
    constructor. None: the task did not measure it (the head reads no such source); a head then
    falls back to its constructor's default. Written to a run's `data_info.json`."""

    dataset: str | None = None  # dataset name (picks the config's DATASET_DEFAULTS)
    region_dim: int | None = None  # width D of the region features
    num_regions: int | None = None  # regions per image read (None also: a variable-K set)
    global_dim: int | None = None  # width of the global image vectors
    thumb_size: int | None = None  # side of the square thumbnails
    vocab_size: int | None = None  # word vocabulary size (ids 0..vocab_size-1, 0 = padding)
    token_dim: int | None = None  # width of the cached token features
    num_labels: int | None = None  # label classes: semantic label words (retrieval), sentiments (3)
    label_pos_weight: tuple[float, ...] | None = None  # per semantic label: #negative / #positive images
    records: str | None = None  # the records a sentiment task trains on: "post" or "target"
    train_samples: int | None = None  # training samples per epoch (sizes per-step schedules)
    aux_train_samples: int | None = None  # auxiliary (annotated) training samples (0: none)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)  # each declared field in turn
            if value is None:
                continue
            if f.name in ("dataset", "records"):
                if not isinstance(value, str):
                    raise ValueError(f"{f.name} must be a string, got {value!r}")
            elif f.name == "label_pos_weight":
                weights = _weights(value)
                if weights is None:
                    raise ValueError(f"label_pos_weight must be a list of numbers, got {value!r}")
                object.__setattr__(self, f.name, weights)  # frozen: set once, as a tuple
            else:
                size = _size(value)
                if size is None:
                    raise ValueError(f"{f.name} must be a non-negative integer, got {value!r}")
                object.__setattr__(self, f.name, size)

    @classmethod
    def of(cls, data: DataInfo | Mapping[str, Any]) -> DataInfo:
        """`data` itself, or a DataInfo of its mapping (a task's dict, a run's data_info.json);
        a key that is no field raises ValueError naming it."""
        if isinstance(data, DataInfo):
            return data
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown data size {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        """The measured sizes as a JSON object (None left out, weights as a list)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if "label_pos_weight" in out:
            out["label_pos_weight"] = list(out["label_pos_weight"])
        return out


def _size(value: Any) -> int | None:
    """A non-negative integer (numpy integers too), else None."""
    if isinstance(value, bool):
        return None
    try:
        size = operator.index(value)
    except TypeError:
        return None
    return size if size >= 0 else None


def _weights(value: Any) -> tuple[float, ...] | None:
    """A sequence of real numbers as a tuple of floats, else None."""
    if isinstance(value, (str, bytes, Mapping)):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in items):
        return None
    return tuple(float(v) for v in items)


# ---- heads --------------------------------------------------------------------------------------

HeadT = TypeVar("HeadT", bound="Head")


class Head(nn.Module, metaclass=ABCMeta):
    """Base of every head. Subclass `RetrievalHead` or `SentimentHead`, not this."""

    task: ClassVar[str] = ""  # "retrieval" or "sentiment": the task that feeds and scores the head
    inputs: ClassVar[tuple[str, ...]] = ()  # batch keys the head reads (BATCH_KEYS); may be narrowed per instance
    config_class: ClassVar[type[HeadConfig]] = HeadConfig  # the head's config dataclass

    @classmethod
    @abstractmethod
    def from_config(cls: type[HeadT], cfg: Any, data: DataInfo) -> HeadT:
        """The head for config `cfg` (a `config_class`) and the data's sizes: calls the
        constructor with each size it takes, named (as detectron2's `from_config`)."""
        raise NotImplementedError(f"{cls.__name__} does not implement from_config")

    @abstractmethod
    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{"loss": the scalar that is back-propagated, plus named parts (detached) to log}."""

    @abstractmethod
    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """(optimizer, lr scheduler or None) pairs; the loop steps the optimisers after each
        backward (see `optimizer_for`) and the schedulers once per epoch."""

    def start_epoch(self, epoch: int) -> None:
        """Called by the loop before each training epoch (0-based); default: nothing.
        Heads whose loss changes with the epoch (a negatives warm-up) keep it."""

    def optimizer_for(self, batch: dict[str, Any]) -> int | None:
        """Index into `optimizers()` of the one optimiser this batch steps, for heads trained in
        alternating phases (ITM's main and auxiliary batches); None (default): every optimiser."""
        return None


class RetrievalHead(Head):
    """Image-text matching: scores every image against every caption.

    Evaluation encodes each side once (`encode_image`, `encode_text`: dicts of tensors whose
    first axis is the item) and scores blocks of pairs with `score`."""

    task: ClassVar[str] = "retrieval"
    config_class: ClassVar[type[HeadConfig]] = RetrievalConfig

    @abstractmethod
    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The pair-independent part of each image of the batch: {name: (B, ...)}."""

    @abstractmethod
    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The pair-independent part of each caption of the batch: {name: (B, ...)}."""

    @abstractmethod
    def score(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """(I, T) scores of every image encoding against every caption encoding (higher = better match)."""

    def pair_bytes(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> int:
        """Working memory (bytes) of scoring one pair of these encodings, which sizes the blocks
        of pairs scored at once. Default 64: a head whose score is a product of pooled vectors
        needs little per pair; heads that attend across the pair (SCAN, MMCA) say more."""
        return 64


class SentimentHead(Head):
    """Sentiment of an image-text post or of a target in it: three logits per sample."""

    task: ClassVar[str] = "sentiment"
    config_class: ClassVar[type[HeadConfig]] = SentimentConfig

    @abstractmethod
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 3) sentiment logits (0 negative, 1 neutral, 2 positive)."""

    def explain(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What evaluation and the example figures read: "logits" (B, 3) and whatever explains
        them (e.g. "attn", "gate", or ITM's "relevance" (B,) and "align" (B, K)).
        Default: {"logits": self(batch)}."""
        return {"logits": self(batch)}

    def alignment_target(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For a head whose `explain` gives "align" (B, K): the ground-truth alignment (B, K)
        and which rows have one (B,) bool, to score "align" against. None (default): the head
        has no alignment supervision, and no alignment metrics are reported."""
        return None
