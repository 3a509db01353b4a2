"""Folders of per-image `.npz` files: bottom-up-attention.pytorch's and UNITER's layouts.

The layout is told by the keys of the first file (every file of one import must share it):

- MILVLG/bottom-up-attention.pytorch (`utils/extract_utils.py` `save_roi_features`, written by
  `extract_features.py --extract-mode roi_feats`): `x [K, D]` float32 features, `bbox [K, 4]`
  float32 boxes in image pixels, `num_bbox`, `image_h`, `image_w`, and `info`, a dict with
  `image_id`, `image_h`, `image_w`, `num_boxes`, `objects_id [K]` int64, `objects_conf [K]`
  float32 and, with the attribute head, `attrs_id`, `attrs_conf` (ids exclude the background
  class). numpy stores the dict as a pickle: it is read with an allow-list unpickler
  (`store.safe_pickle`) that runs nothing. `x` stored as `[D, K]` (older dumps) is transposed.
- UNITER (ChenRocks/UNITER's BUTD image, `tools/generate_npz.py` `save_to_npz`):
  `features [K, D]`, `norm_bb [K, 6]` = (x1/W, y1/H, x2/W, y2/H, w/W, h/H), `conf [K, 1]`,
  `soft_labels [K, C]` (class probabilities, background first), all float16, file name
  `<prefix>_<image id>.npz`. The file holds no image size: boxes are scaled back to pixels with
  the size of the image file (the target must know it, i.e. import into a dataset store whose
  image files are present). Object ids are the best non-background class of `soft_labels`,
  scores `conf`; the soft labels themselves are not kept.

The id is the file stem, matched by the target.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lighthead.store.api import Store
from lighthead.store.errors import StoreError
from lighthead.store.import_base import (
    Progress,
    SameIds,
    Sink,
    Target,
    checked_size,
    no_trace_on_failure,
    open_dest,
    region_fields,
    region_item,
)
from lighthead.store.safe_pickle import UnsafePickle, read_member

NPZ_KEYS = ("x", "bbox", "num_bbox", "image_w", "image_h")  # bottom-up-attention.pytorch
UNITER_KEYS = ("features", "norm_bb")  # + conf, soft_labels
NORM_TOL = 4e-3  # float16 norm_bb: w/W must equal x2/W - x1/W within this


def _layout(keys: set[str], path: Path) -> str:
    if "x" in keys or "bbox" in keys:
        missing = [k for k in NPZ_KEYS if k not in keys]
        if missing:
            raise StoreError(f"{path}: missing key {missing[0]!r} (expected {', '.join(NPZ_KEYS)}[, info])")
        return "bua"
    if set(UNITER_KEYS) <= keys:
        return "uniter"
    raise StoreError(
        f"{path}: keys {sorted(keys)} are neither bottom-up-attention.pytorch's "
        f"({', '.join(NPZ_KEYS)}[, info]) nor UNITER's (features, norm_bb, conf, soft_labels)"
    )


def _int(value: Any, key: str, path: Path) -> int:
    v = np.asarray(value).reshape(-1)
    if (
        v.size != 1
        or v.dtype.kind not in "iuf"
        or (v.dtype.kind == "f" and not (np.isfinite(v[0]) and v[0] == np.floor(v[0])))
    ):
        raise StoreError(f"{path}: {key} {value!r} is not an integer")
    return int(v[0])  # a value that does not fit the int32 field is the writer's error


def _members(path: Path) -> dict[str, Any]:
    """Every member of the file (plain arrays, and `info` through the safe unpickler)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise StoreError(f"{path}: not a readable .npz ({exc})") from None
    with zf:
        try:
            keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            return {k: read_member(zf, k) for k in keys}
        except UnsafePickle as exc:
            raise StoreError(f"{path}: refused to unpickle its info: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - CRC, zlib, numpy header errors: all mean a damaged member
            raise StoreError(f"{path}: unreadable array ({exc})") from None


def _info_arrays(info: Any, n: int, w: int, h: int, path: Path) -> dict[str, np.ndarray]:
    """object/attribute arrays from bua's `info` dict, checked against the top-level values."""
    if not isinstance(info, dict):
        raise StoreError(f"{path}: info is a {type(info).__name__}, expected bottom-up-attention.pytorch's dict")
    for key, want in (("num_boxes", n), ("image_w", w), ("image_h", h)):
        if key in info and _int(info[key], f"info[{key!r}]", path) != want:
            raise StoreError(f"{path}: info[{key!r}] is {info[key]}, but the file's own value is {want}")
    out: dict[str, np.ndarray] = {}
    for ids, conf, names in (
        ("objects_id", "objects_conf", ("object_ids", "object_scores")),
        ("attrs_id", "attrs_conf", ("attr_ids", "attr_scores")),
    ):
        if (ids in info) != (conf in info):
            raise StoreError(f"{path}: info has {ids if ids in info else conf} without {conf if ids in info else ids}")
        if ids in info:
            a, c = np.asarray(info[ids]).reshape(-1), np.asarray(info[conf]).reshape(-1)
            if a.dtype.kind not in "iu" or c.dtype.kind != "f":
                raise StoreError(
                    f"{path}: info[{ids!r}] must be integers and info[{conf!r}] floats (have {a.dtype}, {c.dtype})"
                )
            out[names[0]], out[names[1]] = a, c
    return out


def _bua_item(m: dict[str, Any], path: Path, w_h: tuple[int, int]) -> tuple[Any, ...]:
    x, bbox = np.asarray(m["x"]), np.asarray(m["bbox"])
    n = _int(m["num_bbox"], "num_bbox", path)
    if x.ndim == 2 and x.shape[0] != n and x.shape[1] == n:
        x = x.T  # (D, K) -> (K, D)
    if bbox.ndim == 2 and len(bbox) != n:  # region_item checks x against bbox, not the stated count
        raise StoreError(f"{path}: num_bbox is {n}, but bbox has {len(bbox)} rows")
    per_box = _info_arrays(m["info"], n, *w_h, path) if "info" in m else {}
    return x, bbox, per_box


def _uniter_item(m: dict[str, Any], path: Path, size: tuple[int, int] | None) -> tuple[Any, ...]:
    if size is None:
        raise StoreError(
            f"{path}: UNITER's npz holds boxes relative to the image and not the image's size; "
            "import it into a dataset store whose records name the image files (their sizes are read)"
        )
    feats, norm = np.asarray(m["features"]), np.asarray(m["norm_bb"], np.float32)
    if norm.ndim != 2 or norm.shape[1] < 4 or norm.shape[0] != len(feats):
        raise StoreError(f"{path}: norm_bb has shape {norm.shape}, expected ({len(feats)}, 6)")
    if norm.shape[1] >= 6 and not np.allclose(norm[:, 4:6], norm[:, 2:4] - norm[:, 0:2], atol=NORM_TOL):
        raise StoreError(
            f"{path}: norm_bb columns 4-5 are not x2-x1, y2-y1: not UNITER's (x1/W, y1/H, x2/W, y2/H, w/W, h/H) layout"
        )
    w, h = size
    boxes = norm[:, :4] * np.array([w, h, w, h], np.float32)  # (K, 4) pixels
    per_box = {}
    if "conf" in m and "soft_labels" in m:
        soft = np.asarray(m["soft_labels"], np.float32)
        if soft.ndim != 2 or soft.shape[0] != len(feats) or soft.shape[1] < 2:
            raise StoreError(f"{path}: soft_labels has shape {soft.shape}, expected ({len(feats)}, classes)")
        per_box = {
            "object_ids": np.argmax(soft[:, 1:], axis=1),  # background (column 0) excluded
            "object_scores": np.asarray(m["conf"], np.float32).reshape(-1),
        }
    return feats, boxes, per_box


def import_npz(
    src: str | os.PathLike,
    dest: Store | str | os.PathLike,
    name: str = "regions/butd-npz",
    *,
    dtype: str = "float16",
    boxes: int | None = None,
    progress: Progress | None = None,
    target: Target | None = None,
    **writer_opts: Any,
) -> int:
    """Import a folder of per-image `.npz` files (id = file stem); returns items added."""
    src = Path(src)
    files = sorted(src.glob("*.npz")) if src.is_dir() else []
    if not files:
        raise StoreError(f"{src}: no .npz files found")
    target = target or SameIds()
    layout: str | None = None
    keys: set[str] | None = None
    attrs: dict[str, Any] = {}
    with no_trace_on_failure(dest, name), Sink(open_dest(dest), name, attrs, writer_opts, dtype) as sink:
        for k, path in enumerate(files):
            if progress and k % 64 == 0:
                progress(k, len(files))
            item_id = target.match(path.stem, str(path))
            if item_id is None or sink.is_done(item_id):
                continue
            m = _members(path)
            kind = _layout(set(m), path)
            if layout is None:
                layout = kind
                attrs.update(
                    extractor="bottom-up-attention.pytorch" if kind == "bua" else "bottom-up-attention (UNITER)",
                    imported_from=f"npz ({kind})",
                    source=src.name,
                )
            elif kind != layout:
                raise StoreError(f"{path}: {kind} layout, but {files[0].name} and the files before are {layout}")
            if kind == "bua":
                w, h = _int(m["image_w"], "image_w", path), _int(m["image_h"], "image_h", path)
                checked_size(target, item_id, w, h, str(path))
                feats, box, per_box = _bua_item(m, path, (w, h))
            else:
                size = target.size(item_id)
                feats, box, per_box = _uniter_item(m, path, size)
                w, h = size
            if keys is None:
                keys = set(per_box)
            elif set(per_box) != keys:
                raise StoreError(
                    f"{path}: has {sorted(per_box) or 'no object/attribute arrays'}, the files before "
                    f"have {sorted(keys) or 'none'}"
                )
            item = region_item(feats, box, w, h, str(path), fixed=boxes, dim=sink.dim, per_box=per_box)
            dim = feats.shape[1]
            sink.add(
                item_id,
                item,
                lambda: region_fields(dim, dtype, boxes, "object_ids" in keys, "attr_ids" in keys),  # noqa: B023 - called before the loop moves on
                str(path),
            )
    if progress:
        progress(len(files), len(files))
    return sink.added
