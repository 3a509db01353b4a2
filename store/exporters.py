"""Export a feature set to the formats other code reads.

- SCAN precomp (`export_precomp`, below): `{split}_ims.npy` `[N, K, D]` (+ `{split}_caps.txt`,
  `{split}_ids.txt`), the files SCAN's and VSE++'s `PrecompDataset` read.
- bottom-up-attention TSV, 10 fields as LXMERT's `load_obj_tsv` reads them (or the 6-field
  Caffe layout) (`export_tsv`, store/export_regions.py).
- per-image `.npz` as bottom-up-attention.pytorch writes them (`export_npz`, same file).
Every file is written under a temporary name; all are renamed once the export is complete, and
a failed export removes them (store/export_output.py). Precomp features are written as float16,
float32 or float64; a value the dtype asked for cannot hold is an error naming the id.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lighthead.store.api import Store, open_store
from lighthead.store.errors import StoreError
from lighthead.store.export_output import ExportOutput
from lighthead.store.export_regions import export_npz, export_tsv, feature_set
from lighthead.store.import_base import Progress
from lighthead.store.manifest import reserve_space
from lighthead.store.schema import value_problem

__all__ = ["export_npz", "export_precomp", "export_tsv"]
_SPLIT_ID = re.compile(r"^(?P<split>[^/]+)/(?P<i>\d+)$")
EXPORT_DTYPES = ("float16", "float32", "float64")  # what SCAN / VSE++ read; an integer dtype would truncate


def _groups(fs, split: str | None) -> dict[str, list[str]]:
    if split is not None:
        return {split: list(fs.ids)}
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i in fs.ids:
        m = _SPLIT_ID.match(i)
        if not m:
            raise StoreError(
                f"{fs.path}: id {i!r} is not '<split>/<index>'; give the split name to export all items as one split"
            )
        groups[m["split"]].append((int(m["i"]), i))
    return {s: [i for _, i in sorted(v)] for s, v in sorted(groups.items())}


def export_precomp(
    src: Store | str | os.PathLike,
    dest: str | os.PathLike,
    name: str = "regions/precomp",
    *,
    field: str = "features",
    captions_field: str = "captions",
    dtype: str = "float32",
    split: str | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    captions: Mapping[str, bytes] | None = None,
    ids: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Write `{split}_ims.npy` `[N, K, D]` per split, with `{split}_caps.txt` when captions are
    known and `{split}_ids.txt` when `ids` is given. Returns the files written.

    groups: split -> item ids in file order (a dataset store's splits); without it, ids
    `<split>/<i>` are grouped by split and ordered by i, or with `split` every item goes to that
    split in storage order. captions: item id -> its caption lines (bytes, line ends included);
    without it the feature set's `captions` field is used when it has one. ids: item id ->
    the line of `{split}_ids.txt`.
    """
    if dtype not in EXPORT_DTYPES:
        raise ValueError(
            f"export dtype {dtype!r} is not supported: precomp features are written as "
            f"{', '.join(EXPORT_DTYPES)} (an integer dtype would truncate them)"
        )
    want = np.dtype(dtype)
    store = src if isinstance(src, Store) else open_store(src)
    fs = feature_set(store, name)
    fld = fs.fields.get(field)
    if fld is None or fld.variable or len(fld.shape) != 2:
        raise StoreError(
            f"{fs.path}: precomp needs a fixed [K, D] field {field!r}; have "
            f"{ {n: f.shape for n, f in fs.fields.items()} } (import with a fixed box count)"
        )
    groups = dict(groups) if groups is not None else _groups(fs, split)
    for split_name, members in groups.items():
        lacking = [i for i in members if i not in fs]
        if lacking:
            raise StoreError(
                f"{fs.path}: lacks {len(lacking)} of the {len(members)} images of split {split_name!r} "
                f"(e.g. {lacking[0]!r}); extract or import them first"
            )
        if captions is not None and any(i not in captions for i in members):
            raise StoreError(f"split {split_name!r}: no captions for {next(i for i in members if i not in captions)!r}")
    from_field = captions is None and captions_field in fs.fields
    written, total, done = [], sum(len(v) for v in groups.values()), 0
    with ExportOutput(dest) as out:
        for split_name, members in groups.items():
            ims_name = f"{split_name}_ims.npy"
            tmp = out.tmp(ims_name)
            caps: list[bytes] = []
            try:
                # Plain writes into space reserved up front, not a memmap: a full disk is then an
                # OSError naming the file, never a SIGBUS on a sparse file.
                with open(tmp, "wb") as fh:
                    shape = (len(members), *fld.shape)  # (N, K, D)
                    np.lib.format.write_array_header_1_0(
                        fh, {"descr": np.lib.format.dtype_to_descr(want), "fortran_order": False, "shape": shape}
                    )
                    reserve_space(fh.fileno(), fh.tell() + int(np.prod(shape)) * want.itemsize, out.final(ims_name))
                    for a in range(0, len(members), 256):
                        chunk = list(members[a : a + 256])
                        batch = fs.get_batch(chunk, [field] + ([captions_field] if from_field else []))
                        fh.write(np.ascontiguousarray(_cast(batch[field], want, chunk, field, fs.path)).tobytes())
                        if from_field:
                            caps += [np.asarray(c, dtype=np.uint8).tobytes() for c in batch[captions_field]]
                        elif captions is not None:
                            caps += [captions[i] for i in chunk]
                        done += len(chunk)
                        if progress:
                            progress(done, total)
            except OSError as exc:
                if exc.filename is None and exc.errno is not None:  # a failed write() names no file
                    raise OSError(exc.errno, exc.strerror, str(out.final(ims_name))) from None
                raise
            written.append(out.final(ims_name))
            if from_field or captions is not None:
                out.tmp(f"{split_name}_caps.txt").write_bytes(b"".join(caps))
                written.append(out.final(f"{split_name}_caps.txt"))
            if ids is not None:
                out.tmp(f"{split_name}_ids.txt").write_bytes("".join(f"{ids.get(i, i)}\n" for i in members).encode())
                written.append(out.final(f"{split_name}_ids.txt"))
    return written


def _cast(values: np.ndarray, want: np.dtype, ids: Sequence[str], field: str, where: Path) -> np.ndarray:
    """`values` as `want`; a value the narrower dtype cannot hold (float32 beyond float16's
    65504 would become inf) is an error naming the id, never written changed."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(want)
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)  # (B,)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise StoreError(f"{where}: id {ids[j]!r}, field {field!r}: {value_problem(values[j], out[j])}")
    return out
