"""Feature sets behind symlinks are listed and checked; manifests cannot point outside their set."""

import json
import os
import shutil

import pytest

from lighthead.store import FeatureSet, StoreError, info, open_store, verify
from tests.store.helpers import FIELDS, assert_item, item_id


def move_behind_link(store, tmp_path):
    """Move feature set test/all out of the store and leave a symlink in its place."""
    target = tmp_path / "elsewhere" / "all"
    target.parent.mkdir()
    shutil.move(str(store.path / "test/all"), target)
    os.symlink(target, store.path / "test/all")
    return target


def test_symlinked_feature_set_is_listed_and_verified(filled, tmp_path):
    target = move_behind_link(filled, tmp_path)
    assert filled.names() == ["test/all"]
    assert info(filled.path)["feature_sets"]["test/all"]["items"] == 50
    assert verify(filled.path) == []
    shard = sorted(target.glob("shard-*.h5"))[1]
    shard.write_bytes(shard.read_bytes()[:-10])
    problems = verify(filled.path)
    assert len(problems) == 1 and shard.name in problems[0] and "truncated" in problems[0]


def test_symlinked_folder_above_feature_sets(filled, tmp_path):
    shutil.move(str(filled.path / "test"), tmp_path / "test-elsewhere")
    os.symlink(tmp_path / "test-elsewhere", filled.path / "test")
    assert filled.names() == ["test/all"] and verify(filled.path) == []
    assert_item(filled["test/all"][item_id(4)], 4)


def test_symlink_loops_are_followed_once(filled):
    os.symlink(filled.path, filled.path / "test" / "loop")  # points back at the store root
    os.symlink("..", filled.path / "test" / "all" / "up")
    assert filled.names() == ["test/all"]
    assert verify(filled.path) == []


@pytest.mark.parametrize("where", ["parent", "absolute", "subfolder"])
def test_manifest_cannot_name_shards_outside_the_feature_set(filled, tmp_path, where):
    d = filled.path / "test/all"
    m = json.loads((d / "manifest.json").read_text())
    name = m["shards"][1]["file"]
    if where == "parent":
        shutil.copy(d / name, filled.path / "test" / name)
        bad = f"../{name}"
    elif where == "absolute":
        shutil.copy(d / name, tmp_path / name)
        bad = str(tmp_path / name)
    else:
        (d / "sub").mkdir()
        shutil.copy(d / name, d / "sub" / name)
        bad = f"sub/{name}"
    m["shards"][1]["file"] = bad
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match=f"manifest.json: bad shard file name {bad!r}"):
        FeatureSet(d)
    with pytest.raises(StoreError, match="bad shard file name"):
        filled.writer("test/all", FIELDS)
    with pytest.raises(StoreError, match="bad shard file name"):
        open_store(filled.path)["test/all"]
    assert any("bad shard file name" in p for p in verify(filled.path))
