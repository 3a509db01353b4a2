"""Appending items to a feature set: resumable, crash-safe, several processes at once.

Protocol (why each step exists):
1. Items are buffered in RAM until a shard is full (`shard_bytes` / `shard_items`), then the
   shard is written as `shard-<tag>-<num>.h5.tmp`, fsynced and checksummed. A kill here
   leaves only a `.tmp`, which the next writer discards once the tag's owner is dead.
2. Under the feature set's flock the manifest is re-read (other writers may have committed),
   ids that meanwhile appeared in it are dropped from the shard (rewriting it, rarely), the
   `.tmp` is renamed, and the manifest is replaced atomically. A kill between the rename and
   the manifest leaves an unlisted shard: never visible to readers, deleted on the next open.
3. Each writer holds a flock on `.writer-<tag>.lock` for its lifetime, which is how others
   tell a live writer's `.tmp` from a dead one's. A writer deletes its lock file when it
   closes, and the next writer deletes those of dead ones; both under the manifest lock,
   under which tags are also taken, so no writer ever holds a lock on a deleted file.
4. Every value is checked before it is buffered (`Field.coerce`): NaN/inf, float16 overflow
   and integers that would wrap are errors naming the id and field, never stored changed.
`written` counts the items a writer committed; `add` returning True only means "buffered":
another writer may commit the same id first, and then this one drops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lighthead.store.errors import StoreError
from lighthead.store.manifest import (
    LOCK_FILE,
    Manifest,
    ShardEntry,
    file_lock,
    fsync_dir,
    library_versions,
    read_manifest,
    sha256_file,
    try_lock,
    write_manifest,
)
from lighthead.store.schema import (
    MANIFEST,
    SHARD_RE,
    Field,
    check_fields,
    check_id,
    check_shard_file,
    check_tag,
    shard_name,
)
from lighthead.store.shard import open_h5, whole, write_shard

KILL_ENV = "LIGHTHEAD_STORE_KILL_AT"  # fault injection for the crash tests: SIGKILL at a named step
TAG_LOCK_RE = re.compile(r"^\.writer-(?P<tag>[A-Za-z0-9_.-]{1,64})\.lock$")


def tag_lock_path(directory: Path, tag: str) -> Path:
    """The lock file a live writer of `tag` holds (its `.tmp` shards are kept while it is held)."""
    return directory / f".writer-{tag}.lock"


def _crash_point(step: str) -> None:
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class WriterConfig:
    """How a writer cuts shards."""

    tag: str | None = None  # shard-name tag; None: the host name, or host-pid while that is taken
    shard_bytes: int = 256 << 20  # roll over at this many payload bytes; bounds RAM and lost work on a kill
    shard_items: int = 10_000  # roll over at this many items; keeps small-item shards resumable
    fsync: bool = True  # fsync shards and manifest so a power cut cannot lose committed shards

    def __post_init__(self) -> None:
        if self.shard_bytes < 1 or self.shard_items < 1:
            raise ValueError("shard_bytes and shard_items must be >= 1")
        if self.tag is not None:
            check_tag(self.tag)


def _read_ids(path: Path) -> list[str]:
    with open_h5(path) as f:
        try:
            return list(whole(f["ids"], path).asstr()[...])
        except KeyError:
            raise StoreError(f"{path}: shard has no ids dataset") from None


class Writer:
    """Context manager appending items by id to one feature set. See the module docstring.

    `add`/`add_batch` skip ids already stored (in the manifest, or pending in this writer);
    `done_ids`/`is_done` let callers skip the work of computing them at all.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        fields: Sequence[Field] | None,
        attrs: Mapping[str, Any] | None = None,
        config: WriterConfig | None = None,
    ):
        self.dir = Path(directory)
        self.name = name
        self.config = config or WriterConfig()
        self._tag_fd: int | None = None
        self._done: set[str] = set()
        self._known: set[str] = set()  # shard files whose ids are in _done
        self._pending: list[str] = []
        self._pending_set: set[str] = set()
        self._columns: dict[str, list[np.ndarray]] = {}
        self._pending_bytes = 0
        self.written = 0  # items this writer committed (what it reports as new)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            with file_lock(self.dir / LOCK_FILE):
                self._open_locked(fields, attrs)
        except BaseException:
            self._release_tag()
            raise
        self._columns = {n: [] for n in self.fields}

    # -- opening -------------------------------------------------------------------------
    def _open_locked(self, fields: Sequence[Field] | None, attrs: Mapping[str, Any] | None) -> None:
        want_attrs = None if attrs is None else json.loads(json.dumps(dict(attrs)))
        if (self.dir / MANIFEST).exists():
            manifest = read_manifest(self.dir)
            if fields is not None and check_fields(fields) != manifest.fields:
                raise StoreError(
                    f"{self.dir / MANIFEST}: fields differ from the stored ones "
                    f"{[f.to_json() for f in manifest.fields.values()]}"
                )
            if want_attrs is not None and want_attrs != manifest.attrs:
                raise StoreError(
                    f"{self.dir / MANIFEST}: attrs differ from the stored ones; write to a new feature set name"
                )
            for entry in manifest.shards:  # refuse to resume on top of a damaged feature set
                path = self.dir / check_shard_file(entry.file, self.dir / MANIFEST)
                if not path.exists():
                    raise StoreError(f"{path}: listed in the manifest but missing")
                if path.stat().st_size != entry.bytes:
                    raise StoreError(f"{path}: {path.stat().st_size} bytes, manifest says {entry.bytes} (truncated)")
        else:
            if fields is None:
                raise StoreError(f"{self.dir}: new feature set needs fields")
            manifest = Manifest(self.name, check_fields(fields), want_attrs or {}, library_versions())
            write_manifest(self.dir, manifest, self.config.fsync)
        self.fields: dict[str, Field] = manifest.fields
        self._acquire_tag()
        self._cleanup(manifest)
        self._merge(manifest)
        nums = [int(m["num"]) for p in os.listdir(self.dir) if (m := SHARD_RE.match(p)) and m["tag"] == self.tag]
        self._next_num = max(nums, default=-1) + 1

    def _acquire_tag(self) -> None:
        def lock(tag: str) -> int | None:
            return try_lock(tag_lock_path(self.dir, tag))

        if self.config.tag is not None:
            self.tag = self.config.tag
            self._tag_fd = lock(self.tag)
            if self._tag_fd is None:
                raise StoreError(f"{self.dir}: writer tag {self.tag!r} is held by another live writer")
            return
        host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0])[:40] or "w"
        for i in range(1000):
            tag = host if i == 0 else f"{host}-p{os.getpid()}" + (f"-{i}" if i > 1 else "")
            fd = lock(tag)
            if fd is not None:
                self.tag, self._tag_fd = tag, fd
                return
        raise StoreError(f"{self.dir}: no free writer tag")

    def _cleanup(self, manifest: Manifest) -> None:
        """Delete leftovers of dead writers: their `.tmp` shards, unlisted finished shards and
        their `.writer-<tag>.lock` files.

        Runs under the manifest lock, so no live writer is between rename and manifest update:
        an unlisted finished shard is always an orphan. A `.tmp` is only removed when its tag's
        lock can be taken, i.e. its writer is gone; its lock file is deleted while held.
        """
        listed = {s.file for s in manifest.shards}
        dead: dict[str, bool] = {self.tag: True}  # our own tag's leftovers are a predecessor's
        held: list[int] = []  # locks of dead tags, kept until their lock files are gone

        def is_dead(tag: str) -> bool:
            if tag not in dead:
                fd = try_lock(tag_lock_path(self.dir, tag))
                dead[tag] = fd is not None
                if fd is not None:
                    held.append(fd)
            return dead[tag]

        try:
            for fname in sorted(os.listdir(self.dir)):
                if fname.startswith(MANIFEST + ".tmp"):
                    os.unlink(self.dir / fname)
                    continue
                m = SHARD_RE.match(fname)
                if m and (m["tmp"] or fname not in listed) and (is_dead(m["tag"]) or not m["tmp"]):
                    os.unlink(self.dir / fname)
                t = TAG_LOCK_RE.match(fname)
                if t and t["tag"] != self.tag:
                    is_dead(t["tag"])
            for tag, gone in dead.items():
                if gone and tag != self.tag:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tag_lock_path(self.dir, tag))
        finally:
            for fd in held:
                os.close(fd)

    def _merge(self, manifest: Manifest) -> None:
        """Add the ids of shards committed since we last looked to the done set."""
        for entry in manifest.shards:
            if entry.file not in self._known:
                self._done.update(_read_ids(self.dir / check_shard_file(entry.file, self.dir / MANIFEST)))
                self._known.add(entry.file)

    # -- public API ------------------------------------------------------------------------
    @property
    def done_ids(self) -> frozenset[str]:
        """Ids this writer will skip: committed to the manifest (as last seen) or pending here."""
        return frozenset(self._done | self._pending_set)

    def is_done(self, item_id: str) -> bool:
        return item_id in self._done or item_id in self._pending_set

    def refresh(self) -> None:
        """Re-read the manifest to learn ids committed by other writers since."""
        self._merge(read_manifest(self.dir))

    def add(self, item_id: str, item: Mapping[str, Any]) -> bool:
        """Buffer one item; returns False (and stores nothing) when the id is already done."""
        check_id(item_id)
        if self.is_done(item_id):
            return False
        if set(item) != set(self.fields):
            raise StoreError(f"{self.dir}: id {item_id!r} has fields {sorted(item)}, expected {sorted(self.fields)}")
        values = {n: f.coerce(item[n], item_id) for n, f in self.fields.items()}
        for n, v in values.items():
            self._columns[n].append(v)
            self._pending_bytes += v.nbytes
        self._pending.append(item_id)
        self._pending_set.add(item_id)
        if len(self._pending) >= self.config.shard_items or self._pending_bytes >= self.config.shard_bytes:
            self.flush()
        return True

    def add_batch(self, ids: Sequence[str], items: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> int:
        """Add several items; `items` is a list of item dicts, or a dict of per-field batches
        (arrays with a leading batch axis, or lists for variable-length fields).
        Returns how many were new."""
        if isinstance(items, Mapping):
            rows = [{k: v[i] for k, v in items.items()} for i in range(len(ids))]
        else:
            rows = list(items)
        if len(rows) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(rows)} items")
        return sum(self.add(i, r) for i, r in zip(ids, rows))

    def flush(self) -> None:
        """Commit the pending items as one shard now (also done on rollover and close)."""
        if not self._pending:
            return
        ids, columns = self._pending, self._columns
        num, self._next_num = self._next_num, self._next_num + 1
        final = self.dir / shard_name(self.tag, num)
        tmp = final.with_name(final.name + ".tmp")
        write_shard(tmp, ids, self.fields, columns, self.config.fsync)
        digest = sha256_file(tmp)
        _crash_point("shard_written")
        with file_lock(self.dir / LOCK_FILE):
            manifest = read_manifest(self.dir)
            self._merge(manifest)
            keep = [k for k, i in enumerate(ids) if i not in self._done]
            if len(keep) < len(ids):  # another writer stored some of these meanwhile
                os.unlink(tmp)
                if not keep:
                    self._clear()
                    return
                ids = [ids[k] for k in keep]
                columns = {n: [c[k] for k in keep] for n, c in columns.items()}
                write_shard(tmp, ids, self.fields, columns, self.config.fsync)
                digest = sha256_file(tmp)
            os.rename(tmp, final)
            if self.config.fsync:
                fsync_dir(self.dir)
            _crash_point("shard_renamed")
            manifest.shards.append(ShardEntry(final.name, len(ids), ids[0], ids[-1], digest, final.stat().st_size))
            write_manifest(self.dir, manifest, self.config.fsync)
            _crash_point("manifest_written")
            self._known.add(final.name)
            self._done.update(ids)
        self.written += len(ids)
        self._clear()

    def _clear(self) -> None:
        self._pending, self._pending_set, self._pending_bytes = [], set(), 0
        self._columns = {n: [] for n in self.fields}

    def _release_tag(self, remove: bool = False) -> None:
        """Release the tag's lock; `remove` also deletes its lock file (under the manifest
        lock, which every writer takes a tag under, so nobody can be locking it meanwhile)."""
        if self._tag_fd is None:
            return
        try:
            if remove:
                with contextlib.suppress(OSError), file_lock(self.dir / LOCK_FILE):
                    os.unlink(tag_lock_path(self.dir, self.tag))
        finally:
            os.close(self._tag_fd)
            self._tag_fd = None

    def close(self) -> None:
        """Commit what is pending and release the writer tag. Idempotent."""
        try:
            self.flush()
        finally:
            self._release_tag(remove=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
            return False
        try:  # buffered items are complete and valid: keep them so a rerun resumes after them
            self.flush()
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        finally:
            self._release_tag(remove=True)
        return False

    def __del__(self) -> None:
        self._release_tag()


def remove_if_empty(directory: Path) -> bool:
    """Delete a feature set that holds no items and has no live writer; True if deleted.

    For callers that created a feature set and then failed before committing anything (an
    import whose first item is bad), so that no empty feature set is left behind. Checked
    under the manifest lock: a writer that opened it meanwhile keeps it."""
    directory = Path(directory)
    try:
        with file_lock(directory / LOCK_FILE):
            if read_manifest(directory).shards:
                return False
            names = os.listdir(directory)
            held = []
            try:
                for name in names:
                    if TAG_LOCK_RE.match(name):
                        fd = try_lock(directory / name)
                        if fd is None:
                            return False  # a live writer
                        held.append(fd)
                    elif not (
                        name in (MANIFEST, LOCK_FILE) or SHARD_RE.match(name) or name.startswith(MANIFEST + ".tmp")
                    ):
                        return False  # something that is not ours
                for name in names:
                    os.unlink(directory / name)
            finally:
                for fd in held:
                    os.close(fd)
        directory.rmdir()
    except (OSError, StoreError):
        return False
    return True
