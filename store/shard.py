"""One HDF5 shard: how it is laid out, written and read.

Layout of `shard-<tag>-<num>.h5` (N items):
    /ids              [N] UTF-8 strings, fixed width (NUL-padded; ids never contain NUL)
    /fields/<name>    fixed field:    [N, *shape], one item per chunk (small items are grouped
                                      to >= 4 KiB chunks: per-chunk overhead would dominate)
                      variable field: [total, *rest], chunks of about one average item
    /offsets/<name>   variable field: [N+1] int64; item i is rows offsets[i]:offsets[i+1]
    /sums/<name>      [chunks of fields/<name>] uint64: XXH3-64 of each chunk's rows
                      (store/checksums.py; group attribute `algorithm`)
Every dataset is chunked with HDF5's Fletcher-32 filter: each chunk carries a checksum of its
bytes, which HDF5 checks whenever it reads the chunk, so a damaged byte is an error instead
of a wrong value. No compression: float16 features hardly compress, and uncompressed chunks
let the reader copy an item straight out of a read-only mmap of the file at the chunk's
offset instead of going through HDF5's selection machinery (the "raw" path; offsets come
from HDF5's chunk index and are checked against the file size, so a truncated file is
refused, not a SIGBUS). The first time a reader (or a process forked from it: the flags are
in shared memory, `shared_flags`) reads a chunk it checks the chunk's bytes
against its XXH3 sum in /sums (a fraction of the copy's time); a chunk that fails is an
error naming shard, id and field. Shards written before /sums existed are checked against
the Fletcher-32 sum HDF5 stored after each chunk (store/fletcher.py: the same sums HDF5
computes, with numpy; about three times the copy); a chunk that fails is read through HDF5,
which judges it and whose error names the id. Later reads of a checked chunk are direct
copies. A shard is never modified after it is written, so what was checked stays checked, up
to the page cache. Shards written before checksums (no filter, contiguous variable fields,
variable-width ids) are read as before, without the check.

Readers of one shard in one process share its mapping (`map_shard`), so a reader opened
beside another one (an evaluation beside training, a sweep's trials) finds its pages mapped.
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lighthead.store import checksums
from lighthead.store.errors import StoreError
from lighthead.store.fletcher import fletcher32, stored
from lighthead.store.manifest import reserve_space
from lighthead.store.schema import FORMAT, VERSION, Field

MIN_CHUNK_BYTES = 4096  # items smaller than this share a chunk
MAX_CHUNK_BYTES = 1 << 20  # variable-length fields: chunks of about one item, at most this
H5_LIBVER = ("v110", "v110")  # readable by any HDF5 >= 1.10, yet with the faster chunk indexes
# h5py path (first, checked reads of each chunk; other layouts): holds one chunk of a variable
# field, so an item spanning chunks is checked once; kept small, every shard has its own
H5_CACHE = dict(rdcc_nbytes=MAX_CHUNK_BYTES, rdcc_nslots=521)
CHECK_ENV = "LIGHTHEAD_STORE_CHECK_READS"  # "0": never check checksums on the raw path


def check_reads_default() -> bool:
    return os.environ.get(CHECK_ENV, "1") != "0"


def rows_per_chunk(field: Field, n: int) -> int:
    item_bytes = max(1, int(np.prod(field.shape, dtype=np.int64)) * field.np_dtype.itemsize)
    return max(1, min(n, MIN_CHUNK_BYTES // item_bytes or 1))


def flat_rows_per_chunk(row_bytes: int, total: int, items: int) -> int:
    """Rows per chunk of a variable field's flat array: about one average item, so a random
    read checks little beyond what it needs, within [MIN_CHUNK_BYTES, MAX_CHUNK_BYTES]."""
    row_bytes = max(1, row_bytes)
    want = -(-total // max(1, items)) * row_bytes  # bytes of an average item, rounded up
    want = min(max(want, MIN_CHUNK_BYTES), MAX_CHUNK_BYTES)
    return max(1, min(total, want // row_bytes))


def _dataset(group: h5py.Group, name: str, data: np.ndarray, rows: int) -> None:
    """A dataset chunked `rows` items at a time (whole rows), with a Fletcher-32 checksum per chunk."""
    if len(data) == 0:  # chunks may not exceed a fixed shape: an empty one must be extendible
        group.create_dataset(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(1, *data.shape[1:]),
            maxshape=(None, *data.shape[1:]),
            fletcher32=True,
        )
        return
    group.create_dataset(name, data=data, chunks=(rows, *data.shape[1:]), fletcher32=True)


# A bound on what a shard needs beyond its chunks (superblock, groups, object headers, chunk
# indexes), so the space reserved before writing always covers the file HDF5 writes.
SHARD_BASE_BYTES = 64 << 10  # per file
DATASET_BYTES = 4 << 10  # per dataset
CHUNK_BYTES = 64  # per chunk: its Fletcher-32 checksum and index entry


def shard_layout(
    ids: list[str], fields: dict[str, Field], columns: dict[str, list[np.ndarray]]
) -> dict[str, tuple[int, int, int]]:
    """Per dataset of the shard: (rows, bytes per row, rows per chunk), as `write_shard` lays it out."""
    n = len(ids)
    width = max([1, *(len(i.encode("utf-8")) for i in ids)])
    layout = {"ids": (n, width, max(1, min(n, MAX_CHUNK_BYTES // width)))}
    for name, fld in fields.items():
        row_bytes = int(np.prod(fld.row_shape, dtype=np.int64)) * fld.np_dtype.itemsize
        if fld.variable:
            total = sum(len(v) for v in columns[name])
            layout[f"fields/{name}"] = (total, row_bytes, flat_rows_per_chunk(row_bytes, total, n))
            layout[f"offsets/{name}"] = (n + 1, 8, flat_rows_per_chunk(8, n + 1, 1))
        else:
            layout[f"fields/{name}"] = (n, row_bytes, rows_per_chunk(fld, n))
        rows, _, per_chunk = layout[f"fields/{name}"]
        chunks = -(-rows // per_chunk)
        layout[f"{checksums.GROUP}/{name}"] = (chunks, 8, flat_rows_per_chunk(8, chunks, 1))
    return layout


def shard_bytes_bound(layout: dict[str, tuple[int, int, int]]) -> int:
    """At least the size of the file `write_shard` writes for `layout` (whole chunks, the last
    one included, plus metadata)."""
    total = SHARD_BASE_BYTES
    for rows, row_bytes, per_chunk in layout.values():
        chunks = max(1, -(-rows // per_chunk))
        total += DATASET_BYTES + chunks * (per_chunk * row_bytes + CHUNK_BYTES)
    return total


def _empty_file_image() -> bytes:
    """The bytes of an empty HDF5 file in the shards' format (built in memory, no disk write)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver=H5_LIBVER):
        pass
    return buf.getvalue()


