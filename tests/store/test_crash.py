"""SIGKILL a writer at random moments and at each step of the commit protocol; the store
must verify clean, and a rerun must complete it with every id exactly once."""

import fcntl
import os
import random
import signal
import time

import pytest

from lighthead.store import open_store, verify
from lighthead.store.writer import KILL_ENV
from tests.store.helpers import FIELDS, assert_item, child, item_id, make_item

N = 300  # items per run: 19 shards of 16


def check_partial(root, name="test/all") -> set[str]:
    """The killed store is consistent: verify passes and every stored item is intact."""
    assert verify(root) == []
    s = open_store(root)
    if name not in s:
        return set()
    fs = s[name]
    assert len(set(fs.ids)) == len(fs.ids)
    for k, i in enumerate(fs.ids):
        assert_item(fs[k], int(i.split("-")[1]))
    return set(fs.ids)


def finish_and_check(root, first=0, last=N) -> None:
    p = child([str(root), "test/all", str(first), str(last)])
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    check_complete(root, range(first, last))


def check_complete(root, indices) -> None:
    assert verify(root) == []
    fs = open_store(root)["test/all"]
    assert sorted(fs.ids) == sorted(item_id(i) for i in indices)
    for i in indices:
        assert_item(fs[item_id(i)], i)
    listed = {s.file for s in fs.shards}
    leftovers = [f for f in os.listdir(fs.path) if ".tmp" in f or (f.endswith(".h5") and f not in listed)]
    assert leftovers == []  # no temporary or orphaned shard survives a completed run


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_random_moment_then_resume(tmp_path, seed):
    rng = random.Random(seed)
    root = tmp_path / "st"
    for _ in range(2):  # two kills in a row, then a full run
        p = child([str(root), "test/all", "0", str(N), "-", "0.001"])  # >= 0.3 s of work
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        check_partial(root)
    finish_and_check(root)


@pytest.mark.parametrize("step", ["shard_written", "shard_renamed", "manifest_written"])
def test_sigkill_at_each_commit_step(tmp_path, step):
    root = tmp_path / "st"
    p = child([str(root), "test/all", "0", str(N)], env={KILL_ENV: step})
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    done = check_partial(root)
    assert len(done) == (16 if step == "manifest_written" else 0)
    names = os.listdir(root / "test/all")
    if step == "shard_written":
        assert any(n.endswith(".h5.tmp") for n in names)
    if step == "shard_renamed":  # renamed but never listed: invisible to readers
        assert any(n.endswith(".h5") for n in names) and open_store(root)["test/all"].ids == []
    finish_and_check(root)


def test_live_writers_tmp_is_kept_dead_writers_tmp_is_removed(tmp_path):
    s = open_store(tmp_path / "st", create=True)
    with s.writer("test/all", FIELDS, tag="main", fsync=False) as w:
        w.add(item_id(0), make_item(0))
    d = s.path / "test/all"
    stray = d / "shard-other-00000.h5.tmp"
    stray.write_bytes(b"half a shard")
    fd = os.open(d / ".writer-other.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # "other" is alive
    with s.writer("test/all", FIELDS, tag="main2", fsync=False):
        pass
    assert stray.exists()
    os.close(fd)  # "other" died
    with s.writer("test/all", FIELDS, tag="main2", fsync=False):
        pass
    assert not stray.exists() and verify(s.path) == []
