"""`lighthead store upgrade`: shards written before the XXH3 chunk sums are rewritten with them,
values, ids and attrs unchanged, old files gone, and a killed upgrade leaves a readable set."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.store import FeatureSet, StoreError, open_store, upgrade, verify
from lighthead.store import shard_upgrade as upgrade_module
from lighthead.store.manifest import read_manifest
from tests.store.helpers import FIELDS, assert_item, item_id, make_item
from tests.store.test_integrity import strip_sums, write_old_shard


def _shards(store):
    d = store.path / "test/all"
    return d, [e.file for e in read_manifest(d).shards]


def _all_have_sums(store) -> bool:
    d, files = _shards(store)
    return all(upgrade_module.has_sums(d / f) for f in files)


def test_upgrade_adds_sums_and_keeps_every_value(filled):
    strip_sums(filled)
    d, before = _shards(filled)
    attrs = read_manifest(d).attrs
    assert not _all_have_sums(filled)
    assert upgrade(filled.path) == {"test/all": (4, 0)}
    _, after = _shards(filled)
    assert len(after) == 4 and not set(before) & set(after)  # new files in the old ones' places
    assert sorted(p.name for p in d.glob("shard-*.h5")) == sorted(after)  # the old ones removed
    assert _all_have_sums(filled) and read_manifest(d).attrs == attrs
    assert verify(filled.path) == []
    fs = FeatureSet(d)
    assert list(fs.ids) == [item_id(i) for i in range(50)]  # the same order
    for i in range(50):
        assert_item(fs[item_id(i)], i)
    assert all(r.raw["features"].sums is not None for r in fs._readers)  # checked at memory speed
    assert upgrade(filled.path) == {"test/all": (0, 4)}  # nothing left to do
    assert not list(d.glob(".writer-*.lock"))


def test_upgrade_rewrites_shards_from_before_any_checksum(filled):
    d = filled.path / "test/all"
    manifest = json.loads((d / "manifest.json").read_text())
    for entry in manifest["shards"][:2]:
        with h5py.File(d / entry["file"], "r") as f:
            ids = list(f["ids"].asstr()[...])
        items = [make_item(int(i.split("-")[1])) for i in ids]
        write_old_shard(d / entry["file"], ids, FIELDS, {fl.name: [it[fl.name] for it in items] for fl in FIELDS})
    from tests.store.test_integrity import rewrite_manifest_sums

    rewrite_manifest_sums(d)
    assert upgrade(filled.path, "test/all") == {"test/all": (2, 2)}
    assert verify(filled.path) == []
    fs = FeatureSet(d)
    for i in range(50):
        assert_item(fs[item_id(i)], i)


def test_a_killed_upgrade_leaves_a_readable_set_and_the_rerun_finishes(filled, monkeypatch):
    strip_sums(filled)
    d, before = _shards(filled)
    real = upgrade_module.write_manifest
    calls = []

    def killed_at_the_second_swap(directory, manifest, fsync=True):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after the new shard's rename, before the manifest names it
        real(directory, manifest, fsync)

    monkeypatch.setattr(upgrade_module, "write_manifest", killed_at_the_second_swap)
    with pytest.raises(KeyboardInterrupt):
        upgrade(filled.path)
    monkeypatch.undo()
    assert verify(filled.path) == []  # one shard swapped, the orphan unlisted: nothing damaged
    fs = FeatureSet(d)
    for i in range(50):
        assert_item(fs[item_id(i)], i)
    assert upgrade(filled.path) == {"test/all": (3, 1)}
    _, after = _shards(filled)
    assert sorted(p.name for p in d.glob("shard-*")) == sorted(after)  # the orphan removed too
    assert _all_have_sums(filled) and verify(filled.path) == []


def test_upgrade_errors_are_one_line(filled, tmp_path, capsys):
    with pytest.raises(StoreError, match="no feature set 'nope'; sets: test/all"):
        upgrade(filled.path, "nope")
    assert run_app(app, ["store", "upgrade", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no such store directory"


def test_the_command_reports_per_set(filled, capsys):
    strip_sums(filled)
    assert run_app(app, ["store", "upgrade", str(filled.path)]) == 0
    assert capsys.readouterr().out.strip() == "test/all: 4 shard(s) rewritten with checksums, 0 had them"
    store = open_store(filled.path)
    assert np.array_equal(store["test/all"][item_id(7)]["features"], make_item(7)["features"])


def test_verify_notes_the_shards_upgrade_would_rewrite(filled, capsys):
    strip_sums(filled)
    assert run_app(app, ["store", "verify", str(filled.path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"ok: {filled.path}"
    assert captured.err.strip() == (
        f"note: test/all: 4 shard(s) written before the XXH3 chunk sums; `lighthead store upgrade "
        f"{filled.path}` makes their first reads about three times faster"
    )
    upgrade(filled.path)
    assert run_app(app, ["store", "verify", str(filled.path)]) == 0
    assert capsys.readouterr().err == ""
