"""Import what users already have into a store, streaming and resumable.

- SCAN / VSE++ precomp folders (`import_precomp`, below): `{split}_ims.npy` `[N, K, D]` +
  `{split}_caps.txt` (caps_per_image lines per image) + optional `{split}_ids.txt`.
- bottom-up-attention TSV, 6 or 10 fields (`import_tsv`, store/import_tsv.py).
- per-image `.npz` of bottom-up-attention.pytorch or UNITER (`import_npz`, store/import_npz.py).
- VinVL / Oscar+ TSVs with `.lineidx` (`import_vinvl`, store/import_vinvl.py).

Every item is validated before it is written: its layout, its values (NaN/inf, float16
overflow, integers that would wrap: the writer's own check) and its boxes, which must lie
inside the image. A malformed input raises StoreError naming the file (and line or id),
after committing the valid items before it, so a rerun resumes there; an import that fails
before committing anything leaves no trace (no empty feature set, no empty store). Items
already in the feature set are skipped without being decoded. The count returned is what
this call committed, so two imports running at once never both count an item.

Region imports take a `target` (store/import_base.py) that matches the source's ids to a
dataset store's image ids and knows image sizes; the default keeps the ids as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lighthead.store.api import Store
from lighthead.store.errors import StoreError
from lighthead.store.import_base import (
    BOX_SLACK,
    Progress,
    SameIds,
    Target,
    check_dtype,
    no_trace_on_failure,
    open_dest,
    region_fields,
)
from lighthead.store.import_npz import NPZ_KEYS, import_npz
from lighthead.store.import_tsv import TSV10_FIELDS, TSV_FIELDS, import_tsv, tsv_files
from lighthead.store.import_vinvl import import_vinvl
from lighthead.store.manifest import read_manifest
from lighthead.store.schema import Field, value_problem

__all__ = [
    "BOX_SLACK",
    "NPZ_KEYS",
    "TSV10_FIELDS",
    "TSV_FIELDS",
    "PrecompSplit",
    "Progress",
    "SameIds",
    "Target",
    "import_npz",
    "import_precomp",
    "import_tsv",
    "import_vinvl",
    "read_lines",
    "read_precomp",
    "region_fields",
    "tsv_files",
]


def read_lines(path: Path) -> list[bytes]:
    """Lines of a file as bytes, each keeping its line end (the last one may have none)."""
    with open(path, "rb") as fh:
        return list(fh)


@dataclass
class PrecompSplit:
    """One split of a precomp folder, as SCAN's `PrecompDataset` reads it."""

    split: str  # the file prefix: train, dev, test, testall, ...
    ims: np.ndarray  # memory-mapped {split}_ims.npy, [rows, K, D]
    lines: list[bytes]  # {split}_caps.txt lines, line ends kept
    path: Path  # {split}_ims.npy
    repeat: int  # 1: one row per image; caps_per_image: one row per caption (SCAN's im_div = 1)
    source_ids: list[str] | None  # {split}_ids.txt, one per image, when present

    @property
    def n_images(self) -> int:
        return len(self.ims) // self.repeat

    def caption(self, j: int) -> str:
        """Caption line j as text, stripped as SCAN strips it; bytes that are not UTF-8 are an
        error naming `{split}_caps.txt` and the line (the store keeps the bytes as they are)."""
        return _text_line(self.lines[j], self.path.with_name(f"{self.split}_caps.txt"), j + 1).strip()


