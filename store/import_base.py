"""What every region import shares: where the ids go, the checks on each item, the writer.

A `Target` decides the id an imported item is stored under and knows image sizes. The default
(`SameIds`) keeps the source's ids and knows no sizes; importing into a dataset store, the
pipelines layer passes one that matches the source's ids to the dataset's image ids and reads
image sizes from the image files (`lighthead.pipelines.store_io`). Items whose id it cannot
match are skipped (the target lists them).

Region items get the fields an extraction writes (`region_fields`): `features`, `boxes`,
`num_boxes`, `image_w`, `image_h`, and when the source has them `object_ids`, `object_scores`,
`attr_ids`, `attr_scores`. With a fixed box count K (`boxes=K`), an image with fewer boxes is
padded as extraction pads it (zero rows, ids -1, `num_boxes` the real count); more is an error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np

from lighthead.store.api import Store, open_store
from lighthead.store.errors import StoreError
from lighthead.store.manifest import read_manifest
from lighthead.store.schema import FLOAT32_HINT, MANIFEST, Field, check_name
from lighthead.store.writer import Writer, remove_if_empty

Progress = Callable[[int, "int | None"], None]  # (done, total) in the importer's units
BOX_SLACK = 1.0  # pixels a box may overhang the image: detectors clip to W-1 or W, then rescale
OBJECT_FIELDS = ("object_ids", "object_scores")
ATTR_FIELDS = ("attr_ids", "attr_scores")


class Target(Protocol):
    """Where imported items go."""

    def match(self, source_id: str, where: str) -> str | None:
        """The id to store the item under, or None to skip it (the target records why)."""

    def check_size(self, item_id: str, width: int, height: int) -> str | None:
        """Why `width` x `height` is not the size of image `item_id`, or None (also when unknown)."""

    def size(self, item_id: str) -> tuple[int, int] | None:
        """(width, height) of image `item_id`, when known."""


class SameIds:
    """The default target: ids as the source writes them, no image sizes."""

    def match(self, source_id: str, where: str) -> str | None:
        return source_id

    def check_size(self, item_id: str, width: int, height: int) -> str | None:
        return None

    def size(self, item_id: str) -> tuple[int, int] | None:
        return None


class SourceIds:
    """The ids an import has met in its source, to refuse one given twice: keeping either row
    would drop the other without a word."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}  # id -> where it was first seen (file:line)

    def check(self, source_id: str, where: str) -> None:
        prev = self.first.setdefault(source_id, where)
        if prev != where:
            raise StoreError(
                f"{where}: id {source_id!r} is given twice (first at {prev}); an id may appear "
                "only once in an import's source"
            )


def open_dest(dest: Store | str | os.PathLike) -> Store:
    return dest if isinstance(dest, Store) else open_store(dest, create=True)


@contextlib.contextmanager
def no_trace_on_failure(dest: Store | str | os.PathLike, name: str) -> Iterator[None]:
    """If the import fails before committing anything, remove the feature set (and the store
    folder) it created, so a failed import never leaves an empty store behind."""
    root = dest.path if isinstance(dest, Store) else Path(dest)
    had_root = root.exists()
    directory = root / check_name(name)
    had_set = (directory / MANIFEST).exists()
    try:
        yield
    except BaseException:
        if not had_set and directory.is_dir() and remove_if_empty(directory):
            parent = directory.parent  # folders made only to hold it ("regions/")
            while parent != root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        if not had_root and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        raise


def region_fields(
    dim: int, dtype: str, boxes: int | None, objects: bool = False, attributes: bool = False
) -> list[Field]:
    """Fields of imported region features; `boxes=None` means variable box counts."""
    fields = [Field("features", (boxes, dim), dtype), Field("boxes", (boxes, 4), "float32")]
    if objects:
        fields += [Field("object_ids", (boxes,), "int32"), Field("object_scores", (boxes,), "float32")]
    if attributes:
        fields += [Field("attr_ids", (boxes,), "int32"), Field("attr_scores", (boxes,), "float32")]
    return fields + [Field("image_w", (), "int32"), Field("image_h", (), "int32"), Field("num_boxes", (), "int32")]


class Sink:
    """A writer opened on the first item when the feature set does not exist yet (its
    feature size is only known then), with locations added to its errors."""

    def __init__(self, store: Store, name: str, attrs: dict, writer_opts: dict, dtype: str | None = None):
        self.store, self.name, self.attrs, self.opts = store, name, attrs, writer_opts
        if name in store and dtype is not None:  # before a writer takes its lock
            check_dtype(read_manifest(store.path / check_name(name)).fields, dtype, store.path / name)
        self.writer: Writer | None = store.writer(name, None, **writer_opts) if name in store else None

    @property
    def added(self) -> int:
        """Items this import committed (valid once the sink is closed)."""
        return 0 if self.writer is None else self.writer.written

    @property
    def dim(self) -> int | None:
        """The feature size of the set, once it exists."""
        return None if self.writer is None else self.writer.fields["features"].shape[1]

    def is_done(self, item_id: str) -> bool:
        return self.writer is not None and self.writer.is_done(item_id)

    def add(self, item_id: str, item: dict[str, Any], fields: Callable[[], list[Field]], where: str) -> None:
        if self.writer is None:
            self.writer = self.store.writer(self.name, fields(), self.attrs, **self.opts)
        try:
            self.writer.add(item_id, item)
        except StoreError as exc:
            raise StoreError(f"{where}: {exc}{self._float16_note(exc)}") from None

    def _float16_note(self, exc: StoreError) -> str:
        """After a float16 overflow: the items stored before it stay float16, so a float32
        rerun must write to a new feature set (with none stored, the set is removed and a
        rerun of the same name works)."""
        kept = len(self.writer.done_ids) if self.writer is not None else 0
        if FLOAT32_HINT not in str(exc) or not kept:
            return ""
        return (
            f" and a new --name: {self.name} keeps the {kept} item(s) imported before it as float16, "
            "and a feature set keeps its dtype"
        )

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.writer is not None:
            self.writer.__exit__(*exc)


