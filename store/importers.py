"""Import what users already have into a store, streaming and resumable.

- SCAN precomp folders: `{split}_ims.npy` `[N, K, D]` + `{split}_caps.txt` (caps_per_image
  lines per image). Ids are `{split}/{i}`; fields `features [K, D]` and `captions`, the raw
  bytes of the image's caption lines including their line ends (uint8, variable length),
  so that export reproduces the caption file byte for byte.
- bottom-up-attention TSV (peteanderson80/bottom-up-attention `generate_tsv.py`): one line
  per image, tab-separated `image_id, image_w, image_h, num_boxes, boxes, features`, where
  boxes `[num_boxes, 4]` and features `[num_boxes, D]` are base64 of float32 arrays.
- per-image `.npz` (MILVLG/bottom-up-attention.pytorch): keys `x [K, D]` features,
  `bbox [K, 4]`, `num_bbox`, `image_w`, `image_h`; the id is the file stem. `x` stored as
  `[D, K]` (as some older dumps do) is transposed.
TSV and npz give fields `features`, `boxes`, `image_w`, `image_h`, `num_boxes`; variable
length unless `boxes=K` fixes the box count (then any other count is an error).

Every item is validated before it is written: its layout, its values (NaN/inf, float16
overflow, integers that would wrap: the writer's own check) and its boxes, which must lie
inside the image. A malformed input raises StoreError naming the file (and line or id),
after committing the valid items before it, so a rerun resumes there; an import that fails
before committing anything leaves no trace (no empty feature set, no empty store). Items
already in the feature set are skipped without being decoded. The count returned is what
this call committed, so two imports running at once never both count an item.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from lighthead.store.api import Store, open_store
from lighthead.store.errors import StoreError
from lighthead.store.schema import MANIFEST, Field, check_name, value_problem
from lighthead.store.writer import Writer, remove_if_empty

Progress = Callable[[int, "int | None"], None]  # (done, total) in the importer's units
TSV_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
NPZ_KEYS = ("x", "bbox", "num_bbox", "image_w", "image_h")


BOX_SLACK = 1.0  # pixels a box may overhang the image: detectors clip to W-1 or W, then rescale


def _store(dest: Store | str | os.PathLike) -> Store:
    return dest if isinstance(dest, Store) else open_store(dest, create=True)


@contextlib.contextmanager
def _no_trace_on_failure(dest: Store | str | os.PathLike, name: str) -> Iterator[None]:
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


def region_fields(dim: int, dtype: str, boxes: int | None) -> list[Field]:
    """Fields of imported region features; `boxes=None` means variable box counts."""
    return [Field("features", (boxes, dim), dtype), Field("boxes", (boxes, 4), "float32"),
            Field("image_w", (), "int32"), Field("image_h", (), "int32"), Field("num_boxes", (), "int32")]


class _Sink:
    """A writer opened on the first item when the feature set does not exist yet (its
    feature size is only known then), with locations added to its errors."""

    def __init__(self, store: Store, name: str, attrs: dict, writer_opts: dict):
        self.store, self.name, self.attrs, self.opts = store, name, attrs, writer_opts
        self.writer: Writer | None = store.writer(name, None, **writer_opts) if name in store else None

    @property
    def added(self) -> int:
        """Items this import committed (valid once the sink is closed)."""
        return 0 if self.writer is None else self.writer.written

    def is_done(self, item_id: str) -> bool:
        return self.writer is not None and self.writer.is_done(item_id)

    def add(self, item_id: str, item: dict[str, Any], fields: Callable[[], list[Field]], where: str) -> None:
        if self.writer is None:
            self.writer = self.store.writer(self.name, fields(), self.attrs, **self.opts)
        try:
            self.writer.add(item_id, item)
        except StoreError as exc:
            raise StoreError(f"{where}: {exc}") from None

    def __enter__(self) -> "_Sink":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.writer is not None:
            self.writer.__exit__(*exc)


def _int(text: bytes, what: str, where: str) -> int:
    try:
        value = float(text) if b"." in text or b"e" in text.lower() else int(text)
    except ValueError:
        raise StoreError(f"{where}: {what} {text[:40]!r} is not a number") from None
    if value != int(value) or value < 0:
        raise StoreError(f"{where}: {what} {text[:40]!r} is not a non-negative integer")
    return int(value)


def _b64_floats(blob: bytes, what: str, where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StoreError(f"{where}: field {what} is not valid base64 ({exc})") from None
    if len(raw) % 4:
        raise StoreError(f"{where}: field {what} holds {len(raw)} bytes, not a whole number of float32")
    return np.frombuffer(raw, dtype=np.float32)


def _check_regions(feats: np.ndarray, boxes: np.ndarray, n: int, w: int, h: int, fixed: int | None,
                   dim: int | None, where: str) -> None:
    if boxes.shape != (n, 4):
        raise StoreError(f"{where}: boxes have shape {boxes.shape}, expected ({n}, 4)")
    if feats.ndim != 2 or feats.shape[0] != n:
        raise StoreError(f"{where}: features have shape {feats.shape}, expected ({n}, D)")
    if dim is not None and feats.shape[1] != dim:
        raise StoreError(f"{where}: feature size {feats.shape[1]}, the feature set has {dim}")
    if fixed is not None and n != fixed:
        raise StoreError(f"{where}: {n} boxes, but the import fixes boxes={fixed}")
    if w < 1 or h < 1:
        raise StoreError(f"{where}: image size {w} x {h} is empty")
    x1, y1, x2, y2 = boxes.astype(np.float64).T  # (4, n)
    ok = (x1 >= -BOX_SLACK) & (y1 >= -BOX_SLACK) & (x1 <= x2) & (y1 <= y2) \
        & (x2 <= w + BOX_SLACK) & (y2 <= h + BOX_SLACK)  # False for NaN too
    if not ok.all():
        j = int(np.flatnonzero(~ok)[0])
        coords = ", ".join(f"{v:g}" for v in boxes[j].tolist())
        raise StoreError(f"{where}: box {j} [{coords}] is outside the {w} x {h} image "
                         f"(need 0 <= x1 <= x2 <= {w}, 0 <= y1 <= y2 <= {h})")


def _feature_dim(sink: _Sink) -> int | None:
    return None if sink.writer is None else sink.writer.fields["features"].shape[1]


def tsv_files(src: str | os.PathLike) -> list[Path]:
    """A TSV file, or the `*.tsv` / `*.tsv.N` files of a folder (bottom-up-attention splits
    its output into numbered parts), in name order."""
    src = Path(src)
    if src.is_file():
        return [src]
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and
                       (p.suffix == ".tsv" or (".tsv." in p.name and p.name.rsplit(".", 1)[1].isdigit())))
        if files:
            return files
    raise StoreError(f"{src}: no TSV file(s) found")


def import_tsv(src: str | os.PathLike, dest: Store | str | os.PathLike, name: str = "regions/butd-tsv", *,
               dtype: str = "float16", boxes: int | None = None, progress: Progress | None = None,
               **writer_opts: Any) -> int:
    """Import bottom-up-attention TSV file(s), reading line by line; returns items added."""
    files = tsv_files(src)
    total = sum(p.stat().st_size for p in files)
    done_bytes = 0
    attrs = {"extractor": "bottom-up-attention", "imported_from": "tsv", "source": [p.name for p in files]}
    with _no_trace_on_failure(dest, name), _Sink(_store(dest), name, attrs, writer_opts) as sink:
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
                    if len(parts) != len(TSV_FIELDS):
                        raise StoreError(f"{where}: {len(parts)} tab-separated fields, expected "
                                         f"{len(TSV_FIELDS)} ({', '.join(TSV_FIELDS)})")
                    try:
                        item_id = parts[0].decode("utf-8")
                    except UnicodeDecodeError:
                        raise StoreError(f"{where}: image_id is not UTF-8") from None
                    if not item_id:
                        raise StoreError(f"{where}: empty image_id")
                    if sink.is_done(item_id):
                        continue
                    w, h, n = (_int(parts[i], TSV_FIELDS[i], where) for i in (1, 2, 3))
                    box = _b64_floats(parts[4], "boxes", where)
                    feat = _b64_floats(parts[5], "features", where)
                    if n == 0 or feat.size % n:
                        raise StoreError(f"{where}: {feat.size} feature values do not split into {n} boxes")
                    box, feat = box.reshape(-1, 4) if box.size % 4 == 0 else box, feat.reshape(n, -1)
                    _check_regions(feat, box, n, w, h, boxes, _feature_dim(sink), where)
                    item = {"features": feat, "boxes": box, "image_w": w, "image_h": h, "num_boxes": n}
                    sink.add(item_id, item, lambda: region_fields(feat.shape[1], dtype, boxes), where)
    if progress:
        progress(total, total)
    return sink.added


def _npz_int(value: Any, key: str, path: Path) -> int:
    v = np.asarray(value).reshape(-1)[0]
    if v.dtype.kind not in "iuf" or (v.dtype.kind == "f" and not (np.isfinite(v) and v == np.floor(v))):
        raise StoreError(f"{path}: {key} {v!r} is not an integer")
    return int(v)  # a value that does not fit the int32 field is the writer's error


def _npz_item(path: Path, fixed: int | None, dim: int | None) -> dict[str, Any]:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - zipfile, OSError, ValueError: all mean unreadable
        raise StoreError(f"{path}: not a readable .npz ({exc})") from None
    try:
        with z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise StoreError(f"{path}: missing key {missing[0]!r} (expected {', '.join(NPZ_KEYS)})")
            x, bbox = np.asarray(z["x"]), np.asarray(z["bbox"])
            n, w, h = (_npz_int(z[k], k, path) for k in ("num_bbox", "image_w", "image_h"))
    except (ValueError, OSError, IndexError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # a damaged member
        raise StoreError(f"{path}: unreadable array ({exc})") from None
    if x.ndim == 2 and x.shape[0] != n and x.shape[1] == n:
        x = x.T  # (D, K) -> (K, D)
    _check_regions(x, bbox, n, w, h, fixed, dim, str(path))
    return {"features": x, "boxes": bbox, "image_w": w, "image_h": h, "num_boxes": n}


def import_npz(src: str | os.PathLike, dest: Store | str | os.PathLike, name: str = "regions/butd-npz", *,
               dtype: str = "float16", boxes: int | None = None, progress: Progress | None = None,
               **writer_opts: Any) -> int:
    """Import a folder of per-image `.npz` files (id = file stem); returns items added."""
    src = Path(src)
    files = sorted(src.glob("*.npz")) if src.is_dir() else []
    if not files:
        raise StoreError(f"{src}: no .npz files found")
    attrs = {"extractor": "bottom-up-attention.pytorch", "imported_from": "npz", "source": src.name}
    with _no_trace_on_failure(dest, name), _Sink(_store(dest), name, attrs, writer_opts) as sink:
        for k, path in enumerate(files):
            if progress and k % 64 == 0:
                progress(k, len(files))
            if sink.is_done(path.stem):
                continue
            item = _npz_item(path, boxes, _feature_dim(sink))
            dim = item["features"].shape[1]
            sink.add(path.stem, item, lambda: region_fields(dim, dtype, boxes), str(path))
    if progress:
        progress(len(files), len(files))
    return sink.added


def read_lines(path: Path) -> list[bytes]:
    """Lines of a file as bytes, each keeping its line end (the last one may have none)."""
    with open(path, "rb") as fh:
        return list(fh)


def _precomp_splits(src: Path, splits: list[str] | None, caps_per_image: int) -> Iterator[tuple]:
    names = splits or sorted(p.name[: -len("_ims.npy")] for p in src.glob("*_ims.npy"))
    if not names:
        raise StoreError(f"{src}: no {{split}}_ims.npy files (not a SCAN precomp folder)")
    for split in names:
        ims_path, caps_path = src / f"{split}_ims.npy", src / f"{split}_caps.txt"
        try:
            ims = np.load(ims_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StoreError(f"{ims_path}: unreadable .npy ({exc})") from None
        if ims.ndim != 3 or ims.dtype.kind != "f":
            raise StoreError(f"{ims_path}: shape {ims.shape} dtype {ims.dtype}, expected float [N, K, D]")
        if not caps_path.is_file():
            raise StoreError(f"{caps_path}: missing (every {{split}}_ims.npy needs its captions file)")
        lines = read_lines(caps_path)
        if len(lines) != caps_per_image * len(ims):
            raise StoreError(f"{caps_path}: {len(lines)} lines for {len(ims)} images in {ims_path.name} "
                             f"x {caps_per_image} captions")
        yield split, ims, lines, ims_path


def _check_values(split: str, ims: np.ndarray, path: Path, dtype: str) -> None:
    """The writer's value check on a whole split before anything is written, so that a value
    the feature set cannot hold (NaN, float16 overflow) stops the import with nothing stored."""
    want = np.dtype(dtype)
    for a in range(0, len(ims), 256):
        block = np.asarray(ims[a:a + 256])  # (b, K, D), one sequential read
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            stored = block.astype(want)
        bad = ~np.isfinite(stored.reshape(len(block), -1)).all(axis=1)  # (b,)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            problem = value_problem(block[j], stored[j])
            raise StoreError(f"{path}: item {a + j} (id '{split}/{a + j}'): field 'features': {problem}")


def import_precomp(src: str | os.PathLike, dest: Store | str | os.PathLike, name: str = "regions/precomp", *,
                   dtype: str = "float16", caps_per_image: int = 5, splits: list[str] | None = None,
                   progress: Progress | None = None, **writer_opts: Any) -> int:
    """Import a SCAN `*_precomp` folder (every split found, or `splits`); returns items added.
    All splits are checked before anything is written."""
    src = Path(src)
    parts = list(_precomp_splits(src, splits, caps_per_image))
    shapes = {ims.shape[1:] for _, ims, _, _ in parts}
    if len(shapes) != 1:
        raise StoreError(f"{src}: splits have different [K, D] shapes {sorted(shapes)}")
    (k, d), = shapes
    fields = [Field("features", (k, d), dtype), Field("captions", (None,), "uint8")]
    for split, ims, _, ims_path in parts:
        _check_values(split, ims, ims_path, dtype)
    attrs = {"extractor": "scan-precomp", "imported_from": "precomp", "caps_per_image": caps_per_image}
    total, done = sum(len(ims) for _, ims, _, _ in parts), 0
    with _no_trace_on_failure(dest, name):
        store = _store(dest)
        with store.writer(name, fields, None if name in store else attrs, **writer_opts) as w:
            for split, ims, lines, ims_path in parts:
                for a in range(0, len(ims), 256):
                    ids = [f"{split}/{i}" for i in range(a, min(len(ims), a + 256))]
                    todo = [j for j, i in enumerate(ids) if not w.is_done(i)]
                    if todo:
                        block = np.asarray(ims[a:a + len(ids)])  # one sequential read
                        for j in todo:
                            c = (a + j) * caps_per_image
                            caps = np.frombuffer(b"".join(lines[c:c + caps_per_image]), dtype=np.uint8)
                            try:
                                w.add(ids[j], {"features": block[j], "captions": caps})
                            except StoreError as exc:
                                raise StoreError(f"{ims_path}: item {a + j}: {exc}") from None
                    done += len(ids)
                    if progress:
                        progress(done, total)
    return w.written