def _text_line(line: bytes, path: Path, lineno: int) -> str:
    """One line as UTF-8 text; other bytes are an error naming the file and line (never U+FFFD)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError(
            f"{path}:{lineno}: not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
            "save the file as UTF-8"
        ) from None


def _source_ids(path: Path, n_images: int, repeat: int) -> list[str] | None:
    if not path.is_file():
        return None
    ids = [_text_line(line, path, n).strip() for n, line in enumerate(read_lines(path), 1)]
    ids = ids[:-1] if ids and not ids[-1] else ids
    for n, i in enumerate(ids, 1):
        if "\x00" in i:
            raise StoreError(f"{path}:{n}: the id holds a NUL character")
    if len(ids) == n_images * repeat and repeat > 1:
        ids = ids[::repeat]
    if len(ids) != n_images:
        raise StoreError(f"{path}: {len(ids)} lines for {n_images} images")
    return ids


def read_precomp(
    src: str | os.PathLike, splits: list[str] | None = None, caps_per_image: int = 5
) -> list[PrecompSplit]:
    """Every split of a precomp folder (or `splits`), checked for shape and caption count.

    Caption j belongs to image j // caps_per_image. The images file holds either one row per
    image (SCAN's data) or one row per caption (the VSE++ / rkiros layout, which SCAN reads with
    im_div = 1): then each image's rows must be identical and the first is kept.
    """
    src = Path(src)
    names = splits or sorted(p.name[: -len("_ims.npy")] for p in src.glob("*_ims.npy"))
    if not names:
        raise StoreError(f"{src}: no {{split}}_ims.npy files (not a SCAN precomp folder)")
    out = []
    for split in names:
        ims_path, caps_path = src / f"{split}_ims.npy", src / f"{split}_caps.txt"
        try:
            ims = np.load(ims_path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise StoreError(f"{ims_path}: missing") from None
        except Exception as exc:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError,
            # tokenize.TokenError, OverflowError... for a damaged header: all mean an unreadable file
            raise StoreError(f"{ims_path}: unreadable .npy ({type(exc).__name__}: {exc})") from None
        if ims.ndim != 3 or ims.dtype.kind != "f":
            raise StoreError(f"{ims_path}: shape {ims.shape} dtype {ims.dtype}, expected float [N, K, D]")
        if not caps_path.is_file():
            raise StoreError(f"{caps_path}: missing (every {{split}}_ims.npy needs its captions file)")
        lines = read_lines(caps_path)
        if len(lines) == caps_per_image * len(ims):
            repeat = 1
        elif caps_per_image > 1 and len(lines) == len(ims) and len(ims) % caps_per_image == 0:
            repeat = caps_per_image
        else:
            raise StoreError(
                f"{caps_path}: {len(lines)} lines for {len(ims)} images in {ims_path.name} x {caps_per_image} captions"
            )
        ids = _source_ids(src / f"{split}_ids.txt", len(ims) // repeat, repeat)
        out.append(PrecompSplit(split, ims, lines, ims_path, repeat, ids))
    return out


def _check_values(part: PrecompSplit, dtype: str) -> None:
    """The writer's value check on a whole split before anything is written, so that a value
    the feature set cannot hold (NaN, float16 overflow) stops the import with nothing stored;
    with one row per caption, also that an image's rows are identical."""
    want, r = np.dtype(dtype), part.repeat
    for a in range(0, part.n_images, 256):
        block = np.asarray(part.ims[a * r : (a + 256) * r])  # (b * r, K, D), one sequential read
        if r > 1:
            groups = block.reshape(-1, r, *block.shape[1:])  # (b, r, K, D)
            same = (groups == groups[:, :1]).reshape(len(groups), -1).all(axis=1)
            if not same.all():
                j = a + int(np.flatnonzero(~same)[0])
                raise StoreError(
                    f"{part.path}: rows {j * r}..{j * r + r - 1} (image {j}) differ, but with one row "
                    f"per caption the {r} rows of an image must be the same image"
                )
            block = groups[:, 0]
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            stored = block.astype(want)
        bad = ~np.isfinite(stored.reshape(len(block), -1)).all(axis=1)  # (b,)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            problem = value_problem(block[j], stored[j])
            raise StoreError(f"{part.path}: item {a + j} (id '{part.split}/{a + j}'): field 'features': {problem}")


def import_precomp(
    src: str | os.PathLike,
    dest: Store | str | os.PathLike,
    name: str = "regions/precomp",
    *,
    dtype: str = "float16",
    caps_per_image: int = 5,
    splits: list[str] | None = None,
    progress: Progress | None = None,
    **writer_opts: Any,
) -> int:
    """Import a SCAN `*_precomp` folder (every split found, or `splits`); returns items added.
    Ids are `{split}/{i}`; the field `captions` keeps each image's caption lines byte for byte
    (uint8, line ends included). All splits are checked before anything is written."""
    src = Path(src)
    parts = read_precomp(src, splits, caps_per_image)
    shapes = {p.ims.shape[1:] for p in parts}
    if len(shapes) != 1:
        raise StoreError(f"{src}: splits have different [K, D] shapes {sorted(shapes)}")
    ((k, d),) = shapes
    fields = [Field("features", (k, d), dtype), Field("captions", (None,), "uint8")]
    for part in parts:
        _check_values(part, dtype)
    attrs = {"extractor": "scan-precomp", "imported_from": "precomp", "caps_per_image": caps_per_image}
    total, done = sum(p.n_images for p in parts), 0
    with no_trace_on_failure(dest, name):
        store = open_dest(dest)
        if name in store:
            check_dtype(read_manifest(store.path / name).fields, dtype, store.path / name)
        with store.writer(name, fields, None if name in store else attrs, **writer_opts) as w:
            for part in parts:
                r = part.repeat
                for a in range(0, part.n_images, 256):
                    ids = [f"{part.split}/{i}" for i in range(a, min(part.n_images, a + 256))]
                    todo = [j for j, i in enumerate(ids) if not w.is_done(i)]
                    if todo:  # one sequential read, one image per row
                        block = np.asarray(part.ims[a * r : (a + len(ids)) * r : r])  # (b, K, D)
                        for j in todo:
                            c = (a + j) * caps_per_image
                            caps = np.frombuffer(b"".join(part.lines[c : c + caps_per_image]), dtype=np.uint8)
                            try:
                                w.add(ids[j], {"features": block[j], "captions": caps})
                            except StoreError as exc:
                                raise StoreError(f"{part.path}: item {a + j}: {exc}") from None
                    done += len(ids)
                    if progress:
                        progress(done, total)
    return w.written
