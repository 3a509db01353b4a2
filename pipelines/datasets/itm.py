"""The Image-Target Matching annotations (Yu et al., IJCAI 2022) on Twitter-2017 images.

Expected layout under the root::

    VG_train.pkl  VG_dev.pkl  VG_test.pkl   the released files (or the same content as VG_<split>.json)
    twitter2017_images/                     (or images/) holding <iid>.jpg; optional for text features

Each file maps a key to {"iid", "sentence" (with $T$), "aspect" (the target), "sentiment"
("0"/"1"/"2" or ""), "relation" ("0" unrelated, "1"/"2" related), "boxes" [(x1, y1, x2, y2), ...]}.
One "target" record per entry; `extra` holds "relevance" (0/1) and "box" (the first annotated
box of a related target, pixels, or None). 1,176 / 588 / 588 entries.

The pickles are read with an unpickler that refuses every class (`pickles.py`), so only plain
dicts, lists, tuples, strings and numbers load (a pickle cannot run code this way). Missing
images are not an error: a warning counts them, text jobs run and image jobs list them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lighthead.pipelines.datasets.base import DATASETS, DatasetError, Record, read_text, warn_missing_images
from lighthead.pipelines.datasets.pickles import read_plain_pickle
from lighthead.pipelines.datasets.twitter import PLACEHOLDER, image_folder, parse_label, release_image, text_field

_SPLITS = {"train": "VG_train", "val": "VG_dev", "test": "VG_test"}
_LAYOUT = """  VG_train.pkl, VG_dev.pkl, VG_test.pkl   (or VG_<split>.json with the same content)
  twitter2017_images/                      (the images <iid>.jpg; or images/)"""


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(path)) if path.suffix == ".json" else read_plain_pickle(path)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping of key -> entry, got {type(data).__name__}")
    return data


def _box(value: Any, where: str) -> list[float]:
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise DatasetError(f"{where}: malformed box {value!r}; expected (x1, y1, x2, y2) with x2 > x1, y2 > y1")
    return box


def _record(key: str, entry: Any, split: str, where: str, images: Path) -> Record:
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected a mapping, got {type(entry).__name__}")
    for field in ("iid", "sentence", "aspect", "relation"):
        if field not in entry:
            raise DatasetError(f"{where}: missing field {field!r}")
    iid, sentence, target = (text_field(entry, k, where) for k in ("iid", "sentence", "aspect"))
    relation = str(entry["relation"]).strip()
    if relation not in ("0", "1", "2"):
        raise DatasetError(f"{where}: unknown relation {relation!r}; expected 0 (unrelated), 1 or 2 (related)")
    relevance = 0 if relation == "0" else 1  # "2" marks a related target too (as the authors' loader reads it)
    if PLACEHOLDER not in sentence:
        raise DatasetError(f"{where}: the sentence has no {PLACEHOLDER} placeholder for the target")
    sentiment = str(entry.get("sentiment") or "").strip()
    boxes = entry.get("boxes") or []
    box = _box(boxes[0], where) if relevance and len(boxes) else None
    image_path = release_image(images, iid, where)
    return Record(
        id=f"{split}-{key}",
        image_id=Path(iid).stem,
        image_path=str(image_path),
        texts=[sentence],
        split=split,
        kind="target",
        label=parse_label(sentiment, where) if sentiment else None,
        target=target,
        extra={"relevance": relevance, "box": box},
    )


@DATASETS.register("itm")
def load(root: Path) -> list[Record]:
    """ITM annotations: one 'target' record per entry with its relevance and aligned box."""
    records = []
    images = image_folder(root, ["twitter2017_images", "images"], _LAYOUT, required=False)
    for split, stem in _SPLITS.items():
        path = next((root / f"{stem}{ext}" for ext in (".json", ".pkl") if (root / f"{stem}{ext}").is_file()), None)
        if path is None:
            raise DatasetError(f"{root / stem}.pkl not found; expected under {root}:\n{_LAYOUT}")
        for key, entry in _read(path).items():
            records.append(_record(str(key), entry, split, f"{path}: entry {key!r}", images))
    warn_missing_images(records, images)
    return records
