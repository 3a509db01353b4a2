"""The manifest of a feature set, atomic file writes, disk reservation and the fcntl locks
writers share.

`manifest.json` is the single source of truth: a shard file exists for readers only once
the manifest lists it. The manifest is replaced atomically (tmp + fsync + rename), so a
reader or a crash sees either the old or the new list, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from lighthead.store.errors import StoreError
from lighthead.store.schema import FORMAT, MANIFEST, VERSION, Field, fields_from_json

LOCK_FILE = ".manifest.lock"


@dataclass
class ShardEntry:
    """One finished shard as listed in the manifest."""

    file: str  # file name inside the feature-set directory
    rows: int  # number of items in the shard
    first_id: str  # id of the first row, a cheap consistency check
    last_id: str  # id of the last row
    sha256: str  # checksum of the whole file, re-checked by verify
    bytes: int  # file size; a smaller file on disk means a truncated shard

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Manifest:
    """What `manifest.json` holds."""

    name: str  # feature-set name, e.g. "regions/butd-r101-vg-36"
    fields: dict[str, Field]  # field specs by name, in item order
    attrs: dict[str, Any] = field(default_factory=dict)  # caller's JSON: extractor, config, weights hash
    versions: dict[str, str] = field(default_factory=dict)  # library versions at creation
    shards: list[ShardEntry] = field(default_factory=list)  # finished shards in commit order

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "fields": [f.to_json() for f in self.fields.values()],
            "attrs": self.attrs,
            "versions": self.versions,
            "shards": [s.to_json() for s in self.shards],
        }

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: no manifest (not a feature set)") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable manifest: {exc}") from None
    try:
        if obj.get("format") != FORMAT or int(obj.get("version", 0)) > VERSION:
            raise StoreError(f"{path}: not a {FORMAT} v{VERSION} manifest")
        shards = [ShardEntry(**s) for s in obj["shards"]]
        return Manifest(
            obj["name"],
            fields_from_json(obj["fields"]),
            dict(obj.get("attrs") or {}),
            dict(obj.get("versions") or {}),
            shards,
        )
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: malformed manifest: {exc!r}") from None


def write_manifest(directory: Path, manifest: Manifest, fsync: bool = True) -> None:
    data = json.dumps(manifest.to_json(), indent=1).encode("utf-8")
    atomic_write(Path(directory) / MANIFEST, data, fsync=fsync)


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new content. A failed
    write (disk full) is an OSError naming `path`, and leaves no temporary file."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # write() and fsync() name no file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    # Makes a rename durable; some file systems refuse fsync on directories, which is fine.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in blocks (shards here; weights files in the extractors)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


_NO_FALLOCATE = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)  # file systems that cannot allocate ahead


def reserve_space(fd: int, nbytes: int, path: Path) -> None:
    """Allocate `nbytes` of disk to the open file `fd` (its size grows to at least that), so
    that a full disk is OSError(ENOSPC) naming `path` now, before anything is written, rather
    than part-way through: HDF5 cannot recover from a failed write (closing the file then
    crashes the process), and a memory-mapped write into a sparse file dies with SIGBUS.
    Where the file system cannot allocate ahead, its free space is compared instead."""
    fallocate = getattr(os, "posix_fallocate", None)  # absent on macOS: free space is compared instead
    if fallocate is not None:
        try:
            fallocate(fd, 0, max(1, int(nbytes)))
            return
        except OSError as exc:
            if exc.errno not in _NO_FALLOCATE:
                raise OSError(exc.errno, exc.strerror, str(path)) from None
    if shutil.disk_usage(Path(path).parent).free < nbytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


LOCKING_ENV = "LIGHTHEAD_STORE_LOCKING"  # "0": no flock at all (single writer per feature set)


def _locking() -> bool:
    return os.environ.get(LOCKING_ENV, "1") != "0"


def _flock(fd: int, flags: int, path: Path) -> None:
    try:
        fcntl.flock(fd, flags)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
            os.close(fd)
            raise StoreError(
                f"{path}: this file system does not support flock ({exc.strerror}); mount it "
                f"with lock support, or set {LOCKING_ENV}=0 and run one writer per feature "
                f"set at a time"
            ) from None
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive flock on `path` (created if absent), held for the `with` body."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if _locking():
            _flock(fd, fcntl.LOCK_EX, path)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing releases the lock


def try_lock(path: Path) -> int | None:
    """Non-blocking exclusive flock; returns the fd holding it, or None when someone else does.
    With locking switched off every lock is "free": writers must then not overlap.

    Lock files of finished writers are deleted, so a lock taken on a file that was unlinked
    (or replaced) meanwhile is worthless: then it tries again on the file now at `path`."""
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _locking():
            return fd
        try:
            _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise StoreError(f"{path}: lock file keeps changing")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the stored bytes; torch only if installed.

    Uses package metadata so that recording torch's version never imports torch.
    """
    out = {}
    for pkg in ("numpy", "h5py", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    try:
        import h5py

        out["hdf5"] = h5py.version.hdf5_version
    except ImportError:
        pass
    return out
