"""Damaged stores give a StoreError naming the file, and nothing is modified."""

import json
import os

import pytest

from lighthead.store import FeatureSet, StoreError, verify
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
    offset = int(FeatureSet(filled.path / "test/all")._readers[0].raw["features"].chunk_offsets[0])
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
    assert verify(filled.path) == [f"{filled.path / 'meta' / 'records.json'}: bad JSON: "
                                   f"Expecting value: line 1 column 4 (char 3)"]


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
        assert _raw_index(ds, fld, 16, path.stat().st_size) is not None
        with pytest.raises(StoreError, match="past the end"):
            _raw_index(ds, fld, 16, 1000)
