"""bottom-up-attention TSV files: the 6-field Caffe layout and the 10-field detectron2 one.

One line per image, tab-separated, written by `csv.DictWriter` (so lines end in `\\r\\n`); the
layout is told by the number of fields on the first line of each file:

- 6 fields, peteanderson80/bottom-up-attention `tools/generate_tsv.py` (also SCAN's
  `util/convert_data.py` input): `image_id, image_w, image_h, num_boxes, boxes, features`;
- 10 fields, airsplay/py-bottom-up-attention `demo/detectron2_mscoco_proposal_maxnms.py`
  (read by LXMERT's `src/utils.py` `load_obj_tsv`): `img_id, img_h, img_w, objects_id,
  objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features` - note height before width.

Arrays are base64 of little-endian buffers: boxes `[n, 4]` and features `[n, D]` float32,
objects_id / attrs_id `[n]` int64, objects_conf / attrs_conf `[n]` float32 (LXMERT's decode
table). The 10-field layout keeps the ids and confidences as `object_ids`, `object_scores`,
`attr_ids`, `attr_scores`. Any other field count is an error naming the file and line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lighthead.store.api import Store
from lighthead.store.errors import StoreError
from lighthead.store.import_base import (
    Progress,
    SameIds,
    Sink,
    SourceIds,
    Target,
    b64_array,
    checked_size,
    no_trace_on_failure,
    open_dest,
    parse_int,
    region_fields,
    region_item,
)

TSV_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")  # Caffe generate_tsv.py
TSV10_FIELDS = (
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
)  # py-bottom-up-attention / LXMERT
LAYOUTS = {len(TSV_FIELDS): TSV_FIELDS, len(TSV10_FIELDS): TSV10_FIELDS}


def tsv_files(src: str | os.PathLike) -> list[Path]:
    """A TSV file, or the `*.tsv` / `*.tsv.N` files of a folder (bottom-up-attention splits
    its output into numbered parts), in name order."""
    src = Path(src)
    if src.is_file():
        return [src]
    if src.is_dir():
        files = sorted(
            p
            for p in src.iterdir()
            if p.is_file() and (p.suffix == ".tsv" or (".tsv." in p.name and p.name.rsplit(".", 1)[1].isdigit()))
        )
        if files:
            return files
    raise StoreError(f"{src}: no TSV file(s) found")


def _layout_error(n: int, where: str) -> StoreError:
    return StoreError(
        f"{where}: {n} tab-separated fields, expected {len(TSV_FIELDS)} ({', '.join(TSV_FIELDS)}) "
        f"or {len(TSV10_FIELDS)} ({', '.join(TSV10_FIELDS)})"
    )


def tsv_layout(path: Path) -> tuple[str, ...]:
    """The field names of a TSV file, told by the field count of its first non-empty line."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip(b"\r\n")
            if line:
                n = line.count(b"\t") + 1
                if n not in LAYOUTS:
                    raise _layout_error(n, f"{path}:{lineno}")
                return LAYOUTS[n]
    raise StoreError(f"{path}: empty TSV file")


def unquote_id(raw: bytes, where: str) -> str:
    """The id field as text; a csv-quoted id (`"a""b"`) loses its quotes as csv.reader would."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreError(f"{where}: image id is not UTF-8") from None
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    if not text:
        raise StoreError(f"{where}: empty image id")
    if "\x00" in text:
        raise StoreError(f"{where}: the image id holds a NUL character")
    return text


def _decode(parts: list[bytes], names: tuple[str, ...], where: str) -> dict[str, Any]:
    """One line's values by field name: sizes, boxes, features and (10 fields) objects."""
    f = dict(zip(names, parts))
    w = parse_int(f.get("image_w", f.get("img_w")), "image_w", where)
    h = parse_int(f.get("image_h", f.get("img_h")), "image_h", where)
    n = parse_int(f["num_boxes"], "num_boxes", where)
    box = b64_array(f["boxes"], np.float32, "boxes", where)
    feat = b64_array(f["features"], np.float32, "features", where)
    if n == 0 or feat.size % n:
        raise StoreError(f"{where}: {feat.size} feature values do not split into {n} boxes")
    out: dict[str, Any] = {
        "w": w,
        "h": h,
        "boxes": box.reshape(-1, 4) if box.size % 4 == 0 else box,
        "features": feat.reshape(n, -1),
        "per_box": {},
    }
    if "objects_id" in f:
        out["per_box"] = {
            "object_ids": b64_array(f["objects_id"], np.int64, "objects_id", where),
            "object_scores": b64_array(f["objects_conf"], np.float32, "objects_conf", where),
            "attr_ids": b64_array(f["attrs_id"], np.int64, "attrs_id", where),
            "attr_scores": b64_array(f["attrs_conf"], np.float32, "attrs_conf", where),
        }
    return out


def import_tsv(
    src: str | os.PathLike,
    dest: Store | str | os.PathLike,
    name: str = "regions/butd-tsv",
    *,
    dtype: str = "float16",
    boxes: int | None = None,
    progress: Progress | None = None,
    target: Target | None = None,
    **writer_opts: Any,
) -> int:
    """Import bottom-up-attention TSV file(s) of either layout, reading line by line; returns
    items added. All files of one import must share a layout."""
    files = tsv_files(src)
    layouts = {p: tsv_layout(p) for p in files}
    names = layouts[files[0]]
    for p, other in layouts.items():
        if other != names:
            raise StoreError(
                f"{p}: {len(other)} fields per line, but {files[0].name} has {len(names)}; "
                "import the two layouts into separate feature sets"
            )
    target = target or SameIds()
    objects = names == TSV10_FIELDS
    total = sum(p.stat().st_size for p in files)
    done_bytes = 0
    seen = SourceIds()
    attrs = {
        "extractor": "bottom-up-attention",
        "imported_from": f"tsv ({len(names)} fields)",
        "source": [p.name for p in files],
    }
    with no_trace_on_failure(dest, name), Sink(open_dest(dest), name, attrs, writer_opts, dtype) as sink:
        for path in files:
            with open(path, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    done_bytes += len(line)
                    if progress and lineno % 64 == 0:
                        progress(done_bytes, total)
                    line = line.rstrip(b"\r\n")
                    if not line:
                        continue
                    where = f"{path}:{lineno}"
                    parts = line.split(b"\t")
                    if len(parts) != len(names):
                        raise _layout_error(len(parts), where)
                    source_id = unquote_id(parts[0], where)
                    seen.check(source_id, where)
                    item_id = target.match(source_id, where)
                    if item_id is None or sink.is_done(item_id):
                        continue
                    v = _decode(parts, names, where)
                    checked_size(target, item_id, v["w"], v["h"], where)
                    item = region_item(
                        v["features"],
                        v["boxes"],
                        v["w"],
                        v["h"],
                        where,
                        fixed=boxes,
                        dim=sink.dim,
                        per_box=v["per_box"],
                    )
                    dim = v["features"].shape[1]
                    sink.add(item_id, item, lambda: region_fields(dim, dtype, boxes, objects, objects), where)  # noqa: B023 - called before the loop moves on
    if progress:
        progress(total, total)
    return sink.added
