"""A full disk while writing a shard or an export is one line naming the file, exit 1, committed
data intact and no `.tmp` left.

HDF5 cannot recover from a failed write (closing the file then crashes the process: exit 139),
and a memmap write into a sparse file dies with SIGBUS; so the space is reserved before either
writes (`reserve_space`: posix_fallocate, else a free-space check). The tests make the
reservation meet a full disk by replacing `os.posix_fallocate` / `shutil.disk_usage`; no
file system is mounted.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.store import Field, open_store
from lighthead.store.shard import shard_bytes_bound, shard_layout, write_shard
from tests.store.helpers import FIELDS, assert_item, file_digests, item_id, make_item

HINT = "no space left on device; free space and rerun the same command (committed work is kept)"


def disk_full_after(monkeypatch, allowed: int) -> list[int]:
    """`os.posix_fallocate` succeeds `allowed` times, then the disk is full; returns the sizes asked."""
    real, asked = os.posix_fallocate, []

    def fallocate(fd, offset, length):
        asked.append(length)
        if len(asked) > allowed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    return asked


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp*"))


def test_a_full_disk_on_the_second_shard_keeps_the_first(store, monkeypatch):
    disk_full_after(monkeypatch, allowed=1)
    with (
        pytest.raises(OSError) as e,
        store.writer("test/all", FIELDS, {"extractor": "test"}, shard_items=16, fsync=False) as w,
    ):
        for i in range(40):
            w.add(item_id(i), make_item(i))
    assert e.value.errno == errno.ENOSPC and e.value.filename.endswith("-00001.h5.tmp")
    monkeypatch.undo()
    fs = open_store(store.path)["test/all"]
    assert len(fs) == 16
    for i in (0, 15):
        assert_item(fs[item_id(i)], i)
    assert leftovers(store.path) == []
    # with space again the same run resumes after the committed shard
    with store.writer("test/all", FIELDS, {"extractor": "test"}, shard_items=16, fsync=False) as w:
        w.add_batch([item_id(i) for i in range(40)], [make_item(i) for i in range(40)])
    assert len(open_store(store.path)["test/all"]) == 40


def test_import_into_a_full_disk_is_one_line_naming_the_shard(tmp_path, capsys, monkeypatch):
    from tests.store.test_importers import make_npz

    make_npz(tmp_path / "npz", n=6, transpose_last=False)
    assert run_app(app, ["store", "import", "npz", str(tmp_path / "npz"), str(tmp_path / "st")]) == 0
    before = file_digests(tmp_path / "st")
    make_npz(tmp_path / "npz2", n=6, transpose_last=False)
    for i, p in enumerate(sorted((tmp_path / "npz2").glob("*.npz"))):
        p.rename(p.with_name(f"9{i}.npz"))  # new ids, same feature set
    disk_full_after(monkeypatch, allowed=0)
    assert run_app(app, ["store", "import", "npz", str(tmp_path / "npz2"), str(tmp_path / "st")]) == 1
    line = error_line(capsys)
    folder = tmp_path / "st" / "regions" / "butd-npz"
    assert line.startswith(f"error: {folder}/shard-") and line.endswith(f".h5.tmp: {HINT}"), line
    assert file_digests(tmp_path / "st") == before and leftovers(tmp_path / "st") == []


def test_without_fallocate_the_free_space_is_compared(tmp_path, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    fields = {"x": Field("x", (64,), "float32")}
    columns = {"x": [np.ones(64, np.float32)] * 10}
    ids = [f"i{i}" for i in range(10)]
    write_shard(tmp_path / "ok.h5", ids, fields, columns, fsync=False)  # enough space: written as usual
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=1 << 30, used=1 << 30, free=1000))
    with pytest.raises(OSError) as e:
        write_shard(tmp_path / "full.h5.tmp", ids, fields, columns, fsync=False)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "full.h5.tmp")
    assert not (tmp_path / "full.h5.tmp").exists()


@pytest.mark.parametrize("n", [1, 16, 3000])
def test_the_reserved_space_covers_the_shard_written(tmp_path, n, monkeypatch):
    """The reservation is a bound: HDF5 must never have to grow the file past it."""
    asked = disk_full_after(monkeypatch, allowed=10)
    fields = {f.name: f for f in FIELDS} | {"ids40": Field("ids40", (), "uint8")}
    items = [make_item(i) | {"ids40": np.uint8(i % 256)} for i in range(n)]
    ids = [f"{'x' * 40}-{i}" for i in range(n)]
    columns = {k: [it[k] for it in items] for k in fields}
    path = tmp_path / "s.h5"
    write_shard(path, ids, fields, columns, fsync=False)
    assert asked == [shard_bytes_bound(shard_layout(ids, fields, columns))]
    assert path.stat().st_size <= asked[0]  # and HDF5 trimmed the file to what it wrote
    assert path.stat().st_size < asked[0] - 8192


def test_export_precomp_into_a_full_disk_is_one_line_and_leaves_no_tmp(tmp_path, capsys, monkeypatch):
    st = open_store(tmp_path / "st", create=True)
    with st.writer("regions/precomp", [Field("features", (4, 6), "float16")], {"x": 1}, fsync=False) as w:
        for i in range(10):
            w.add(f"test/{i}", {"features": np.full((4, 6), i, np.float16)})
    out = tmp_path / "out"
    disk_full_after(monkeypatch, allowed=0)
    assert run_app(app, ["store", "export", "precomp", str(tmp_path / "st"), str(out)]) == 1
    assert error_line(capsys) == f"error: {out / 'test_ims.npy'}: {HINT}"
    assert not out.exists()  # the folder the export made is gone with its .tmp
    monkeypatch.undo()
    assert run_app(app, ["store", "export", "precomp", str(tmp_path / "st"), str(out)]) == 0
    got = np.load(out / "test_ims.npy")
    assert got.dtype == np.float32 and got.shape == (10, 4, 6) and got[7, 3, 5] == 7
