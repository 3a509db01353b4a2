"""MS-COCO with the Karpathy split (`dataset_coco.json`), and the Karpathy-file reader f30k shares.

Expected layout under the root::

    dataset_coco.json          the Karpathy split file
    train2014/  val2014/       the COCO images (the file's "filepath" field names the folder)

The images may also sit under `images/train2014/`, `images/val2014/`. "restval" images
count as training images (113,287 train / 5,000 val / 5,000 test), and each image keeps its
first five captions, as SCAN and VSE++ do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lighthead.pipelines.datasets.base import DATASETS, DatasetError, Record, read_text

CAPTIONS_PER_IMAGE = 5  # retrieval protocols assume five captions per image
_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_karpathy(json_path: Path, image_dirs: list[Path], id_field: str) -> list[Record]:
    """Records of a Karpathy split file.

    json_path: `dataset_coco.json` / `dataset_flickr30k.json`.
    image_dirs: folders searched, in order, for `[filepath/]filename`.
    id_field: the entry field used as record id ("cocoid"), or "filename" for its stem.
    Raises DatasetError naming the file and the entry of anything malformed or missing.
    """
    try:
        data = json.loads(read_text(json_path))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{json_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path}: expected an object with an 'images' list (Karpathy split format)")
    records: list[Record] = []
    seen: dict[str, tuple[int, str]] = {}  # id -> (entry index, image file)
    for i, entry in enumerate(data["images"]):
        where = f"{json_path}: images[{i}]"
        r = _record(entry, where, image_dirs, id_field)
        if r.id in seen:
            j, other = seen[r.id]
            same = "" if other != r.image_path else " (the same image listed twice)"
            raise DatasetError(
                f"{where}: duplicate image id {r.id!r}{same}: {other} (images[{j}]) and "
                f"{r.image_path}"
                + (
                    "; ids are file names without the extension, so rename one"
                    if id_field == "filename" and not same
                    else ""
                )
            )
        seen[r.id] = (i, r.image_path)
        records.append(r)
    if not records:
        raise DatasetError(f"{json_path}: no images listed")
    return records


def _record(entry: Any, where: str, image_dirs: list[Path], id_field: str) -> Record:
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected an object, got {type(entry).__name__}")
    for key in ("filename", "split", "sentences"):
        if key not in entry:
            raise DatasetError(f"{where}: missing field {key!r}")
    filename = entry["filename"]
    if not isinstance(filename, str) or not filename.strip():
        raise DatasetError(f"{where}: 'filename' is {json.dumps(filename)[:40]}; expected the image's file name")
    split = _SPLITS.get(entry["split"]) if isinstance(entry["split"], str) else None
    if split is None:
        raise DatasetError(f"{where} ({filename}): unknown split {entry['split']!r}; expected one of {sorted(_SPLITS)}")
    if id_field == "filename":
        item_id = Path(filename).stem
    elif id_field in entry:
        item_id = _item_id(entry[id_field], f"{where} ({filename})", id_field)
    else:
        raise DatasetError(f"{where} ({filename}): missing field {id_field!r}")
    if not isinstance(entry["sentences"], list):
        raise DatasetError(
            f"{where} ({filename}): 'sentences' is {json.dumps(entry['sentences'])[:40]}; "
            'expected a list of {"raw": caption} objects'
        )
    captions = []
    for j, sentence in enumerate(entry["sentences"]):
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            raise DatasetError(f"{where} ({filename}): sentences[{j}] has no 'raw' text")
        captions.append(raw.strip())
    if len(captions) < CAPTIONS_PER_IMAGE:
        raise DatasetError(f"{where} ({filename}): {len(captions)} captions, expected at least {CAPTIONS_PER_IMAGE}")
    folder = entry.get("filepath", "")
    if not isinstance(folder, str):
        raise DatasetError(f"{where} ({filename}): 'filepath' is {json.dumps(folder)[:40]}; expected a folder name")
    relative = Path(folder) / filename
    path = next((d / relative for d in image_dirs if (d / relative).is_file()), None)
    if path is None:
        looked = ", ".join(str(d / relative) for d in image_dirs)
        raise DatasetError(f"{where}: image {relative} not found (looked at {looked})")
    return Record(
        id=item_id,
        image_id=item_id,
        image_path=str(path),
        texts=captions[:CAPTIONS_PER_IMAGE],
        split=split,
        kind="image",
    )


def _item_id(value: Any, where: str, field: str) -> str:
    """An id field's value as text: a non-negative integer or a non-empty string (never null)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or (isinstance(value, int) and value < 0)
        or (isinstance(value, str) and not value.strip())
    ):
        raise DatasetError(
            f"{where}: {field!r} is {json.dumps(value)[:40]}; expected an integer or a non-empty string id"
        )
    return str(value).strip()


def expect_file(root: Path, name: str, layout: str) -> Path:
    """`root/name`, or a DatasetError that shows the expected layout."""
    path = root / name
    if not path.is_file():
        raise DatasetError(f"{path} not found; expected under {root}:\n{layout}")
    return path


_LAYOUT = """  dataset_coco.json          (Karpathy split file)
  train2014/, val2014/        (COCO images; or images/train2014/, images/val2014/)"""


@DATASETS.register("coco")
def load(root: Path) -> list[Record]:
    """COCO Karpathy split: one record per image with its five captions."""
    json_path = expect_file(root, "dataset_coco.json", _LAYOUT)
    return read_karpathy(json_path, [root, root / "images"], id_field="cocoid")
