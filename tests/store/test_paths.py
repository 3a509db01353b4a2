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


def test_verify_reports_a_deleted_manifest_and_a_dangling_link(filled, tmp_path):
    with filled.writer("test/other", FIELDS, fsync=False) as w:  # the store is not empty without test/all
        w.add(item_id(0), {k: v for k, v in filled["test/all"][item_id(0)].items()})
    (filled.path / "test/all/manifest.json").unlink()
    assert verify(filled.path) == [
        (
            f"{filled.path / 'test/all'}: holds shards but no manifest.json (deleted?): "
            "feature set 'test/all' cannot be read"
        )
    ]
    shutil.rmtree(filled.path / "test/all")
    os.symlink(tmp_path / "gone", filled.path / "test/all")  # a feature set moved away, its link left behind
    assert verify(filled.path) == [f"{filled.path / 'test/all'}: a link to {tmp_path / 'gone'}, which does not exist"]
    assert filled.names() == ["test/other"]  # readers list what they can read


@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_a_store_root_that_is_no_folder_says_what_it_is(tmp_path, kind):
    root = tmp_path / "st"
    if kind == "file":
        root.write_text("not a store")
        want = f"{root}: is not a directory (a store is a folder)"
    else:
        os.symlink(tmp_path / "gone", root)
        want = f"{root}: no such store directory (a link to {tmp_path / 'gone'}, which does not exist)"
    for call in (lambda: open_store(root), lambda: open_store(root, create=True), lambda: info(root)):
        with pytest.raises(StoreError) as exc:
            call()
        assert str(exc.value) == want
    assert verify(root) == [want]
