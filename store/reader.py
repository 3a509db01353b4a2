"""Reading a feature set: by id or position, one item or a batch, from disk or RAM."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lighthead.store.errors import StoreError
from lighthead.store.manifest import read_manifest
from lighthead.store.schema import MANIFEST, Field, check_shard_file
from lighthead.store.shard import ShardReader, check_reads_default


class FeatureSet:
    """A read-only view of one feature set, as listed by its manifest when opened.

    `fs.ids` lists the ids in storage order; `fs[id]` or `fs[position]` returns
    `{field: np.ndarray}`; `fs.get_batch(keys)` returns fixed fields stacked as
    `[B, *shape]` and variable fields as lists of B arrays. File handles are opened
    lazily, one set per process, so a FeatureSet can be handed to DataLoader workers.

    Every chunk is checked against its checksum the first time this process reads it;
    `check_reads=False` (or LIGHTHEAD_STORE_CHECK_READS=0) skips that on the direct-copy path.
    Shard names in the manifest must be plain file names inside `directory`.
    """

    def __init__(self, directory: Path, name: str | None = None, check_reads: bool | None = None):
        self.path = Path(directory)
        self.check_reads = check_reads_default() if check_reads is None else bool(check_reads)
        manifest = read_manifest(self.path)
        self.name = name or manifest.name
        self.fields: dict[str, Field] = manifest.fields
        self.attrs: dict[str, Any] = {**manifest.attrs, "library_versions": manifest.versions}
        self.shards = manifest.shards
        self._readers: list[ShardReader] = []
        ids: list[str] = []
        for entry in manifest.shards:
            path = self.path / check_shard_file(entry.file, self.path / MANIFEST)
            if not path.exists():
                raise StoreError(f"{path}: listed in the manifest but missing")
            if path.stat().st_size != entry.bytes:
                raise StoreError(f"{path}: {path.stat().st_size} bytes, manifest says {entry.bytes} (truncated)")
            reader = ShardReader(path, self.fields, entry.rows, self.check_reads)
            shard_ids = reader.load_index()
            if shard_ids and (shard_ids[0] != entry.first_id or shard_ids[-1] != entry.last_id):
                raise StoreError(f"{path}: id range {shard_ids[0]!r}..{shard_ids[-1]!r} differs from the manifest")
            self._readers.append(reader)
            ids.extend(shard_ids)
        self.ids: list[str] = ids
        self._starts = np.cumsum([0] + [e.rows for e in manifest.shards], dtype=np.int64)
        self._pos: dict[str, int] = {}
        for p, i in enumerate(ids):
            if self._pos.setdefault(i, p) != p:
                a, b = self._locate(self._pos[i])[0], self._locate(p)[0]
                raise StoreError(
                    f"{self.path}: id {i!r} stored twice ({self._readers[a].path.name}, {self._readers[b].path.name})"
                )
        self.preloaded = False

    # -- lookup ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._pos

    def __repr__(self) -> str:
        return f"FeatureSet({self.name!r}, items={len(self)}, fields={list(self.fields)})"

    def position(self, key: Any) -> int:
        """Position of an id (str) or a checked, non-negative position (int)."""
        if isinstance(key, str):
            try:
                return self._pos[key]
            except KeyError:
                raise KeyError(f"id {key!r} not in feature set {self.name!r}") from None
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            p = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= p < len(self):
                raise IndexError(f"position {key} out of range for {len(self)} items")
            return p
        raise TypeError(f"keys are ids (str) or positions (int), got {type(key).__name__}")

    def _positions(self, keys: Sequence[Any]) -> np.ndarray:
        if isinstance(keys, range) or (isinstance(keys, np.ndarray) and keys.dtype.kind in "iu"):
            pos = np.asarray(keys, dtype=np.int64)  # vectorised path for integer positions
            pos = np.where(pos < 0, pos + len(self), pos)
            if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
                raise IndexError(f"position out of range for {len(self)} items")
            return pos
        return np.fromiter((self.position(k) for k in keys), dtype=np.int64, count=len(keys))

    def _locate(self, pos: int) -> tuple[int, int]:
        s = int(np.searchsorted(self._starts, pos, side="right")) - 1
        return s, pos - int(self._starts[s])

    def _fields(self, fields: Iterable[str] | None) -> list[str]:
        if fields is None:
            return list(self.fields)
        names = list(fields)
        for n in names:
            if n not in self.fields:
                raise KeyError(f"no field {n!r} in {self.name!r}; fields: {list(self.fields)}")
        return names

    # -- reads -------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> dict[str, np.ndarray]:
        return self.get(key)

    def get(self, key: Any, fields: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """One item as `{field: array}`; `fields` picks a subset."""
        s, row = self._locate(self.position(key))
        reader, out = self._readers[s], {}
        one = np.array([row], dtype=np.int64)
        for n in self._fields(fields):
            fld = self.fields[n]
            if fld.variable:
                out[n] = reader.read_variable(n, row)
            else:
                buf = np.empty((1, *fld.shape), dtype=fld.np_dtype)
                reader.read_fixed(n, one, buf, np.zeros(1, dtype=np.int64))
                out[n] = buf[0]
        return out

    def get_batch(
        self, keys: Sequence[Any], fields: Iterable[str] | None = None, out: dict[str, np.ndarray] | None = None
    ) -> dict[str, Any]:
        """Several items: fixed fields as `[B, *shape]` arrays, variable ones as lists.

        Reads are grouped by shard and sorted by row within it, so each shard is visited
        once in file order; the result keeps the order of `keys`. `out` may supply the
        `[B, *shape]` arrays of fixed fields to fill (e.g. views of shared-memory tensors).
        """
        pos = self._positions(keys)
        shard = np.searchsorted(self._starts, pos, side="right") - 1
        rows = pos - self._starts[shard]
        order = np.lexsort((rows, shard))
        bounds = np.flatnonzero(np.diff(shard[order])) + 1
        groups = np.split(order, bounds) if len(order) else []
        result: dict[str, Any] = {}
        for n in self._fields(fields):
            fld = self.fields[n]
            if fld.variable:
                items: list[Any] = [None] * len(pos)
                for g in groups:
                    reader = self._readers[int(shard[g[0]])]
                    for j in g.tolist():
                        items[j] = reader.read_variable(n, int(rows[j]))
                result[n] = items
            else:
                arr = out.get(n) if out else None
                if arr is None:
                    arr = np.empty((len(pos), *fld.shape), dtype=fld.np_dtype)
                elif arr.shape != (len(pos), *fld.shape) or arr.dtype != fld.np_dtype or not arr.flags.c_contiguous:
                    raise ValueError(
                        f"out[{n!r}] must be a C-contiguous {fld.dtype} array of shape {(len(pos), *fld.shape)}"
                    )
                for g in groups:
                    self._readers[int(shard[g[0]])].read_fixed(n, rows[g], arr, g)
                result[n] = arr
        return result

    def items(self, fields: Iterable[str] | None = None, batch: int = 256):
        """Iterate `(id, item)` in storage order, reading `batch` items at a time."""
        for a in range(0, len(self), batch):
            chunk = self.get_batch(range(a, min(a + batch, len(self))), fields)
            for j, i in enumerate(self.ids[a : a + batch]):
                yield i, {n: v[j] for n, v in chunk.items()}

    def preload(self, fields: Iterable[str] | None = None) -> FeatureSet:
        """Read the (selected) fields of every shard into RAM; later reads never touch disk.
        Arrays are inherited by forked DataLoader workers without copying."""
        for n in self._fields(fields):
            for reader in self._readers:
                reader.ram[n] = reader.read_all(n)
        for reader in self._readers:
            reader.close()
        self.preloaded = True
        return self

    @property
    def nbytes(self) -> int:
        """Bytes of the shard files on disk."""
        return sum(e.bytes for e in self.shards)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
