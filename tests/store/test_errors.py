"""Damaged stores give a StoreError naming the file, and nothing is modified."""

import json
import os

import pytest

from lighthead.store import FeatureSet, StoreError, sha256_file, verify
from lighthead.store.manifest import read_manifest
from tests.store.helpers import FIELDS, file_digests


def shard_path(store, k=1):
    d = store.path / "test/all"
    return d / read_manifest(d).shards[k].file


def expect_error(store, match):
    """Opening, resuming and verify all report the damage; no file changes meanwhile."""
    before = file_digests(store.path)
    with pytest.raises(StoreError, match=match):
        FeatureSet(store.path / "test/all")
    with pytest.raises(StoreError, match=match):
        store.writer("test/all", FIELDS)
    problems = verify(store.path)
    assert problems and all("\n" not in p for p in problems)
    with pytest.raises(StoreError):
        verify(store.path, strict=True)
    assert file_digests(store.path) == before
    return problems


def test_truncated_shard(filled):
    path = shard_path(filled)
    os.truncate(path, path.stat().st_size // 2)
    problems = expect_error(filled, path.name)
    assert any(path.name in p and "truncated" in p for p in problems)


def test_truncated_shard_with_matching_manifest_is_refused_not_crashed(filled):
    """Even if the manifest agrees with the short size, the reader must not map past EOF."""
    d = filled.path / "test/all"
    path = shard_path(filled)
    size = path.stat().st_size - 5000
    os.truncate(path, size)
    m = json.loads((d / "manifest.json").read_text())
    m["shards"][1]["bytes"] = size
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match=path.name):
        FeatureSet(d)
    assert any(path.name in p for p in verify(filled.path, checksums=False))


def test_manifest_points_at_missing_file(filled):
    path = shard_path(filled, 2)
    path.unlink()
    problems = expect_error(filled, f"{path.name}: listed in the manifest but missing")
    assert problems == [f"{path}: listed in the manifest but missing"]


def test_checksum_mismatch(filled):
    path = shard_path(filled, 0)
    offset = int(FeatureSet(filled.path / "test/all")._readers[0].raw["features"].offsets[0])
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF  # a feature value changes, the file stays well-formed
    path.write_bytes(bytes(data))
    problems = verify(filled.path)
    assert problems == [f"{path}: sha256 mismatch (file changed since it was written)"]
    with pytest.raises(StoreError, match=path.name):
        verify(filled.path, strict=True)
    assert verify(filled.path, checksums=False) == []


def test_malformed_manifest(filled):
    m = filled.path / "test/all" / "manifest.json"
    m.write_text("{")
    expect_error(filled, "manifest.json")
    m.write_text(json.dumps({"format": "other"}))
    expect_error(filled, "manifest.json")


def test_duplicate_id_across_shards(filled):
    d = filled.path / "test/all"
    m = json.loads((d / "manifest.json").read_text())
    m["shards"].append(dict(m["shards"][0]))  # the same shard listed twice
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="stored twice"):
        FeatureSet(d)
    problems = verify(filled.path)
    assert any("listed twice" in p for p in problems) and any("also stored in" in p for p in problems)


def test_bad_json_artifact_is_a_problem(filled):
    (filled.path / "meta").mkdir()
    (filled.path / "meta" / "records.json").write_text("[1,")
    assert verify(filled.path) == [
        f"{filled.path / 'meta' / 'records.json'}: bad JSON: Expecting value: line 1 column 4 (char 3)"
    ]


def test_verify_missing_store(tmp_path):
    assert verify(tmp_path / "nope") == [f"{tmp_path / 'nope'}: no such store directory"]


def test_raw_index_refuses_chunks_past_the_end(filled):
    """Defence in depth behind HDF5's own truncation check: never map past end of file."""
    import h5py

    from lighthead.store.shard import _raw_index

    path = shard_path(filled, 0)
    fld = FIELDS[0]
    with h5py.File(path, "r") as f:
        ds = f["fields"][fld.name]
        assert _raw_index(ds, True, path.stat().st_size) is not None
        with pytest.raises(StoreError, match="past the end"):
            _raw_index(ds, True, 1000)


def test_verify_reports_every_problem_and_goes_on(filled, monkeypatch):
    """An unreadable shard (a folder in its place, a read error, an ids dataset of the wrong
    type) is one problem line; the other shards and feature sets are still checked."""
    import importlib

    import h5py

    from tests.store.helpers import item_id, make_item

    with filled.writer("test/other", FIELDS, shard_items=16, fsync=False) as w:
        for i in range(20):
            w.add(item_id(i), make_item(i))
    d = filled.path / "test/all"
    m = json.loads((d / "manifest.json").read_text())
    s0, s1, s2, s3 = (d / e["file"] for e in m["shards"])
    s0.unlink()
    s0.mkdir()  # a folder where the shard should be, with the size the manifest expects
    m["shards"][0]["bytes"] = s0.stat().st_size
    with h5py.File(s2, "r+") as f:  # an ids dataset of numbers: TypeError on asstr()
        del f["ids"]
        f["ids"] = list(range(16))
    m["shards"][2]["bytes"], m["shards"][2]["sha256"] = s2.stat().st_size, sha256_file(s2)
    (d / "manifest.json").write_text(json.dumps(m))
    other = sorted((filled.path / "test/other").glob("shard-*.h5"))[0]
    verify_mod = importlib.import_module("lighthead.store.verify")
    real_sha = verify_mod.sha256_file

    def sha(path, *a, **k):
        if path in (s1, other):
            raise PermissionError(13, "Permission denied", str(path))
        return real_sha(path, *a, **k)

    monkeypatch.setattr(verify_mod, "sha256_file", sha)
    problems = verify(filled.path)
    assert len(problems) == 4, problems
    for path, p in zip((s0, s1, s2, other), problems):
        assert p.startswith(str(path)) and "\n" not in p, p
    assert "Permission denied" in problems[1]
    quick = verify(filled.path, checksums=False)  # no hashing: only the folder and the ids remain
    assert quick == [problems[0], problems[2]]


def test_verify_reports_unreadable_folders(filled, monkeypatch):
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith("test"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    problems = verify(filled.path)
    assert problems == [
        f"{filled.path / 'test'}: cannot list folder: [Errno 13] Permission denied: '{filled.path / 'test'}'"
    ]


def test_a_shard_without_read_permission_is_not_called_damaged(filled, monkeypatch):
    import h5py

    path = shard_path(filled)
    real = h5py.File

    def file(name, *args, **kwargs):  # as h5py reports EACCES (the tests may run as root)
        if str(name) == str(path):
            raise PermissionError(
                13,
                f"Unable to synchronously open file (unable to open file: name = '{name}', "
                "errno = 13, error message = 'Permission denied')",
            )
        return real(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", file)
    with pytest.raises(StoreError) as exc:
        FeatureSet(filled.path / "test/all")
    assert str(exc.value) == f"{path}: cannot open shard: permission denied"
