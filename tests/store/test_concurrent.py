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


def test_writers_count_only_what_they_committed(store):
    a = store.writer("test/all", FIELDS, tag="a", fsync=False)
    with store.writer("test/all", FIELDS, tag="b", fsync=False) as b:
        for i in range(10):
            assert a.add(item_id(i), make_item(i))  # buffered: not known yet to be new
        for i in range(5, 15):
            b.add(item_id(i), make_item(i))
    a.close()
    assert (a.written, b.written) == (5, 10)


def test_overlapping_imports_report_what_each_stored(tmp_path):
    """Import B runs to the end while import A holds the same lines in its buffer: A then
    stores none of them and must say so (not 150 + 150 for 150 items)."""
    from lighthead.store.importers import import_tsv
    from tests.store.test_importers import tsv_rows, write_tsv

    write_tsv(tmp_path / "x.tsv", list(tsv_rows(150)))  # progress is reported every 64 lines
    counts = []

    def progress(done, total):
        if not counts and done < total:
            counts.append(import_tsv(tmp_path / "x.tsv", tmp_path / "st", fsync=False))

    counts.append(import_tsv(tmp_path / "x.tsv", tmp_path / "st", progress=progress, fsync=False))
    assert counts == [150, 0]
    assert len(open_store(tmp_path / "st")["regions/butd-tsv"]) == 150


def test_dead_writers_lock_file_is_removed_by_the_next_writer(tmp_path):
    import os

    from lighthead.store.writer import KILL_ENV

    root = tmp_path / "st"
    p = child([str(root), "test/all", "0", "40", "dead"], env={KILL_ENV: "shard_written"})
    p.communicate(timeout=60)
    assert p.returncode == -9
    d = root / "test/all"
    assert (d / ".writer-dead.lock").exists()
    with open_store(root).writer("test/all", FIELDS, tag="next", fsync=False) as w:
        assert not (d / ".writer-dead.lock").exists()
        w.add(item_id(0), make_item(0))
    assert not [f for f in os.listdir(d) if f.startswith(".writer-")]  # closing removes its own
    with open_store(root).writer("test/all", FIELDS, tag="live", fsync=False):
        with open_store(root).writer("test/all", FIELDS, tag="other", fsync=False):
            assert (d / ".writer-live.lock").exists()  # a live writer's lock is left alone
    assert verify(root) == []