def write_shard(
    path: Path, ids: list[str], fields: dict[str, Field], columns: dict[str, list[np.ndarray]], fsync: bool = True
) -> None:
    """Write a complete shard to `path` (the caller passes a `.tmp` name and renames it).

    The file's space is reserved first (`reserve_space`): a full disk is an OSError naming
    `path` before HDF5 writes anything, and `path` is removed. HDF5 then writes into the
    reserved space and trims the file to its real size when it closes it."""
    n = len(ids)
    layout = shard_layout(ids, fields, columns)
    encoded = [i.encode("utf-8") for i in ids]
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            reserve_space(fd, shard_bytes_bound(layout), path)
            os.pwrite(fd, _empty_file_image(), 0)
        finally:
            os.close(fd)
        # HDF5 locking is pointless here: the file is private to this writer until renamed.
        with h5py.File(path, "r+", libver=H5_LIBVER, locking=False) as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["fields"] = json.dumps([fl.to_json() for fl in fields.values()])
            _dataset(f, "ids", np.array(encoded, dtype=h5py.string_dtype("utf-8", layout["ids"][1])), layout["ids"][2])
            g_fields, g_offsets = f.create_group("fields"), f.create_group("offsets")
            g_sums = f.create_group(checksums.GROUP)
            g_sums.attrs["algorithm"] = checksums.ALGORITHM
            for name, fld in fields.items():
                values = columns[name]
                per_chunk = layout[f"fields/{name}"][2]
                if fld.variable:
                    offsets = np.zeros(n + 1, dtype=np.int64)
                    np.cumsum([len(v) for v in values], out=offsets[1:])
                    data = np.concatenate(values, axis=0)  # (total, *rest)
                    _dataset(g_offsets, name, offsets, layout[f"offsets/{name}"][2])
                else:
                    data = np.stack(values)  # (N, *shape)
                _dataset(g_fields, name, data, per_chunk)
                _dataset(g_sums, name, checksums.chunk_sums(data, per_chunk), layout[f"{checksums.GROUP}/{name}"][2])
        if fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)  # no partial `.tmp` left behind
        raise


