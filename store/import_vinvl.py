"""VinVL / Oscar+ region features: TSV files with `.lineidx` indexes.

Layouts, as microsoft/scene_graph_benchmark and microsoft/Oscar write and read them (every
file is `key \\t value` rows written by `tsv_writer`, with `<name>.lineidx` listing the byte
offset of each row):

- features (`features.tsv`, `<split>.feature.tsv`): `key \\t {"num_boxes": N, "features": b64}`
  (Oscar's `run_retrieval.py` / `run_captioning.py` read it so) or `key \\t N \\t b64` (Oscar's
  pretraining `oscar_tsv.py`); features are float32 `[N, D]`. VinVL's are 2054-d: the 2048-d
  region feature followed by 6 box values (x1/W, y1/H, x2/W, y2/H, w/W, h/H); all are kept.
- labels (`predictions.tsv` from scene_graph_benchmark's `convert_predictions_to_tsv`,
  `<split>.label.tsv`): `key \\t {"objects": [...], "image_h": H, "image_w": W}` or a plain list
  of objects; an object has `rect` [x1, y1, x2, y2] in image pixels, `class`, `conf`, and may
  have `attributes` / `attr_scores` (names and scores) and `feature` (b64 float32 `[D]`, when
  the detector ran with TEST.OUTPUT_FEATURE: then no features file is needed).
- sizes (`<split>.hw.tsv`): `key \\t [{"height": H, "width": W}]`.

Row i of the features file and the labels file describe the same boxes in the same order; the
labels row is found by key (in step when the files share their order, else through an index
built once). The image size comes from the labels row, else the `.hw.tsv` row, else the
target (the image file). Class and attribute names become ids through `names(kind, name)`
(the pipelines layer maps them to the Visual Genome lists); without it objects are not kept.
A `.lineidx` that disagrees with its file is an error (Oscar would read the wrong rows).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

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
from lighthead.store.import_tsv import unquote_id

Names = Callable[[str, str], int]  # ("object" | "attribute", name) -> id, -1 when unknown


def _one(folder: Path, names: list[str], pattern: str, what: str) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    found = sorted(p for p in folder.glob(pattern) if p.is_file())
    if len(found) > 1:
        raise StoreError(
            f"{folder}: {len(found)} {what} files ({', '.join(p.name for p in found)}); give the features file itself"
        )
    return found[0] if found else None


def vinvl_files(src: str | os.PathLike) -> tuple[Path | None, Path | None, Path | None]:
    """(features, labels, sizes) files of a VinVL folder or of a features (or labels) file."""
    src = Path(src)
    if src.is_dir():
        feats = _one(src, ["features.tsv"], "*.feature.tsv", "features")
        labels = _one(src, ["predictions.tsv"], "*.label.tsv", "labels")
        hw = _one(src, [], "*.hw.tsv", "image size")
    elif src.is_file():
        stem = src.name[: -len(".tsv")] if src.name.endswith(".tsv") else src.name
        if stem.endswith(".label") or stem == "predictions":
            feats, labels = None, src
            stem = stem[: -len(".label")] if stem.endswith(".label") else stem
        else:
            feats = src
            stem = stem[: -len(".feature")] if stem.endswith(".feature") else stem
            labels = next(
                (p for p in (src.with_name(f"{stem}.label.tsv"), src.with_name("predictions.tsv")) if p.is_file()), None
            )
        hw = src.with_name(f"{stem}.hw.tsv") if src.with_name(f"{stem}.hw.tsv").is_file() else None
    else:
        raise StoreError(f"{src}: no such file or folder")
    if labels is None:
        raise StoreError(
            f"{src}: no labels file with the boxes (predictions.tsv or <split>.label.tsv); VinVL's "
            "features file holds features only"
        )
    return feats, labels, hw


def lineidx(path: Path) -> list[int] | None:
    """The row offsets of `<name>.lineidx` next to `<name>.tsv`, if there is one."""
    idx = path.with_name(path.name[: -len(".tsv")] + ".lineidx") if path.name.endswith(".tsv") else None
    if idx is None or not idx.is_file():
        return None
    try:
        return [int(x) for x in idx.read_text().split()]
    except ValueError:
        raise StoreError(f"{idx}: not a list of byte offsets") from None


class _Rows:
    """Rows `key -> value` of a TSV, found in step with the features file or by an index."""

    def __init__(self, path: Path):
        self.path = path
        self.fh: BinaryIO = open(path, "rb")
        self.lineno = 0
        self.index: dict[str, tuple[int, int]] | None = None  # key -> (byte offset, line number)

    def get(self, key: str) -> tuple[bytes, str]:
        """The value of row `key` and where it is (file:line)."""
        if self.index is None:
            pos = self.fh.tell()
            line = self.fh.readline()
            if line:
                self.lineno += 1
                k, _, value = line.rstrip(b"\r\n").partition(b"\t")
                if unquote_id(k, f"{self.path}:{self.lineno}") == key:
                    return value, f"{self.path}:{self.lineno}"
            self.fh.seek(pos)
            self._build_index()
        if key not in self.index:
            raise StoreError(f"{self.path}: no row for {key!r}")
        offset, lineno = self.index[key]
        self.fh.seek(offset)
        return self.fh.readline().rstrip(b"\r\n").partition(b"\t")[2], f"{self.path}:{lineno}"

    def _build_index(self) -> None:
        self.index, offset = {}, 0
        self.fh.seek(0)
        for lineno, line in enumerate(self.fh, 1):
            key = line.partition(b"\t")[0].rstrip(b"\r\n")
            if key:
                where = f"{self.path}:{lineno}"
                prev = self.index.setdefault(unquote_id(key, where), (offset, lineno))
                if prev[1] != lineno:
                    raise StoreError(
                        f"{where}: id {unquote_id(key, where)!r} is given twice (first at "
                        f"{self.path}:{prev[1]}); an id may appear only once in an import's source"
                    )
            offset += len(line)

    def close(self) -> None:
        self.fh.close()


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where}: not JSON ({exc})") from None


def _features_row(parts: list[bytes], where: str) -> np.ndarray:
    """`[N, D]` float32 from `{"num_boxes", "features"}` JSON, or from `N \\t b64`."""
    if len(parts) == 2:
        obj = _json(parts[1], where)
        if not isinstance(obj, dict) or "num_boxes" not in obj or "features" not in obj:
            raise StoreError(f'{where}: expected {{"num_boxes": N, "features": base64}}')
        n, blob = parse_int(str(obj["num_boxes"]), "num_boxes", where), str(obj["features"])
    elif len(parts) == 3:
        n, blob = parse_int(parts[1], "num_boxes", where), parts[2]
    else:
        raise StoreError(
            f"{where}: {len(parts)} tab-separated fields, expected 2 (key, JSON) or 3 (key, num_boxes, features)"
        )
    feats = b64_array(blob, np.float32, "features", where)
    if n == 0 or feats.size % n:
        raise StoreError(f"{where}: {feats.size} feature values do not split into {n} boxes")
    return feats.reshape(n, -1)


def _objects(raw: bytes, where: str) -> tuple[list[dict], tuple[int, int] | None]:
    obj = _json(raw, where)
    objects = obj.get("objects") if isinstance(obj, dict) else obj
    if not isinstance(objects, list) or not all(isinstance(o, dict) and "rect" in o for o in objects):
        raise StoreError(f'{where}: expected a list of objects with "rect" (or {{"objects": [...]}})')
    size = None
    if isinstance(obj, dict) and "image_w" in obj and "image_h" in obj:
        size = (parse_int(str(obj["image_w"]), "image_w", where), parse_int(str(obj["image_h"]), "image_h", where))
    return objects, size


def _per_box(objects: list[dict], names: Names | None, where: str) -> dict[str, np.ndarray]:
    if names is None:
        return {}
    try:
        ids = [names("object", str(o.get("class", ""))) for o in objects]
        scores = [float(o.get("conf", 0.0)) for o in objects]
        attr = []
        for o in objects:
            a, s = list(o.get("attributes") or []), [float(x) for x in o.get("attr_scores") or []]
            best = int(np.argmax(s)) if s and len(s) == len(a) else 0
            attr.append((names("attribute", str(a[best])), s[best] if s else 0.0) if a else (-1, 0.0))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{where}: bad conf / attributes ({exc})") from None
    return {
        "object_ids": np.array(ids, np.int64),
        "object_scores": np.array(scores, np.float32),
        "attr_ids": np.array([a for a, _ in attr], np.int64),
        "attr_scores": np.array([s for _, s in attr], np.float32),
    }


def _rows(path: Path) -> Any:
    """(line number, byte offset, parts) of each non-empty row, checked against the .lineidx."""
    offsets = lineidx(path)
    offset, row = 0, 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            start, offset = offset, offset + len(line)
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            if offsets is not None and (row >= len(offsets) or offsets[row] != start):
                want = offsets[row] if row < len(offsets) else "nothing"
                raise StoreError(
                    f"{path}:{lineno}: row {row} starts at byte {start}, its .lineidx says {want} "
                    "(a stale index: regenerate or delete it)"
                )
            row += 1
            yield lineno, offset, line.split(b"\t")
    if offsets is not None and row != len(offsets):
        raise StoreError(f"{path}: {row} rows, its .lineidx lists {len(offsets)}")


def import_vinvl(
    src: str | os.PathLike,
    dest: Store | str | os.PathLike,
    name: str = "regions/vinvl",
    *,
    dtype: str = "float16",
    boxes: int | None = None,
    progress: Progress | None = None,
    target: Target | None = None,
    names: Names | None = None,
    **writer_opts: Any,
) -> int:
    """Import VinVL features + labels (+ sizes) TSVs; returns items added."""
    feats_path, labels_path, hw_path = vinvl_files(src)
    target = target or SameIds()
    main = feats_path or labels_path
    labels = _Rows(labels_path) if feats_path else None
    sizes = _Rows(hw_path) if hw_path else None
    total = main.stat().st_size
    seen = SourceIds()
    attrs = {
        "extractor": "VinVL (scene_graph_benchmark)",
        "imported_from": "vinvl tsv",
        "source": [p.name for p in (feats_path, labels_path, hw_path) if p],
    }
    try:
        with no_trace_on_failure(dest, name), Sink(open_dest(dest), name, attrs, writer_opts, dtype) as sink:
            for k, (lineno, offset, parts) in enumerate(_rows(main)):
                if progress and k % 64 == 0:
                    progress(offset, total)
                where = f"{main}:{lineno}"
                key = unquote_id(parts[0], where)
                seen.check(key, where)
                item_id = target.match(key, where)
                if item_id is None or sink.is_done(item_id):
                    continue
                if labels is not None:
                    feats = _features_row(parts, where)
                    raw, label_where = labels.get(key)
                else:
                    raw, label_where = (parts[1] if len(parts) == 2 else b""), where
                objects, size = _objects(raw, label_where)
                if labels is None:
                    if not all("feature" in o for o in objects):
                        raise StoreError(f'{where}: objects without "feature" and no features file next to it')
                    rows = [b64_array(str(o["feature"]), np.float32, "feature", where) for o in objects]
                    if len({len(r) for r in rows}) > 1:
                        raise StoreError(
                            f'{where}: the objects\' "feature" sizes differ '
                            f"({', '.join(sorted({str(len(r)) for r in rows}))} values)"
                        )
                    feats = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
                if len(objects) != len(feats):
                    raise StoreError(
                        f"{where}: {len(feats)} feature rows but {label_where} lists {len(objects)} objects"
                    )
                if size is None and sizes is not None:
                    hw_raw, hw_where = sizes.get(key)
                    hw = _json(hw_raw, hw_where)
                    hw = hw[0] if isinstance(hw, list) and hw else hw
                    if not isinstance(hw, dict) or "height" not in hw or "width" not in hw:
                        raise StoreError(f'{hw_where}: expected [{{"height": H, "width": W}}]')
                    size = (
                        parse_int(str(hw["width"]), "width", hw_where),
                        parse_int(str(hw["height"]), "height", hw_where),
                    )
                if size is not None:
                    checked_size(target, item_id, *size, where)
                else:
                    size = target.size(item_id)
                    if size is None:
                        raise StoreError(
                            f"{where}: no image size for {key!r} (the labels have no image_w/image_h, "
                            "there is no <split>.hw.tsv, and no image file is known for it)"
                        )
                try:
                    box = np.array([o["rect"] for o in objects], np.float32).reshape(-1, 4)
                except (TypeError, ValueError):
                    raise StoreError(f'{label_where}: a "rect" is not [x1, y1, x2, y2]') from None
                per_box = _per_box(objects, names, label_where)
                item = region_item(feats, box, *size, where, fixed=boxes, dim=sink.dim, per_box=per_box)
                dim = feats.shape[1]
                sink.add(item_id, item, lambda: region_fields(dim, dtype, boxes, bool(per_box), bool(per_box)), where)  # noqa: B023 - called before the loop moves on
    finally:
        for rows in (labels, sizes):
            if rows is not None:
                rows.close()
    if progress:
        progress(total, total)
    return sink.added
