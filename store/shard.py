"""One HDF5 shard: how it is laid out, written and read.

Layout of `shard-<tag>-<num>.h5` (N items):
    /ids              [N] UTF-8 strings
    /fields/<name>    fixed field:    [N, *shape], chunked one item per chunk (small items are
                                      grouped to >= 4 KiB chunks: per-chunk overhead would dominate)
                      variable field: [total, *rest], contiguous
    /offsets/<name>   variable field: [N+1] int64; item i is rows offsets[i]:offsets[i+1]
No compression: float16 features hardly compress, and unfiltered chunks let the reader copy
an item straight out of a read-only mmap of the file at the chunk's offset instead of going
through HDF5's selection machinery (the "raw" path; offsets come from HDF5's chunk index and
are checked against the file size, so a truncated file is refused, not a SIGBUS). The h5py
path stays as a fallback and a cross-check.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lighthead.store.errors import StoreError
from lighthead.store.schema import FORMAT, VERSION, Field

MIN_CHUNK_BYTES = 4096  # items smaller than this share a chunk
H5_LIBVER = ("v110", "v110")  # readable by any HDF5 >= 1.10, yet with the faster chunk indexes
H5_CACHE = dict(rdcc_nbytes=4 << 20, rdcc_nslots=10007)  # h5py fallback path only
# Page-aligned data: a [36, 2048] float16 item then spans exactly 36 pages, not 37. Chunks
# of one field are consecutive, so only the first one of each dataset may need padding.
H5_ALIGN = dict(alignment_threshold=4096, alignment_interval=4096)


def rows_per_chunk(field: Field, n: int) -> int:
    item_bytes = max(1, int(np.prod(field.shape, dtype=np.int64)) * field.np_dtype.itemsize)
    return max(1, min(n, MIN_CHUNK_BYTES // item_bytes or 1))


def write_shard(path: Path, ids: list[str], fields: dict[str, Field],
                columns: dict[str, list[np.ndarray]], fsync: bool = True) -> None:
    """Write a complete shard to `path` (the caller passes a `.tmp` name and renames it)."""
    n = len(ids)
    # HDF5 locking is pointless here: the file is private to this writer until renamed.
    with h5py.File(path, "w", libver=H5_LIBVER, locking=False, **H5_ALIGN) as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["fields"] = json.dumps([fl.to_json() for fl in fields.values()])
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        g_fields, g_offsets = f.create_group("fields"), f.create_group("offsets")
        for name, fld in fields.items():
            values = columns[name]
            if fld.variable:
                offsets = np.zeros(n + 1, dtype=np.int64)
                np.cumsum([len(v) for v in values], out=offsets[1:])
                flat = np.concatenate(values, axis=0)  # (total, *rest)
                g_fields.create_dataset(name, data=flat)
                g_offsets.create_dataset(name, data=offsets)
            else:
                arr = np.stack(values)  # (N, *shape)
                rpc = rows_per_chunk(fld, n)
                g_fields.create_dataset(name, data=arr, chunks=(rpc, *fld.shape))
    if fsync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_h5(path: Path) -> h5py.File:
    """Open a finished shard read-only, naming the file on failure.

    Finished shards never change, so HDF5's own file lock protects nothing here; skipping it
    avoids lock failures on NFS/GPFS mounts without lock support.
    """
    try:
        return h5py.File(path, "r", locking=False, **H5_CACHE)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot open shard (truncated or not HDF5): {exc}") from None


@dataclass
class _FixedIndex:
    chunk_offsets: np.ndarray  # file offset of each chunk, by chunk number
    rows_per_chunk: int  # items per chunk
    item_bytes: int  # bytes of one item


@dataclass
class _VarIndex:
    base: int  # file offset of the contiguous flat array (-1 when it is empty)
    row_bytes: int  # bytes of one row of the flat array


class ShardReader:
    """Reads items of one shard. Picklable; per-process handles are reopened after fork."""

    def __init__(self, path: Path, fields: dict[str, Field], rows: int):
        self.path = Path(path)
        self.fields = fields
        self.rows = rows
        self.offsets: dict[str, np.ndarray] = {}  # variable fields: [rows+1]
        self.raw: dict[str, _FixedIndex | _VarIndex] = {}  # fields readable with pread
        self.ram: dict[str, np.ndarray] = {}  # preloaded arrays (fixed [N,...] or flat)
        self._pid = -1
        self._map: np.ndarray | None = None  # uint8 view of a read-only mmap of the file
        self._h5: h5py.File | None = None

    def load_index(self) -> list[str]:
        """Read ids, offsets and the raw-read index; returns the ids. Closes the file after."""
        size = os.path.getsize(self.path)
        with open_h5(self.path) as f:
            try:
                ids = [s for s in f["ids"].asstr()[...]]
                for name, fld in self.fields.items():
                    ds = f["fields"][name]
                    if fld.variable:
                        off = np.asarray(f["offsets"][name][...], dtype=np.int64)
                        if len(off) != self.rows + 1 or off[0] != 0 or np.any(np.diff(off) < 0) \
                                or off[-1] != ds.shape[0]:
                            raise StoreError(f"{self.path}: bad offsets for field {name!r}")
                        self.offsets[name] = off
                    idx = _raw_index(ds, fld, self.rows, size)
                    if idx is not None:
                        self.raw[name] = idx
            except KeyError as exc:
                raise StoreError(f"{self.path}: missing dataset {exc}") from None
        if len(ids) != self.rows:
            raise StoreError(f"{self.path}: holds {len(ids)} ids, manifest says {self.rows}")
        return ids

    # -- per-process handles -------------------------------------------------------------
    def _check_pid(self) -> None:
        pid = os.getpid()
        if pid != self._pid:  # fresh process (DataLoader worker): drop inherited handles
            self._pid, self._map, self._h5 = pid, None, None

    def mapped(self) -> np.ndarray:
        """The whole file as a read-only uint8 array (mapped once per process)."""
        self._check_pid()
        if self._map is None:
            try:
                with open(self.path, "rb") as fh:
                    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise StoreError(f"{self.path}: cannot map shard: {exc}") from None
            self._map = np.frombuffer(mm, dtype=np.uint8)
        return self._map

    def h5(self) -> h5py.File:
        self._check_pid()
        if self._h5 is None:
            self._h5 = open_h5(self.path)
        return self._h5

    def close(self) -> None:
        if self._pid == os.getpid() and self._h5 is not None:
            self._h5.close()
        self._map = self._h5 = None  # the mmap closes when no array refers to it

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_pid=-1, _map=None, _h5=None)
        return state

    # -- reads ---------------------------------------------------------------------------
    def read_fixed(self, name: str, rows: np.ndarray, out: np.ndarray, dest: np.ndarray) -> None:
        """out[dest[j]] = item rows[j] of field `name`; rows sorted ascending."""
        if name in self.ram:
            out[dest] = self.ram[name][rows]
            return
        idx = self.raw.get(name)
        if idx is None:
            uniq, inv = np.unique(rows, return_inverse=True)
            out[dest] = self.h5()["fields"][name][uniq][inv]  # h5py wants increasing indices
            return
        flat = out.reshape(out.shape[0], -1).view(np.uint8)  # (B, item_bytes)
        mm, nb = self.mapped(), idx.item_bytes
        starts = idx.chunk_offsets[rows // idx.rows_per_chunk] + (rows % idx.rows_per_chunk) * nb
        for j, o in zip(dest.tolist(), starts.tolist()):
            flat[j] = mm[o:o + nb]

    def read_variable(self, name: str, row: int) -> np.ndarray:
        fld = self.fields[name]
        a, b = int(self.offsets[name][row]), int(self.offsets[name][row + 1])
        if name in self.ram:
            return self.ram[name][a:b].copy()
        idx = self.raw.get(name)
        if idx is None:
            return self.h5()["fields"][name][a:b]
        if b == a:
            return np.empty((0, *fld.row_shape), dtype=fld.np_dtype)
        o = idx.base + a * idx.row_bytes
        raw = self.mapped()[o:o + (b - a) * idx.row_bytes]
        return raw.view(fld.np_dtype).reshape(b - a, *fld.row_shape).copy()

    def read_all(self, name: str) -> np.ndarray:
        """The whole dataset of a field (fixed [N, ...] or flat [total, ...]), for preload."""
        return np.asarray(self.h5()["fields"][name][...])


def _raw_index(ds: h5py.Dataset, fld: Field, rows: int, file_size: int):
    """Byte offsets that let an item be read with one pread, or None to use h5py instead."""
    if ds.dtype.byteorder == ">" or ds.id.get_create_plist().get_nfilters() != 0:
        return None
    itemsize = ds.dtype.itemsize
    if fld.variable:
        row_bytes = int(np.prod(fld.row_shape, dtype=np.int64)) * itemsize
        if ds.shape[0] == 0:
            return _VarIndex(-1, row_bytes)
        if ds.chunks is not None:
            return None
        base = ds.id.get_offset()
        if base is None or base + ds.shape[0] * row_bytes > file_size:
            return None if base is None else _truncated(ds)
        return _VarIndex(int(base), row_bytes)
    if ds.chunks is None or rows == 0:
        return None
    rpc = ds.chunks[0]
    nchunks = -(-rows // rpc)
    offsets = np.full(nchunks, -1, dtype=np.int64)
    ends = [0]

    def visit(info) -> None:
        if info.byte_offset is None:
            return  # unallocated chunk
        offsets[info.chunk_offset[0] // rpc] = info.byte_offset
        ends[0] = max(ends[0], info.byte_offset + info.size)

    if hasattr(ds.id, "chunk_iter"):  # one C-level pass (HDF5 >= 1.12.3)
        ds.id.chunk_iter(visit)
    elif hasattr(ds.id, "get_chunk_info"):  # older HDF5: one call per chunk
        for k in range(ds.id.get_num_chunks()):
            visit(ds.id.get_chunk_info(k))
    else:
        return None
    if np.any(offsets < 0):
        return None  # unallocated chunks: let HDF5 supply fill values
    if ends[0] > file_size:
        _truncated(ds)
    item_bytes = int(np.prod(fld.shape, dtype=np.int64)) * itemsize
    return _FixedIndex(offsets, rpc, item_bytes)


def _truncated(ds: h5py.Dataset):
    raise StoreError(f"{ds.file.filename}: field {ds.name} extends past the end of the file (truncated shard)")