def open_h5(path: Path) -> h5py.File:
    """Open a finished shard read-only, naming the file on failure.

    Finished shards never change, so HDF5's own file lock protects nothing here; skipping it
    avoids lock failures on NFS/GPFS mounts without lock support.
    """
    try:
        return h5py.File(path, "r", locking=False, **H5_CACHE)
    except PermissionError:  # h5py raises OSError subclasses by errno: not a damaged file
        raise StoreError(f"{path}: cannot open shard: permission denied") from None
    except FileNotFoundError:
        raise StoreError(f"{path}: cannot open shard: no such file") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot open shard (truncated or not HDF5): {exc}") from None


def whole(ds: h5py.Dataset, path: Path, file_size: int | None = None) -> h5py.Dataset:
    """`ds`, a dataset about to be read whole (ids, offsets, sums, a preloaded field), once its
    claimed size is checked: a shard stores all its data, so a dataset claiming more bytes than
    the file holds (damaged or hostile: HDF5 allows any shape over unallocated chunks) is
    refused before anything is allocated for it."""
    size = os.path.getsize(path) if file_size is None else file_size
    claimed = ds.size * ds.dtype.itemsize
    if claimed > size:
        raise StoreError(
            f"{path}: dataset {ds.name} claims {ds.shape} {ds.dtype} ({claimed} bytes), more than the "
            f"file's {size} bytes (damaged shard)"
        )
    return ds


def _listed(f: h5py.File, key: str) -> bool:
    """Whether the shard links a dataset `key` ("ids", "fields/<name>"): the link is readable
    even when the dataset's own header is damaged, which tells damaged from missing."""
    try:
        return key in f
    except (KeyError, RuntimeError, OSError):
        return True  # the group holding the link is damaged: then so is what it holds


