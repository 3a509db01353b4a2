"""Export a feature set back to the formats other code reads (SCAN precomp)."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lighthead.store.api import Store, open_store
from lighthead.store.errors import StoreError
from lighthead.store.importers import Progress
from lighthead.store.manifest import atomic_write

_SPLIT_ID = re.compile(r"^(?P<split>[^/]+)/(?P<i>\d+)$")


def _groups(fs, split: str | None) -> dict[str, list[str]]:
    if split is not None:
        return {split: list(fs.ids)}
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i in fs.ids:
        m = _SPLIT_ID.match(i)
        if not m:
            raise StoreError(f"{fs.path}: id {i!r} is not '<split>/<index>'; give the split name to export "
                             f"all items as one split")
        groups[m["split"]].append((int(m["i"]), i))
    return {s: [i for _, i in sorted(v)] for s, v in sorted(groups.items())}


def export_precomp(src: Store | str | os.PathLike, dest: str | os.PathLike, name: str = "regions/precomp", *,
                   field: str = "features", captions_field: str = "captions", dtype: str = "float32",
                   split: str | None = None, progress: Progress | None = None) -> list[Path]:
    """Write `{split}_ims.npy` `[N, K, D]` (+ `{split}_caps.txt` when the feature set has a
    captions field) per split. Ids `<split>/<i>` are grouped by split and ordered by i;
    with `split` given, all items go to that split in storage order. Each file is written
    under a temporary name and renamed when complete. Returns the files written."""
    store = src if isinstance(src, Store) else open_store(src)
    try:
        fs = store[name]
    except KeyError as exc:
        raise StoreError(f"{store.path}: {exc.args[0]}") from None
    fld = fs.fields.get(field)
    if fld is None or fld.variable or len(fld.shape) != 2:
        raise StoreError(f"{fs.path}: precomp needs a fixed [K, D] field {field!r}; have "
                         f"{ {n: f.shape for n, f in fs.fields.items()} } (import with a fixed box count)")
    groups = _groups(fs, split)
    out_dir = Path(dest)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, total, done = [], len(fs), 0
    for split_name, ids in groups.items():
        ims_path = out_dir / f"{split_name}_ims.npy"
        tmp = out_dir / f"{split_name}_ims.npy.tmp"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(len(ids), *fld.shape))
        caps: list[bytes] = []
        want: list[Any] = [field] + ([captions_field] if captions_field in fs.fields else [])
        for a in range(0, len(ids), 256):
            batch = fs.get_batch(ids[a:a + 256], want)
            arr[a:a + len(batch[field])] = batch[field]
            if captions_field in batch:
                caps += [np.asarray(c, dtype=np.uint8).tobytes() for c in batch[captions_field]]
            done += len(batch[field])
            if progress:
                progress(done, total)
        arr.flush()
        del arr
        os.replace(tmp, ims_path)
        written.append(ims_path)
        if captions_field in fs.fields:
            caps_path = out_dir / f"{split_name}_caps.txt"
            atomic_write(caps_path, b"".join(caps))
            written.append(caps_path)
    return written
