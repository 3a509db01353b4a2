"""`lighthead store upgrade`: rewrite shards written before the XXH3 chunk sums, so that they
get them (store/checksums.py: a first read then checks each chunk at memory speed instead of
with Fletcher-32, about three times the copy).

A shard is never changed in place. Each old shard is read whole through HDF5 (which checks
its Fletcher-32 sums, where it has them), written anew as `shard-upgrade-<num>.h5` with the
sums, and swapped into the manifest under the manifest lock, at the same position; the old
file is removed after. A kill at any point leaves a readable feature set: before the swap the
manifest still lists the old shard (the new file is an orphan the next writer removes), after
it the new one (the old file is then the orphan). Ids, values, fields and attrs stay as they
were; only the shard files, their sizes and sha256 in the manifest change. Readers that opened
the set before its shards were swapped may fail to find the old files: upgrade a set while no
job reads it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from lighthead.store import checksums
from lighthead.store.errors import StoreError
from lighthead.store.manifest import (
    LOCK_FILE,
    ShardEntry,
    file_lock,
    fsync_dir,
    read_manifest,
    sha256_file,
    try_lock,
    write_manifest,
)
from lighthead.store.schema import MANIFEST, SHARD_RE, check_shard_file, shard_name
from lighthead.store.shard import ShardReader, open_h5, write_shard
from lighthead.store.verify import feature_set_dirs, root_problem
from lighthead.store.writer import tag_lock_path

TAG = "upgrade"  # writer tag of the rewritten shards (its lock keeps other writers' clean-up off them)


def has_sums(path: Path) -> bool:
    """Whether the shard at `path` holds XXH3 chunk sums this version reads."""
    with open_h5(path) as f:
        group = f.get(checksums.GROUP)
        return isinstance(group, h5py.Group) and group.attrs.get("algorithm") == checksums.ALGORITHM


def without_sums(path: str | os.PathLike) -> dict[str, int]:
    """Feature set -> how many of its shards have no XXH3 chunk sums (those `upgrade` rewrites);
    sets whose shards all have them are left out."""
    out = {}
    for name, directory in feature_set_dirs(Path(path)):
        files = [directory / check_shard_file(e.file, directory / MANIFEST) for e in read_manifest(directory).shards]
        old = sum(not has_sums(f) for f in files)
        if old:
            out[name] = old
    return out


def _columns(reader: ShardReader) -> dict[str, list[np.ndarray]]:
    """Every field's items of one shard, read through HDF5 (its Fletcher-32 sums checked)."""
    columns: dict[str, list[np.ndarray]] = {}
    for name, fld in reader.fields.items():
        data = reader.read_all(name)  # (N, *shape) or the flat (total, *rest)
        if fld.variable:
            off = reader.offsets[name]
            columns[name] = [data[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
        else:
            columns[name] = list(data)
    return columns


def upgrade_feature_set(
    directory: Path, fsync: bool = True, progress: Callable[[int], None] | None = None
) -> tuple[int, int]:
    """Give every shard of the feature set in `directory` XXH3 chunk sums; returns (shards
    rewritten, shards that had them). `progress(n)` is called with the items of each shard
    rewritten."""
    directory = Path(directory)
    lock_fd = try_lock(tag_lock_path(directory, TAG))
    if lock_fd is None:
        raise StoreError(f"{directory}: another upgrade of this feature set is running")
    try:
        with file_lock(directory / LOCK_FILE):  # what a killed upgrade left: its tag is ours now
            manifest = read_manifest(directory)
            listed = {e.file for e in manifest.shards}
            for name in os.listdir(directory):
                m = SHARD_RE.match(name)
                if m and m["tag"] == TAG and (m["tmp"] or name not in listed):
                    os.unlink(directory / name)
        rewritten = kept = 0
        used = [int(m["num"]) for p in os.listdir(directory) if (m := SHARD_RE.match(p)) and m["tag"] == TAG]
        num = max(used, default=-1) + 1
        for entry in manifest.shards:
            old = directory / check_shard_file(entry.file, directory / MANIFEST)
            if has_sums(old):
                kept += 1
                continue
            reader = ShardReader(old, manifest.fields, entry.rows, check=True)
            ids = reader.load_index()
            try:
                columns = _columns(reader)
            finally:
                reader.close()
            final = directory / shard_name(TAG, num)
            num += 1
            tmp = final.with_name(final.name + ".tmp")
            write_shard(tmp, ids, manifest.fields, columns, fsync)
            digest = sha256_file(tmp)
            with file_lock(directory / LOCK_FILE):
                current = read_manifest(directory)
                at = next((k for k, e in enumerate(current.shards) if e.file == entry.file), None)
                if at is None:  # removed meanwhile: nothing to swap
                    os.unlink(tmp)
                    continue
                os.rename(tmp, final)
                if fsync:
                    fsync_dir(directory)
                current.shards[at] = ShardEntry(final.name, len(ids), ids[0], ids[-1], digest, final.stat().st_size)
                write_manifest(directory, current, fsync)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)
            rewritten += 1
            if progress is not None:
                progress(len(ids))
        return rewritten, kept
    finally:
        try:  # under the manifest lock, as writers remove theirs: nobody is locking it meanwhile
            with contextlib.suppress(OSError), file_lock(directory / LOCK_FILE):
                os.unlink(tag_lock_path(directory, TAG))
        finally:
            os.close(lock_fd)


def upgrade(
    path: str | os.PathLike, name: str | None = None, fsync: bool = True, progress: Callable[[int], None] | None = None
) -> dict[str, tuple[int, int]]:
    """Give every shard of every feature set of the store at `path` (or of the set `name`) XXH3
    chunk sums; returns set name -> (shards rewritten, shards that had them)."""
    root = Path(path)
    problem = root_problem(root)
    if problem:
        raise StoreError(problem)
    sets = dict(feature_set_dirs(root))
    if name is not None:
        if name not in sets:
            raise StoreError(f"{root}: no feature set {name!r}; sets: {', '.join(sets) or 'none'}")
        sets = {name: sets[name]}
    return {n: upgrade_feature_set(d, fsync, progress) for n, d in sets.items()}
