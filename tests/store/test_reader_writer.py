import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lighthead.store import FeatureSet, Field, StoreError, info, open_store, verify
from tests.store.helpers import FIELDS, ROOT, assert_item, item_id, make_item


def test_round_trip_every_field_kind(filled):
    fs = filled["test/all"]
    assert filled.names() == ["test/all"]
    assert len(fs) == 50 and fs.ids == [item_id(i) for i in range(50)]
    assert [s.rows for s in fs.shards] == [16, 16, 16, 2]
    for i in range(50):
        assert_item(fs[item_id(i)], i)
        assert_item(fs[i], i)
    assert_item(fs[-1], 49)
    assert {n: (f.shape, f.dtype) for n, f in fs.fields.items()} == {f.name: (f.shape, f.dtype) for f in FIELDS}
    assert fs.attrs["extractor"] == "test"
    assert {"numpy", "h5py"} <= set(fs.attrs["library_versions"])
    assert verify(filled.path) == []


def test_get_batch_keeps_key_order_across_shards(filled):
    fs = filled["test/all"]
    keys = [item_id(40), 3, item_id(17), 3, -1, np.int64(20)]
    want = [40, 3, 17, 3, 49, 20]
    batch = fs.get_batch(keys)
    assert batch["features"].shape == (6, 6, 8) and isinstance(batch["boxes"], list)
    for j, i in enumerate(want):
        assert_item({n: v[j] for n, v in batch.items()}, i)
    sub = fs.get_batch(np.array([5, 1]), ["label", "tokens"])
    assert set(sub) == {"label", "tokens"} and list(sub["label"]) == [32, 4]
    assert fs.get_batch([])["features"].shape == (0, 6, 8)


def test_get_batch_fills_given_buffers(filled):
    fs = filled["test/all"]
    buf = np.zeros((2, 6, 8), np.float16)
    res = fs.get_batch([item_id(30), 1], ["features"], out={"features": buf})
    assert res["features"] is buf
    assert np.array_equal(buf[0], make_item(30)["features"]) and np.array_equal(buf[1], make_item(1)["features"])
    with pytest.raises(ValueError, match="C-contiguous float16"):
        fs.get_batch([1], ["features"], out={"features": np.zeros((1, 6, 8), np.float32)})


def test_lookup_errors(filled):
    fs = filled["test/all"]
    with pytest.raises(KeyError, match="nope"):
        fs["nope"]
    with pytest.raises(IndexError):
        fs[50]
    with pytest.raises(IndexError):
        fs.get_batch(np.array([0, 50]))
    with pytest.raises(KeyError, match="no field"):
        fs.get(0, ["nope"])
    with pytest.raises(KeyError):
        filled["test/none"]


def test_raw_path_matches_h5py_path_and_preload(filled):
    """The pread/mmap path is checked against HDF5's own reads and against RAM."""
    keys = list(range(49, -1, -3))
    raw = filled["test/all"].get_batch(keys)
    slow = FeatureSet(filled.path / "test/all")
    for reader in slow._readers:
        reader.raw.clear()  # forces every read through h5py
    ram = FeatureSet(filled.path / "test/all").preload()
    for other in (slow.get_batch(keys), ram.get_batch(keys)):
        for n, v in raw.items():
            if isinstance(v, list):
                assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(v, other[n]))
            else:
                assert np.array_equal(v, other[n]) and v.dtype == other[n].dtype
    assert ram.preloaded
    assert_item(ram[item_id(7)], 7)


def test_items_iterates_in_storage_order(filled):
    got = list(filled["test/all"].items(["label"], batch=7))
    assert [i for i, _ in got] == [item_id(i) for i in range(50)]
    assert [int(it["label"]) for _, it in got] == [i * 7 - 3 for i in range(50)]