def _damaged_metadata(path: Path, name: str, exc: BaseException) -> StoreError:
    """One line for a field whose HDF5 metadata (object header, offsets, chunk index) cannot be
    read: h5py raises KeyError, OSError or RuntimeError for them, none naming the file."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return StoreError(
        f"{path}: field {name!r}: unreadable HDF5 metadata (header, offsets, checksums or chunk index), "
        f"the shard is damaged ({text}); `lighthead store verify` checks the whole store"
    )


def _field_dataset(f: h5py.File, name: str, path: Path) -> h5py.Dataset:
    """The dataset of field `name`; a damaged header is a StoreError naming shard and field."""
    try:
        return f["fields"][name]
    except (KeyError, RuntimeError) as exc:
        if not _listed(f, f"fields/{name}"):
            raise StoreError(f"{path}: missing dataset for field {name!r}") from None
        raise _damaged_metadata(path, name, exc) from None


# (pid, device, inode, size, mtime) of a shard -> its mapping, while some reader holds it
_MAPPINGS: weakref.WeakValueDictionary[tuple[int, ...], np.ndarray] = weakref.WeakValueDictionary()


def map_shard(path: Path) -> np.ndarray:
    """The whole shard file as a read-only uint8 array, shared by the readers of this process.

    A fresh mapping has no page-table entries: every page costs a fault on its first touch,
    about as much as copying it. Readers of the same file share one mapping while any of
    them holds it (a shard never changes once written; one replaced by another file has
    another inode or size or time, so it is mapped anew), and it is unmapped with the last."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            key = (os.getpid(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            found = _MAPPINGS.get(key)
            if found is not None:
                return found
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot map shard: {exc}") from None
    arr = np.frombuffer(mm, dtype=np.uint8)
    _MAPPINGS[key] = arr
    return arr


def shared_flags(initial: list[np.ndarray]) -> list[np.ndarray]:
    """The bool arrays `initial`, moved into one block of anonymous shared memory.

    A reader's "chunk checked" flags live there, so the processes forked from it (DataLoader
    workers, made anew every epoch) see and share what any of them checked: a chunk is checked
    once per reader and its forks, not once per worker per epoch. One block per reader keeps
    the count of mappings (vm.max_map_count) to one per shard. A reader pickled into a spawned
    process carries a private copy (it then checks for itself)."""
    total = sum(len(a) for a in initial)
    block = np.frombuffer(mmap.mmap(-1, max(1, total)), dtype=np.bool_, count=total)  # MAP_SHARED | MAP_ANONYMOUS
    out, at = [], 0
    for a in initial:
        out.append(block[at : at + len(a)])
        out[-1][:] = a
        at += len(a)
    return out


@dataclass
class _Chunks:
    """Where the chunks of a dataset (unfiltered, or with only Fletcher-32) lie in the file."""

    offsets: np.ndarray  # file offset of each chunk's first byte, by chunk number
    rows: int  # dataset rows per chunk (items of a fixed field, flat rows of a variable one)
    row_bytes: int  # bytes of one row
    # per chunk: checksum verified by this reader or a process forked from it (shared memory
    # once the reader has loaded its index, see `shared_flags`); None: nothing to check
    checked: np.ndarray | None
    total: int = 0  # rows of the dataset (the last chunk may hold fewer)
    fletcher: bool = False  # every filtered chunk is its rows' bytes then their 4-byte Fletcher-32
    sums: list[int] | None = None  # per chunk: XXH3-64 of its rows (/sums); None: check Fletcher-32


@dataclass
class _Contiguous:
    """An unchunked flat array (variable fields of shards written before checksums)."""

    base: int  # file offset of the flat array (-1 when it is empty)
    row_bytes: int  # bytes of one row of the flat array


