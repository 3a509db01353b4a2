"""Deterministic items for the store tests, and a writer process the crash tests can kill.

Run as a script: `python -m tests.store.helpers STORE NAME FIRST LAST [TAG [PAUSE]]` writes
items FIRST..LAST-1 (skipping done ones) with small shards, printing "ready" once the writer
is open and sleeping PAUSE seconds per item (so that a kill lands mid-run).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lighthead.store import Field, open_store

ROOT = Path(__file__).resolve().parents[2]  # repository root, for subprocesses' PYTHONPATH

# One field of every kind the store supports.
FIELDS = [
    Field("features", (6, 8)),  # fixed [K, D] float16 (the default dtype)
    Field("f32", (3,), "float32"),
    Field("label", (), "int64"),  # scalar
    Field("flag", (), "bool"),
    Field("thumb", (4, 4, 3), "uint8"),
    Field("boxes", (None, 4), "float32"),  # variable length, rows of 4
    Field("tokens", (None,), "int32"),  # variable length scalars, sometimes empty
]


def strip_sums(directory: Path) -> None:
    """Make every shard of the feature set in `directory` as writers before the XXH3 chunk sums
    left them (HDF5's Fletcher-32 only): drop `/sums`, record the new sizes and sha256."""
    import json

    import h5py

    from lighthead.store.manifest import sha256_file

    manifest = json.loads((directory / "manifest.json").read_text())
    for entry in manifest["shards"]:
        path = directory / entry["file"]
        with h5py.File(path, "r+") as f:
            del f["sums"]
        entry["bytes"], entry["sha256"] = path.stat().st_size, sha256_file(path)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def item_id(i: int) -> str:
    return f"img-{i:05d}-é"  # non-ASCII on purpose: ids are UTF-8 strings


def make_item(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    n = i % 5  # 0..4 boxes: covers empty variable items
    return {
        "features": rng.standard_normal((6, 8)).astype(np.float16),
        "f32": rng.standard_normal(3).astype(np.float32),
        "label": np.int64(i * 7 - 3),
        "flag": np.bool_(i % 2),
        "thumb": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
        "boxes": rng.standard_normal((n, 4)).astype(np.float32),
        "tokens": np.arange(i % 4, dtype=np.int32) + i,
    }


def assert_item(got: dict, i: int) -> None:
    want = make_item(i)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k, v in want.items():
        g = np.asarray(got[k])
        assert g.dtype == np.asarray(v).dtype, (k, g.dtype, v.dtype)
        assert g.shape == np.shape(v), (k, g.shape, np.shape(v))
        assert np.array_equal(g, v), (k, i)


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under a directory, to prove an error left data untouched."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file()
    }


def child(args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    """Start this module as a writer process."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.helpers", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def write_range(store: str, name: str, first: int, last: int, tag: str | None = None, pause: float = 0.0) -> None:
    s = open_store(store, create=True)
    with s.writer(name, FIELDS, {"extractor": "test", "config": {"k": 6}}, tag=tag, shard_items=16, fsync=False) as w:
        print("ready", flush=True)
        for i in range(first, last):
            if not w.is_done(item_id(i)):
                w.add(item_id(i), make_item(i))
                if pause:
                    time.sleep(pause)


if __name__ == "__main__":
    a = sys.argv[1:]
    tag = a[4] if len(a) > 4 and a[4] != "-" else None
    write_range(a[0], a[1], int(a[2]), int(a[3]), tag, float(a[5]) if len(a) > 5 else 0.0)