def test_shards_roll_over_at_byte_limit(store):
    with store.writer("x/bytes", [Field("v", (256,), "float32")], shard_bytes=4096, fsync=False) as w:
        w.add_batch([str(i) for i in range(10)], {"v": np.ones((10, 256))})  # 1 KiB per item
    assert [s.rows for s in store["x/bytes"].shards] == [4, 4, 2]


def test_add_batch_forms_and_dedupe(store):
    fields = [Field("a", (2,), "int32"), Field("v", (None,), "float32")]
    with store.writer("x/dedupe", fields, fsync=False) as w:
        assert w.add_batch(["a", "b"], {"a": np.array([[1, 2], [3, 4]]), "v": [np.ones(3), np.ones(0)]}) == 2
        assert w.add_batch(["b", "c"], [{"a": [0, 0], "v": []}, {"a": [5, 6], "v": [1.5]}]) == 1
        assert not w.add("a", {"a": [9, 9], "v": []}) and w.is_done("c") and w.done_ids == {"a", "b", "c"}
        with pytest.raises(StoreError, match="fields"):
            w.add("d", {"a": [1, 2]})
        with pytest.raises(TypeError):
            w.add(3, {"a": [1, 2], "v": []})
    fs = store["x/dedupe"]
    assert fs.ids == ["a", "b", "c"] and fs["b"]["a"].tolist() == [3, 4] and fs["c"]["v"].tolist() == [1.5]
    with store.writer("x/dedupe", fields, fsync=False) as w:  # resume: everything is done already
        assert w.done_ids == {"a", "b", "c"} and w.add("d", {"a": [7, 8], "v": [2.0]})
    assert store["x/dedupe"].ids == ["a", "b", "c", "d"]  # store[...] reopens after the change


def test_resume_refuses_other_fields_or_attrs(filled):
    with pytest.raises(StoreError, match="fields differ"):
        filled.writer("test/all", FIELDS[:2])
    with pytest.raises(StoreError, match="attrs differ"):
        filled.writer("test/all", FIELDS, {"extractor": "other"})
    with filled.writer("test/all", None) as w:  # fields and attrs may be omitted on resume
        assert len(w.done_ids) == 50


def test_exception_in_body_keeps_finished_items(store):
    with pytest.raises(RuntimeError):
        with store.writer("x/exc", [Field("a", ())], fsync=False) as w:
            w.add("1", {"a": 1})
            raise RuntimeError("extractor crashed")
    assert store["x/exc"].ids == ["1"]


def test_json_artifacts(store):
    obj = {"words": ["a", "ü"], "n": 3}
    path = store.write_json("vocab/words", obj)
    assert path == store.path / "meta" / "vocab" / "words.json"
    assert store.read_json("vocab/words") == obj and store.has_json("vocab/words")
    assert not store.has_json("nope") and store.json_names() == ["vocab/words"]
    store.write_json("vocab/words", [1])
    assert store.read_json("vocab/words") == [1]
    assert [p.name for p in path.parent.iterdir()] == ["words.json"]  # no temporary left over
    with pytest.raises(StoreError, match="nope.json"):
        store.read_json("nope")
    path.write_text("{not json")
    with pytest.raises(StoreError, match="words.json"):
        store.read_json("vocab/words")


def test_info_is_json_able(filled):
    filled.write_json("records", [1, 2])
    summary = info(filled.path)
    json.dumps(summary)
    fs = summary["feature_sets"]["test/all"]
    assert fs["items"] == 50 and fs["shards"] == 4 and fs["attrs"] == {"extractor": "test"}
    assert fs["fields"]["boxes"] == {"shape": [None, 4], "dtype": "float32", "variable": True}
    assert summary["json"] == ["records"] and filled.info() == summary


def test_open_store_needs_create(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "missing")
    assert open_store(tmp_path / "new", create=True).names() == []


def test_import_store_does_not_import_torch():
    code = "import sys, lighthead.store, lighthead.store.importers, lighthead.store.exporters; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