class ShardReader:
    """Reads items of one shard. Picklable; per-process handles are reopened after fork.

    `check=False` skips the checksum of chunks read on the raw path (HDF5 itself always
    checks what it reads).
    """

    def __init__(self, path: Path, fields: dict[str, Field], rows: int, check: bool = True):
        self.path = Path(path)
        self.fields = fields
        self.rows = rows
        self.check = check
        self.ids: list[str] = []  # filled by load_index; names items in errors
        self.offsets: dict[str, np.ndarray] = {}  # variable fields: [rows+1]
        self.raw: dict[str, _Chunks | _Contiguous] = {}  # fields readable with pread
        self.ram: dict[str, np.ndarray] = {}  # preloaded arrays (fixed [N,...] or flat)
        self._pid = -1
        self._map: np.ndarray | None = None  # uint8 view of a read-only mmap of the file
        self._h5: h5py.File | None = None

    def load_index(self) -> list[str]:
        """Read ids, offsets and the raw-read index; returns the ids. Closes the file after."""
        size = os.path.getsize(self.path)
        name = None  # the field being read, for the error
        with open_h5(self.path) as f:
            try:
                ids = [s for s in whole(f["ids"], self.path, size).asstr()[...]]
                for name, fld in self.fields.items():
                    ds = f["fields"][name]
                    # the manifest's dtype decides how bytes are read: an edited one must not reinterpret them
                    if ds.dtype.newbyteorder("<") != fld.np_dtype:
                        raise StoreError(
                            f"{self.path}: field {name!r} is stored as {ds.dtype.name}, the manifest "
                            f"says {fld.dtype} (edited or damaged manifest)"
                        )
                    if fld.variable:
                        off = np.asarray(whole(f["offsets"][name], self.path, size)[...], dtype=np.int64)
                        if (
                            len(off) != self.rows + 1
                            or off[0] != 0
                            or np.any(np.diff(off) < 0)
                            or off[-1] != ds.shape[0]
                            or ds.shape[1:] != fld.row_shape
                        ):
                            raise StoreError(f"{self.path}: bad offsets for field {name!r}")
                        self.offsets[name] = off
                    elif ds.shape != (self.rows, *fld.shape):
                        raise StoreError(
                            f"{self.path}: field {name!r} has shape {ds.shape}, expected {(self.rows, *fld.shape)}"
                        )
                    idx = _raw_index(ds, self.check, size)
                    if isinstance(idx, _Chunks) and idx.checked is not None:
                        idx.sums = _chunk_sums(f, name, len(idx.offsets), self.path)
                        if idx.sums is not None:
                            idx.checked[:] = False  # every chunk has its sum, those HDF5 stored unfiltered too
                    if idx is not None:
                        self.raw[name] = idx
                chunked = [idx for idx in self.raw.values() if isinstance(idx, _Chunks) and idx.checked is not None]
                for idx, flags in zip(chunked, shared_flags([idx.checked for idx in chunked])):
                    idx.checked = flags
            except KeyError as exc:
                if name is not None and _listed(f, f"fields/{name}"):
                    raise _damaged_metadata(self.path, name, exc) from None
                if name is None and _listed(f, "ids"):
                    raise StoreError(f"{self.path}: unreadable ids, the shard is damaged: {exc.args[0]}") from None
                raise StoreError(f"{self.path}: missing dataset {exc}") from None
            except (OSError, RuntimeError) as exc:  # a chunk of ids or offsets failed its checksum, I/O error,
                # or a damaged chunk index (h5py's chunk_iter raises RuntimeError)
                if name is None:
                    raise StoreError(f"{self.path}: unreadable ids, the shard is damaged: {exc}") from None
                raise _damaged_metadata(self.path, name, exc) from None
        if len(ids) != self.rows:
            raise StoreError(f"{self.path}: holds {len(ids)} ids, manifest says {self.rows}")
        self.ids = ids
        return ids

    # -- per-process handles -------------------------------------------------------------
    def _check_pid(self) -> None:
        pid = os.getpid()
        if pid != self._pid:  # fresh process (DataLoader worker): drop inherited handles
            self._pid, self._map, self._h5 = pid, None, None

    def mapped(self) -> np.ndarray:
        """The whole file as a read-only uint8 array (mapped once per process, see `map_shard`)."""
        self._check_pid()
        if self._map is None:
            self._map = map_shard(self.path)
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

    # -- reads through HDF5 (which checks every chunk it reads) --------------------------
    def _item_of_row(self, name: str, row: int) -> int:
        if name in self.offsets:
            return int(np.searchsorted(self.offsets[name], row, side="right")) - 1
        return row

    def _damaged(self, name: str, rows, exc: OSError) -> StoreError:
        """The error for a failed HDF5 read: the first of `rows` that cannot be read names the id."""
        ds = _field_dataset(self.h5(), name, self.path)
        bad = None
        for r in rows:
            try:
                ds[int(r) : int(r) + 1]
            except OSError:
                bad = int(r)
                break
        where = f"id {self.ids[self._item_of_row(name, bad)]!r}, " if bad is not None and self.ids else ""
        return StoreError(
            f"{self.path}: {where}field {name!r}: unreadable, the shard is damaged "
            f"({exc}); `lighthead store verify` checks the whole store"
        )

    def _h5_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Stored rows `rows` of a field, read through HDF5 one at a time (a fancy-index
        selection over filtered chunks is orders of magnitude slower in HDF5)."""
        ds = _field_dataset(self.h5(), name, self.path)
        out = np.empty((len(rows), *ds.shape[1:]), dtype=ds.dtype)
        for j, r in enumerate(rows.tolist()):
            try:
                out[j] = ds[r : r + 1][0]
            except OSError as exc:
                raise self._damaged(name, [r], exc) from None
        return out

    def _h5_slice(self, name: str, a: int, b: int) -> np.ndarray:
        try:
            return _field_dataset(self.h5(), name, self.path)[a:b]
        except OSError as exc:
            raise self._damaged(name, range(a, b), exc) from None

    def _check(
        self, name: str, idx: _Chunks, chunks: np.ndarray, items: list[int], copies: list[np.ndarray] | None = None
    ) -> list[int]:
        """Check `chunks` (not yet checked) of field `name`, read for items `items` (one per
        chunk, named in errors); marks those that pass.

        With XXH3 sums (/sums) a chunk that fails is a StoreError naming its item. Otherwise
        each chunk is checked against the Fletcher-32 sum stored after it in the mapped file,
        and those that fail are returned, for HDF5 to judge (all of them when the layout
        keeps no checksum right after its chunk). `copies[i]`, when given, holds the bytes of
        chunks[i] as just copied out (checked there: what is handed back is what was
        checked, and it is already in the CPU cache)."""
        mm, bad = self.mapped(), []
        if idx.sums is not None:
            for i, (k, o) in enumerate(zip(chunks.tolist(), idx.offsets[chunks].tolist())):
                nb = (min(idx.total, (k + 1) * idx.rows) - k * idx.rows) * idx.row_bytes
                if checksums.digest(mm[o : o + nb] if copies is None else copies[i]) != idx.sums[k]:
                    raise self._mismatch(name, items[i])
                idx.checked[k] = True
            return bad
        if not idx.fletcher:
            return chunks.tolist()
        nb = idx.rows * idx.row_bytes
        for i, (k, o) in enumerate(zip(chunks.tolist(), idx.offsets[chunks].tolist())):
            data = mm[o : o + nb] if copies is None else copies[i]
            if fletcher32(data) == stored(mm[o + nb : o + nb + 4]):
                idx.checked[k] = True
            else:
                bad.append(k)
        return bad

    def check_sums(self) -> int:
        """Check every chunk of every field against its XXH3 sum (`store verify`); returns the
        chunks checked (0 for a shard written before the sums). A chunk that fails is a
        StoreError naming its first id and the field."""
        n = 0
        for name, idx in self.raw.items():
            if not isinstance(idx, _Chunks) or idx.sums is None:
                continue
            for k in range(len(idx.offsets)):
                first = self._item_of_row(name, k * idx.rows)
                last = self._item_of_row(name, min(idx.total, (k + 1) * idx.rows) - 1)
                try:
                    self._check(name, idx, np.array([k]), [first])
                except StoreError:
                    ids = repr(self.ids[first]) if first == last else f"{self.ids[first]!r} to {self.ids[last]!r}"
                    raise StoreError(  # every item of the chunk
                        f"{self.path}: {'id' if first == last else 'ids'} {ids}, field {name!r}: "
                        "checksum mismatch, the shard is damaged"
                    ) from None
                n += 1
        return n

    def _mismatch(self, name: str, item: int) -> StoreError:
        """The error for a chunk of field `name` that fails its XXH3 sum, read for `item`."""
        where = f"id {self.ids[item]!r}, " if self.ids else ""
        return StoreError(
            f"{self.path}: {where}field {name!r}: checksum mismatch, the shard is damaged; "
            "`lighthead store verify` checks the whole store"
        )

    # -- reads ---------------------------------------------------------------------------
    def read_fixed(self, name: str, rows: np.ndarray, out: np.ndarray, dest: np.ndarray) -> None:
        """out[dest[j]] = item rows[j] of field `name`; rows sorted ascending."""
        if name in self.ram:
            out[dest] = self.ram[name][rows]
            return
        idx = self.raw.get(name)
        if idx is None:
            out[dest] = self._h5_rows(name, rows)
            return
        chunk = rows // idx.rows
        flat = out.reshape(out.shape[0], -1).view(np.uint8)  # (B, item_bytes)
        mm, nb = self.mapped(), idx.row_bytes
        starts = idx.offsets[chunk] + (rows - chunk * idx.rows) * nb
        if idx.rows == 1 and idx.sums is not None and not idx.checked[chunk].all():
            # an item per chunk, first reads by this reader: check each copy while it is in the CPU cache
            checked, sums = idx.checked, idx.sums
            for j, o, r in zip(dest.tolist(), starts.tolist(), rows.tolist()):
                flat[j] = mm[o : o + nb]
                if not checked[r]:
                    if checksums.digest(flat[j]) != sums[r]:
                        raise self._mismatch(name, r)
                    checked[r] = True
            return
        for j, o in zip(dest.tolist(), starts.tolist()):
            flat[j] = mm[o : o + nb]
        if idx.checked is not None and not idx.checked[chunk].all():  # first reads by this reader
            new = ~idx.checked[chunk]
            chunks, first = np.unique(chunk[new], return_index=True)
            # a chunk of one item is checked in its copy, else in the file
            copies = [flat[j] for j in dest[new][first].tolist()] if idx.rows == 1 else None
            for k in self._check(name, idx, chunks, rows[new][first].tolist(), copies):
                mine = chunk == k  # HDF5 judges: raises naming the first damaged id, or reads it
                out[dest[mine]] = self._h5_rows(name, rows[mine])
                idx.checked[k] = True

    def read_variable(self, name: str, row: int) -> np.ndarray:
        fld = self.fields[name]
        a, b = int(self.offsets[name][row]), int(self.offsets[name][row + 1])
        if name in self.ram:
            return self.ram[name][a:b].copy()
        if b == a:
            return np.empty((0, *fld.row_shape), dtype=fld.np_dtype)
        idx = self.raw.get(name)
        if idx is None:
            return self._h5_slice(name, a, b)
        rb = idx.row_bytes
        if isinstance(idx, _Contiguous):
            o = idx.base + a * rb
            raw = self.mapped()[o : o + (b - a) * rb]
            return raw.view(fld.np_dtype).reshape(b - a, *fld.row_shape).copy()
        ka, kb = a // idx.rows, (b - 1) // idx.rows + 1
        if idx.checked is not None and not idx.checked[ka:kb].all():
            new = np.arange(ka, kb)[~idx.checked[ka:kb]]
            if self._check(name, idx, new, [row] * len(new)):
                out = self._h5_slice(name, a, b)  # HDF5 judges: raises naming the id
                idx.checked[ka:kb] = True
                return out
        out = np.empty((b - a, *fld.row_shape), dtype=fld.np_dtype)
        buf, mm = out.reshape(-1).view(np.uint8), self.mapped()
        r = a
        for k in range(ka, kb):  # the item's rows, chunk by chunk
            r1 = min(b, (k + 1) * idx.rows)
            o = int(idx.offsets[k]) + (r - k * idx.rows) * rb
            buf[(r - a) * rb : (r1 - a) * rb] = mm[o : o + (r1 - r) * rb]
            r = r1
        return out

    def read_all(self, name: str) -> np.ndarray:
        """The whole dataset of a field (fixed [N, ...] or flat [total, ...]), for preload."""
        ds = _field_dataset(self.h5(), name, self.path)
        try:
            return np.asarray(whole(ds, self.path)[...])
        except OSError as exc:
            step = ds.chunks[0] if ds.chunks else 1
            raise self._damaged(name, range(0, ds.shape[0], step), exc) from None


def _raw_index(ds: h5py.Dataset, check: bool, file_size: int) -> _Chunks | _Contiguous | None:
    """Byte offsets that let a row be read with one copy, or None to use h5py instead."""
    if ds.size * ds.dtype.itemsize > file_size:  # checked first: the chunk table is sized by the claimed shape
        _truncated(ds)
    plist = ds.id.get_create_plist()
    nfilters = plist.get_nfilters()
    checksummed = nfilters == 1 and plist.get_filter(0)[0] == h5py.h5z.FILTER_FLETCHER32
    if ds.dtype.byteorder == ">" or (nfilters and not checksummed):
        return None
    row_bytes = int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
    if ds.shape[0] == 0:
        return _Contiguous(-1, row_bytes)
    if ds.chunks is None:
        base = ds.id.get_offset()
        if base is None or base + ds.shape[0] * row_bytes > file_size:
            return None if base is None else _truncated(ds)
        return _Contiguous(int(base), row_bytes)
    if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None  # chunks split rows: not ours, let HDF5 assemble them
    rpc = ds.chunks[0]
    nchunks = -(-ds.shape[0] // rpc)
    offsets = np.full(nchunks, -1, dtype=np.int64)
    unfiltered = np.zeros(nchunks, dtype=bool)  # chunks stored without their checksum
    sizes = np.zeros(nchunks, dtype=np.int64)  # bytes stored per chunk
    ends = [0]

    def visit(info) -> None:
        if info.byte_offset is None:
            return  # unallocated chunk
        k = info.chunk_offset[0] // rpc
        offsets[k] = info.byte_offset
        unfiltered[k] = bool(info.filter_mask & 1)
        sizes[k] = info.size
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
    # a filtered chunk holds all its rows (edge chunks too), then Fletcher-32's 4 bytes
    fletcher = bool(np.all(sizes[~unfiltered] == rpc * row_bytes + 4))
    checked = unfiltered.copy() if checksummed and check else None
    return _Chunks(offsets, rpc, row_bytes, checked, int(ds.shape[0]), fletcher)


def _chunk_sums(f: h5py.File, name: str, n_chunks: int, path: Path) -> list[int] | None:
    """The XXH3 sums of field `name`'s chunks (read through HDF5, so checked), or None for a
    shard written before them (or with an algorithm this version does not know)."""
    group = f.get(checksums.GROUP)
    if group is None or group.attrs.get("algorithm") != checksums.ALGORITHM:
        return None
    if name not in group:
        raise StoreError(f"{path}: field {name!r} has no checksums in /{checksums.GROUP} (damaged shard)")
    ds = group[name]
    if not isinstance(ds, h5py.Dataset) or ds.dtype != np.uint64 or ds.shape != (n_chunks,):
        # checked before reading: a hostile shard's dataset may claim any size
        what = f"{ds.shape} {ds.dtype}" if isinstance(ds, h5py.Dataset) else "a group of"
        raise StoreError(
            f"{path}: field {name!r}: /{checksums.GROUP} holds {what} checksums for {n_chunks} chunks (damaged shard)"
        )
    return whole(ds, path)[...].tolist()  # Python ints: compared exactly with XXH3 digests


def _truncated(ds: h5py.Dataset):
    raise StoreError(f"{ds.file.filename}: field {ds.name} extends past the end of the file (truncated shard)")
