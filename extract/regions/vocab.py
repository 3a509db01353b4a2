"""Names of the Visual Genome classes the bottom-up-attention detector predicts.

The two lists ship as package data (`data/objects_vocab.txt`, 1600 lines, and
`data/attributes_vocab.txt`, 400 lines): the `1600-400-20` vocabularies of the original
release (peteanderson80/bottom-up-attention, `data/genome/1600-400-20/`), as
MILVLG/bottom-up-attention.pytorch ships them in `evaluation/`. A line may hold comma-separated
synonyms ("stop sign,stopsign"); the display name is the first, as the reference demo notebooks
show it.

Id convention (checked against the code that produces them): the stored `object_ids` /
`attr_ids` of a region feature set index these lines from 0. The network keeps Caffe's class
layout (background at 0, objects 1..1600; "no attribute" at 0, attributes 1..400;
`extract/regions/roi_heads.py`), the checkpoint loader moves detectron2's background-last rows
of py-bottom-up-attention's `.pkl` to the front (`checkpoints._bg_first`), and
`box_selection.labels` takes the best of the real classes (`cls_prob[:, 1:]`), so stored id
`i` is Caffe class `i + 1` (bua.pytorch's demo: `classes[objects[i] + 1]` with
`__background__` prepended) and detectron2 class `i` (py-bottom-up-attention's demo:
`vg_classes[pred_class]` after dropping the last column). Padding rows hold -1.

    from lighthead.extract.regions.vocab import object_names, attribute_names, region_labels
    object_names([0, 50])        # ['yolk', 'man']
    region_labels(item, top=5)   # ['white shirt 0.91', ...] from a stored item
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Iterable, Mapping

import numpy as np

NUM_OBJECTS = 1600  # VG object classes (background not counted)
NUM_ATTRIBUTES = 400  # VG attribute classes ("no attribute" not counted)
ATTR_THRESHOLD = 0.1  # an attribute is shown only above this score (the reference demos' attr_thresh)
_FILES = {"objects": "objects_vocab.txt", "attributes": "attributes_vocab.txt"}


@cache
def synonyms(kind: str) -> tuple[tuple[str, ...], ...]:
    """Every line of the `kind` list ("objects" or "attributes") as its synonyms, in file order."""
    if kind not in _FILES:
        raise ValueError(f"unknown vocabulary {kind!r}; use objects or attributes")
    text = resources.files("lighthead.extract.regions").joinpath("data", _FILES[kind]).read_text("utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    want = NUM_OBJECTS if kind == "objects" else NUM_ATTRIBUTES
    if len(lines) != want:  # a broken install, never user input
        raise RuntimeError(f"package data {_FILES[kind]} has {len(lines)} lines, expected {want}")
    return tuple(tuple(s.strip().lower() for s in line.split(",")) for line in lines)


@cache
def _display(kind: str) -> tuple[str, ...]:
    """Display names (first synonyms) of the `kind` list, built once: labels look them up per region."""
    return tuple(s[0] for s in synonyms(kind))


def objects() -> list[str]:
    """The 1600 object display names; index = stored object id."""
    return list(_display("objects"))


def attributes() -> list[str]:
    """The 400 attribute display names; index = stored attribute id."""
    return list(_display("attributes"))


def _names(ids: Iterable[Any], names: tuple[str, ...], what: str) -> list[str]:
    out = []
    for i in np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).reshape(-1).tolist():
        i = int(i)
        if i == -1:
            out.append("")  # padding row
        elif 0 <= i < len(names):
            out.append(names[i])
        else:
            raise ValueError(f"{what} id {i} is outside the Visual Genome list (0..{len(names) - 1}, -1 = padding)")
    return out


def object_names(ids: Iterable[Any]) -> list[str]:
    """Display names of stored object ids ("" for padding, -1); others raise ValueError."""
    return _names(ids, _display("objects"), "object")


def attribute_names(ids: Iterable[Any]) -> list[str]:
    """Display names of stored attribute ids ("" for padding, -1); others raise ValueError."""
    return _names(ids, _display("attributes"), "attribute")


def uses_vg_vocab(attrs: Mapping[str, Any]) -> bool:
    """Whether a region feature set's ids index these lists: its detector has 1601 classes and
    401 attributes (random-weight test presets with fewer classes do not)."""
    config = attrs.get("config") or {}
    return (
        int(config.get("num_classes", NUM_OBJECTS + 1)) == NUM_OBJECTS + 1
        and int(config.get("num_attributes", NUM_ATTRIBUTES + 1)) == NUM_ATTRIBUTES + 1
    )


def label(
    object_id: int,
    score: float,
    attr_id: int = -1,
    attr_score: float = 0.0,
    vg: bool = True,
    attr_threshold: float = ATTR_THRESHOLD,
) -> str:
    """The label `attribute object score` the reference demos print; the attribute only above
    `attr_threshold`. vg False: ids are shown as numbers (a detector with other classes)."""
    obj = object_names([object_id])[0] if vg else f"class {object_id}"
    text = obj
    if attr_id >= 0 and attr_score > attr_threshold:
        attr = attribute_names([attr_id])[0] if vg else f"attr {attr_id}"
        text = f"{attr} {obj}"
    return f"{text} {score:.2f}"


def region_order(item: Mapping[str, np.ndarray], top: int | None = None) -> np.ndarray:
    """Indices of a stored item's real regions (padding dropped), most confident first, at most `top`."""
    rows = len(item["boxes"] if "boxes" in item else item["object_ids"])
    n = min(int(item["num_boxes"]), rows) if "num_boxes" in item else rows
    scores = np.asarray(item["object_scores"], np.float64)[:n] if "object_scores" in item else np.zeros(n)
    order = np.argsort(-scores, kind="stable")
    if "object_ids" in item:
        order = order[np.asarray(item["object_ids"])[order] >= 0]
    return order[:top] if top else order


def region_labels(
    item: Mapping[str, np.ndarray], top: int | None = None, vg: bool = True, attr_threshold: float = ATTR_THRESHOLD
) -> list[str]:
    """Labels of a stored region item (fields object_ids, object_scores, attr_ids, attr_scores,
    num_boxes), most confident first."""
    has_attr = "attr_ids" in item and "attr_scores" in item
    return [
        label(
            int(item["object_ids"][i]),
            float(item["object_scores"][i]),
            int(item["attr_ids"][i]) if has_attr else -1,
            float(item["attr_scores"][i]) if has_attr else 0.0,
            vg=vg,
            attr_threshold=attr_threshold,
        )
        for i in region_order(item, top)
    ]


def top_objects(id_arrays: Iterable[np.ndarray], k: int = 10, vg: bool = True) -> list[tuple[str, int]]:
    """The k most frequent object names over several images' stored ids (padding ignored)."""
    counts = np.zeros(NUM_OBJECTS if vg else 0, np.int64)
    for ids in id_arrays:
        ids = np.asarray(ids).reshape(-1)
        ids = ids[ids >= 0]
        if ids.size:
            if ids.max() >= counts.size:
                counts = np.concatenate([counts, np.zeros(int(ids.max()) + 1 - counts.size, np.int64)])
            counts += np.bincount(ids, minlength=counts.size)
    order = [int(i) for i in np.argsort(-counts, kind="stable")[:k] if counts[i] > 0]
    names = object_names(order) if vg else [f"class {i}" for i in order]
    return [(n, int(counts[i])) for n, i in zip(names, order)]
