"""Region feature sets out as bottom-up-attention TSV and bottom-up-attention.pytorch `.npz`.

TSV, 10 fields (checked against LXMERT `src/utils.py` `load_obj_tsv` and py-bottom-up-attention's
`detectron2_mscoco_proposal_maxnms.py`, which writes it): `csv.DictWriter` rows, tab-delimited,
`\\r\\n` line ends, fields `img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf,
num_boxes, boxes, features`; the arrays are base64 of int64 ids, float32 confidences, float32
`[n, 4]` boxes and float32 `[n, D]` features. Only the `num_boxes` real rows of a padded item
are written (load_obj_tsv reshapes by num_boxes). A set without object or attribute fields gets
ids 0 and confidences 0 there (what the writer script puts when it has no attributes); the
6-field Caffe layout (`image_id, image_w, image_h, num_boxes, boxes, features`) writes none.

npz (bottom-up-attention.pytorch `utils/extract_utils.py` `save_roi_features`): one
`<id>.npz` per item, `np.savez_compressed` with `x [n, D]` and `bbox [n, 4]` float32,
`num_bbox`, `image_h`, `image_w` and `info` (a dict: image_id, image_h, image_w, num_boxes,
objects_id int64, objects_conf float32, attrs_id, attrs_conf), which numpy pickles as that tool
does.
"""

from __future__ import annotations

import base64
import csv
import io
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lighthead.store.api import Store, open_store
from lighthead.store.errors import StoreError
from lighthead.store.export_output import ExportOutput
from lighthead.store.import_base import Progress
from lighthead.store.import_tsv import TSV10_FIELDS, TSV_FIELDS

_NEEDS = ("features", "boxes", "image_w", "image_h")


def feature_set(store: Store | str | os.PathLike, name: str) -> Any:
    store = store if isinstance(store, Store) else open_store(store)
    try:
        return store[name]
    except KeyError as exc:
        raise StoreError(f"{store.path}: {exc.args[0]}") from None


def _regions(fs: Any, progress: Progress | None) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(id, item with its padding rows dropped) in storage order."""
    missing = [f for f in _NEEDS if f not in fs.fields]
    if missing:
        raise StoreError(f"{fs.path}: not a region feature set (no field {missing[0]!r}); fields: {list(fs.fields)}")
    for k, (item_id, item) in enumerate(fs.items()):
        n = int(item["num_boxes"]) if "num_boxes" in item else len(item["boxes"])
        per_box = {key: v[:n] for key, v in item.items() if np.ndim(v) >= 1 and len(v) == len(item["boxes"])}
        if progress and k % 64 == 0:
            progress(k, len(fs))
        yield item_id, {**item, **per_box, "num_boxes": n}
    if progress:
        progress(len(fs), len(fs))


def _b64(arr: Any, dtype: Any) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<"))).decode("ascii")


def _per_box(item: dict[str, Any], key: str, dtype: Any) -> np.ndarray:
    return np.asarray(item[key], dtype) if key in item else np.zeros(item["num_boxes"], dtype)


def export_tsv(
    src: Store | str | os.PathLike,
    dest: str | os.PathLike,
    name: str,
    *,
    layout: str = "auto",
    progress: Progress | None = None,
) -> Path:
    """Write region feature set `name` as one TSV file `dest`. layout: "10", "6", or "auto"
    (10 when the set has object ids, else 6). Returns the file."""
    fs = feature_set(src, name)
    if layout == "auto":
        layout = "10" if "object_ids" in fs.fields else "6"
    if layout not in ("6", "10"):
        raise ValueError(f"layout must be 6, 10 or auto, not {layout!r}")
    dest = Path(dest)
    if dest.is_dir():
        raise StoreError(f"{dest}: is a directory; export tsv writes one file (give its name)")
    with ExportOutput(dest.parent) as out, open(out.tmp(dest.name), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, delimiter="\t", fieldnames=list(TSV10_FIELDS if layout == "10" else TSV_FIELDS))
        for item_id, item in _regions(fs, progress):
            if any(c in item_id for c in "\t\r\n"):
                raise StoreError(f"{fs.path}: id {item_id!r} holds a tab or line break, which a TSV line cannot")
            row = {
                "num_boxes": item["num_boxes"],
                "boxes": _b64(item["boxes"], np.float32),
                "features": _b64(item["features"], np.float32),
            }
            if layout == "10":
                row.update(
                    img_id=item_id,
                    img_h=int(item["image_h"]),
                    img_w=int(item["image_w"]),
                    objects_id=_b64(_per_box(item, "object_ids", np.int64), np.int64),
                    objects_conf=_b64(_per_box(item, "object_scores", np.float32), np.float32),
                    attrs_id=_b64(_per_box(item, "attr_ids", np.int64), np.int64),
                    attrs_conf=_b64(_per_box(item, "attr_scores", np.float32), np.float32),
                )
            else:
                row.update(image_id=item_id, image_w=int(item["image_w"]), image_h=int(item["image_h"]))
            writer.writerow(row)
    return dest


def _file_name(item_id: str, fs: Any) -> str:
    if not item_id or "/" in item_id or "\\" in item_id or "\x00" in item_id or item_id.startswith("."):
        raise StoreError(f"{fs.path}: id {item_id!r} cannot be a file name (<id>.npz)")
    return f"{item_id}.npz"


def export_npz(
    src: Store | str | os.PathLike, dest: str | os.PathLike, name: str, *, progress: Progress | None = None
) -> list[Path]:
    """Write region feature set `name` as one `<id>.npz` per item into the folder `dest`."""
    fs = feature_set(src, name)
    written = []
    with ExportOutput(dest) as out:
        for item_id, item in _regions(fs, progress):
            file_name = _file_name(item_id, fs)
            n, w, h = int(item["num_boxes"]), int(item["image_w"]), int(item["image_h"])
            info: dict[str, Any] = {"image_id": item_id, "image_h": h, "image_w": w, "num_boxes": n}
            if "object_ids" in item:
                info.update(
                    objects_id=_per_box(item, "object_ids", np.int64),
                    objects_conf=_per_box(item, "object_scores", np.float32),
                )
            if "attr_ids" in item:
                info.update(
                    attrs_id=_per_box(item, "attr_ids", np.int64), attrs_conf=_per_box(item, "attr_scores", np.float32)
                )
            buf = io.BytesIO()
            np.savez_compressed(
                buf,
                x=np.asarray(item["features"], np.float32),
                bbox=np.asarray(item["boxes"], np.float32),
                num_bbox=n,
                image_h=h,
                image_w=w,
                info=info,
            )
            out.tmp(file_name).write_bytes(buf.getvalue())
            written.append(out.final(file_name))
    return written