def check_dtype(fields: Mapping[str, Field], dtype: str, where: Path) -> None:
    """An import into an existing feature set asks for the dtype its features have: a set keeps
    the dtype it was created with, so another one would be ignored (or overflow again)."""
    have = fields["features"].dtype if "features" in fields else dtype
    if have != dtype:
        raise StoreError(
            f"{where}: holds {have} features, not {dtype}; a feature set keeps its dtype, so import "
            f"with --dtype {have}, or give a new --name for {dtype} features"
        )


def parse_int(text: bytes | str, what: str, where: str) -> int:
    """A non-negative integer field (written as `640` or `640.0`)."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        value = float(raw) if b"." in raw or b"e" in raw.lower() else int(raw)
    except ValueError:
        raise StoreError(f"{where}: {what} {raw[:40]!r} is not a number") from None
    if not math.isfinite(value) or value != int(value) or value < 0:  # 1e400 reads as inf
        raise StoreError(f"{where}: {what} {raw[:40]!r} is not a non-negative integer")
    return int(value)


def b64_array(blob: bytes | str, dtype: Any, what: str, where: str) -> np.ndarray:
    """A base64 field holding a flat array of `dtype` (as `base64.b64encode(arr)` writes it)."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StoreError(f"{where}: field {what} is not valid base64 ({exc})") from None
    size = np.dtype(dtype).itemsize
    if len(raw) % size:
        raise StoreError(f"{where}: field {what} holds {len(raw)} bytes, not a whole number of {np.dtype(dtype).name}")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))


def check_boxes(boxes: np.ndarray, w: int, h: int, where: str) -> None:
    """Every box inside the `w` x `h` image (within BOX_SLACK) with x1 <= x2, y1 <= y2."""
    if w < 1 or h < 1:
        raise StoreError(f"{where}: image size {w} x {h} is empty")
    x1, y1, x2, y2 = boxes.astype(np.float64).T  # (4, n)
    ok = (
        (x1 >= -BOX_SLACK)
        & (y1 >= -BOX_SLACK)
        & (x1 <= x2)
        & (y1 <= y2)
        & (x2 <= w + BOX_SLACK)
        & (y2 <= h + BOX_SLACK)
    )  # False for NaN too
    if not ok.all():
        j = int(np.flatnonzero(~ok)[0])
        coords = ", ".join(f"{v:g}" for v in boxes[j].tolist())
        raise StoreError(
            f"{where}: box {j} [{coords}] is outside the {w} x {h} image "
            f"(need 0 <= x1 <= x2 <= {w}, 0 <= y1 <= y2 <= {h})"
        )


def region_item(
    feats: np.ndarray,
    boxes: np.ndarray,
    w: int,
    h: int,
    where: str,
    *,
    fixed: int | None,
    dim: int | None,
    per_box: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """One image's checked item: shapes, feature size, box count, boxes inside the image;
    padded to `fixed` boxes when it has fewer. `per_box`: object/attribute arrays `[n]`."""
    n = len(boxes) if boxes.ndim == 2 else -1
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise StoreError(f"{where}: boxes have shape {boxes.shape}, expected (N, 4)")
    if feats.ndim != 2 or feats.shape[0] != n:
        raise StoreError(f"{where}: features have shape {feats.shape}, expected ({n}, D)")
    if dim is not None and feats.shape[1] != dim:
        raise StoreError(f"{where}: feature size {feats.shape[1]}, the feature set has {dim}")
    for key, arr in (per_box or {}).items():
        if arr.shape != (n,):
            raise StoreError(f"{where}: {key} has shape {arr.shape}, expected ({n},) for {n} boxes")
    if fixed is not None and n > fixed:
        raise StoreError(f"{where}: {n} boxes, but the import fixes boxes={fixed}")
    check_boxes(boxes, w, h, where)
    item: dict[str, Any] = {"features": feats, "boxes": boxes, **(per_box or {})}
    if fixed is not None and n < fixed:  # as extraction pads a tiny image: zero rows, ids -1
        for key, arr in item.items():
            pad = np.full((fixed - n, *arr.shape[1:]), -1 if key.endswith("_ids") else 0, arr.dtype)
            item[key] = np.concatenate([arr, pad], axis=0)
    item.update(image_w=w, image_h=h, num_boxes=n)
    return item


def checked_size(target: Target, item_id: str, w: int, h: int, where: str) -> None:
    """The size the source states against the image file's, when the target knows it."""
    problem = target.check_size(item_id, w, h)
    if problem:
        raise StoreError(f"{where}: {problem}")
