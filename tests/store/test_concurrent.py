"""Several writers on one feature set: every id ends up stored exactly once."""

import pytest

from lighthead.store import StoreError, open_store, verify
from tests.store.helpers import FIELDS, assert_item, child, item_id, make_item


def test_two_processes_with_overlapping_ids(tmp_path):
    root = tmp_path / "st"
    a = child([str(root), "test/all", "0", "200", "a"])
    b = child([str(root), "test/all", "100", "300", "b"])
    for p in (a, b):
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert verify(root) == []
    fs = open_store(root)["test/all"]
    assert sorted(fs.ids) == sorted(item_id(i) for i in range(300))  # no duplicates, none missing
    for k, i in enumerate(fs.ids):
        assert_item(fs[k], int(i.split("-")[1]))
    tags = {s.file.split("-")[1] for s in fs.shards}
    assert tags == {"a", "b"}


def test_ids_committed_meanwhile_are_dropped_from_a_shard(store):
    a = store.writer("test/all", FIELDS, tag="a", fsync=False)
    b = store.writer("test/all", FIELDS, tag="b", fsync=False)
    for i in range(10):
        a.add(item_id(i), make_item(i))
    for i in range(5, 15):
        b.add(item_id(i), make_item(i))
    b.close()
    assert not a.is_done(item_id(12))
    a.refresh()
    assert a.is_done(item_id(12))
    a.close()  # its pending 5..9 are now in b's shard: rewritten without them
    fs = store["test/all"]
    assert [s.rows for s in fs.shards] == [10, 5]
    assert fs.ids == [item_id(i) for i in range(5, 15)] + [item_id(i) for i in range(5)]
    for i in range(15):
        assert_item(fs[item_id(i)], i)
    assert verify(store.path) == []


def test_shard_fully_stored_by_another_writer_is_dropped(store):
    a = store.writer("test/all", FIELDS, tag="a", fsync=False)
    with store.writer("test/all", FIELDS, tag="b", fsync=False) as b:
        for i in range(4):
            a.add(item_id(i), make_item(i))
            b.add(item_id(i), make_item(i))
    a.close()
    assert len(store["test/all"].shards) == 1 and len(store["test/all"]) == 4


def test_tag_in_use_and_default_tags(store):
    with store.writer("test/all", FIELDS, tag="x", fsync=False):
        with pytest.raises(StoreError, match="tag 'x'"):
            store.writer("test/all", FIELDS, tag="x")
    w1 = store.writer("test/all", FIELDS, fsync=False)
    w2 = store.writer("test/all", FIELDS, fsync=False)  # same host: falls back to host-pid
    assert w1.tag != w2.tag
    w1.add(item_id(1), make_item(1))
    w2.add(item_id(2), make_item(2))
    w1.close(), w2.close()
    assert sorted(store["test/all"].ids) == [item_id(1), item_id(2)]


def test_locking_can_be_switched_off_for_single_writers(store, monkeypatch):
    monkeypatch.setenv("LIGHTHEAD_STORE_LOCKING", "0")
    with store.writer("test/all", FIELDS, tag="x", fsync=False) as w:
        w.add(item_id(3), make_item(3))
    assert store["test/all"].ids == [item_id(3)] and verify(store.path) == []
