"""Per-chunk checksums: a damaged byte is an error on read, naming shard and id.

New shards are checked against their XXH3 sums (/sums); shards written before those are
checked against HDF5's Fletcher-32 sums: the `checked` fixture runs a test on both."""

import gc
import json
import re

import h5py
import numpy as np
import pytest
import xxhash

from lighthead.store import FeatureSet, Field, StoreError, open_store, sha256_file, verify
from lighthead.store.manifest import read_manifest
from tests.store.helpers import FIELDS, assert_item, item_id, make_item
from tests.store.helpers import strip_sums as strip_set_sums


def shard_file(store, k):
    d = store.path / "test/all"
    return d / read_manifest(d).shards[k].file


def row_offset(path, dataset, row):
    """File offset of stored row `row` of a chunked dataset (one item of a fixed field, one
    flat row of a variable one), found through HDF5's chunk index."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        rpc = ds.chunks[0]
        info = ds.id.get_chunk_info_by_coord((row // rpc * rpc,) + (0,) * (ds.ndim - 1))
        row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
        return info.byte_offset + (row % rpc) * row_bytes


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def rewrite_manifest_sums(directory):
    """Record the shards' new sizes and sha256 in the manifest after editing them."""
    manifest = json.loads((directory / "manifest.json").read_text())
    for entry in manifest["shards"]:
        entry["bytes"], entry["sha256"] = (
            (directory / entry["file"]).stat().st_size,
            sha256_file(directory / entry["file"]),
        )
    (directory / "manifest.json").write_text(json.dumps(manifest))


def strip_sums(store):
    """Make every shard of test/all as lighthead wrote it before /sums: HDF5's Fletcher-32 only."""
    strip_set_sums(store.path / "test/all")


def replace_dataset(store, path, name, **create) -> None:
    """Swap dataset `name` of the shard at `path` for `h5py.create_dataset(name, **create)` and
    record the shard's new size and sha256 (so only the readers' own checks can object)."""
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, **create)
    rewrite_manifest_sums(store.path / "test/all")


@pytest.fixture(params=["xxh3", "fletcher"])
def checked(request, filled):
    """The filled store, its shards with XXH3 sums or (as older writers left them) without."""
    if request.param == "fletcher":
        strip_sums(filled)
    return filled


def test_every_dataset_is_chunked_with_fletcher32(filled):
    for k in range(4):
        with h5py.File(shard_file(filled, k), "r") as f:
            names = (
                ["ids"]
                + [f"fields/{fl.name}" for fl in FIELDS]
                + [f"offsets/{fl.name}" for fl in FIELDS if fl.variable]
            )
            for name in names:
                assert f[name].chunks is not None, name
                assert f[name].fletcher32, name


@pytest.mark.parametrize("field", [fl.name for fl in FIELDS])
def test_flipped_byte_in_any_field_is_an_error_naming_shard_and_id(checked, field):
    filled = checked
    i = 17  # row 1 of shard 1; 2 boxes and 1 token, so every field has bytes to damage
    path = shard_file(filled, 1)
    fld = {fl.name: fl for fl in FIELDS}[field]
    if fld.variable:
        with h5py.File(path, "r") as f:
            row = int(f["offsets"][field][1])
    else:
        row = 1
    flip(path, row_offset(path, f"fields/{field}", row))
    fs = FeatureSet(filled.path / "test/all")
    assert_item(fs[item_id(3)], 3)  # other shards read as before
    pattern = re.escape(path.name) + ".*" + re.escape(repr(item_id(i)))
    with pytest.raises(StoreError, match=pattern):
        fs.get(item_id(i), [field])
    with pytest.raises(StoreError, match=re.escape(path.name)):
        fs.get_batch([item_id(2), item_id(i), item_id(40)], [field])
    with pytest.raises(StoreError, match=pattern):  # still refused on a second read
        fs[item_id(i)]
    with pytest.raises(StoreError, match=re.escape(path.name)):
        FeatureSet(filled.path / "test/all").preload()
    assert any(path.name in p for p in verify(filled.path))


def test_damaged_offsets_or_ids_refuse_to_open(filled):
    path = shard_file(filled, 2)
    flip(path, row_offset(path, "offsets/boxes", 3))
    with pytest.raises(StoreError, match=re.escape(path.name)):
        FeatureSet(filled.path / "test/all")
    path = shard_file(filled, 0)
    flip(path, row_offset(path, "ids", 5))
    with pytest.raises(StoreError, match=re.escape(path.name)):
        FeatureSet(filled.path / "test/all")


def test_checks_can_be_switched_off(checked, monkeypatch):
    filled = checked
    path = shard_file(filled, 1)
    flip(path, row_offset(path, "fields/features", 1))
    fs = open_store(filled.path, check_reads=False)["test/all"]
    got = fs[item_id(17)]["features"]  # read as stored, damage included
    assert not np.array_equal(got, make_item(17)["features"])
    monkeypatch.setenv("LIGHTHEAD_STORE_CHECK_READS", "0")
    assert FeatureSet(filled.path / "test/all").get(item_id(17), ["features"])["features"].shape == (6, 8)
    monkeypatch.delenv("LIGHTHEAD_STORE_CHECK_READS")
    with pytest.raises(StoreError):
        FeatureSet(filled.path / "test/all").get(item_id(17), ["features"])


def test_checked_reads_return_the_stored_values(checked):
    """First reads (checked) and later ones (straight copies) agree."""
    filled = checked
    fs = FeatureSet(filled.path / "test/all")
    order = [7, 33, 7, 0, 49, 18, 33, 18]
    for _ in range(2):
        batch = fs.get_batch([item_id(i) for i in order])
        for j, i in enumerate(order):
            assert_item({k: v[j] for k, v in batch.items()}, i)
    for i in range(50):
        assert_item(fs[item_id(i)], i)


def write_old_shard(path, ids, fields, columns):
    """A shard as lighthead wrote it before checksums: no filters, variable-length fields
    contiguous, ids as variable-length strings."""
    n = len(ids)
    with h5py.File(path, "w", libver=("v110", "v110"), alignment_threshold=4096, alignment_interval=4096) as f:
        f.attrs["format"] = "lighthead-store"
        f.attrs["version"] = 1
        f.attrs["fields"] = json.dumps([fl.to_json() for fl in fields])
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        g_fields, g_offsets = f.create_group("fields"), f.create_group("offsets")
        for fl in fields:
            values = columns[fl.name]
            if fl.variable:
                offsets = np.zeros(n + 1, dtype=np.int64)
                np.cumsum([len(v) for v in values], out=offsets[1:])
                g_fields.create_dataset(fl.name, data=np.concatenate(values, axis=0))
                g_offsets.create_dataset(fl.name, data=offsets)
            else:
                arr = np.stack(values)
                item_bytes = max(1, int(np.prod(fl.shape, dtype=np.int64)) * np.dtype(fl.dtype).itemsize)
                rpc = max(1, min(n, 4096 // item_bytes or 1))
                g_fields.create_dataset(fl.name, data=arr, chunks=(rpc, *fl.shape))


def test_old_stores_without_checksums_stay_readable_and_resumable(filled):
    d = filled.path / "test/all"
    manifest = json.loads((d / "manifest.json").read_text())
    for entry in manifest["shards"]:
        with h5py.File(d / entry["file"], "r") as f:
            ids = list(f["ids"].asstr()[...])
        items = [make_item(int(i.split("-")[1])) for i in ids]
        write_old_shard(d / entry["file"], ids, FIELDS, {fl.name: [it[fl.name] for it in items] for fl in FIELDS})
        with h5py.File(d / entry["file"], "r") as f:
            assert not f["fields/features"].fletcher32 and f["fields/boxes"].chunks is None
        entry["bytes"], entry["sha256"] = (d / entry["file"]).stat().st_size, sha256_file(d / entry["file"])
    (d / "manifest.json").write_text(json.dumps(manifest))
    assert verify(filled.path) == []
    fs = FeatureSet(d)
    assert fs._readers[0].raw  # the old layout still takes the direct-copy path
    for i in range(50):
        assert_item(fs[item_id(i)], i)
    batch = fs.get_batch([item_id(i) for i in (40, 3, 22)])
    for j, i in enumerate((40, 3, 22)):
        assert_item({k: v[j] for k, v in batch.items()}, i)
    with filled.writer("test/all", FIELDS, fsync=False) as w:  # new shards beside old ones
        for i in range(50, 60):
            w.add(item_id(i), make_item(i))
    fs = FeatureSet(d)
    for i in range(60):
        assert_item(fs[item_id(i)], i)
    fs.preload()
    for i in range(60):
        assert_item(fs[item_id(i)], i)


@pytest.mark.parametrize("at", [6, 12, 20])
def test_damaged_chunk_index_is_one_error_naming_shard_and_field(tmp_path, at):
    """h5py reports damaged chunk-index metadata as a RuntimeError or KeyError naming nothing."""
    store = open_store(tmp_path / "st", create=True)
    with store.writer("big", [Field("features", (8, 512), "float16")], fsync=False) as w:  # 8 KiB: a chunk each
        for i in range(20):
            w.add(f"i{i}", {"features": np.full((8, 512), i, np.float16)})
    path = next((store.path / "big").glob("shard-*.h5"))
    flip(path, path.read_bytes().index(b"FAHD") + at)  # inside HDF5's fixed-array chunk index header
    with pytest.raises(StoreError, match=re.escape(path.name) + ": field 'features': .*chunk index"):
        FeatureSet(store.path / "big")
    problems = verify(store.path)
    assert problems and all(path.name in p and "\n" not in p for p in problems)


def checksum_offset(path, dataset, row):
    """File offset of the 4 checksum bytes after the chunk holding stored row `row`."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        rpc = ds.chunks[0]
        info = ds.id.get_chunk_info_by_coord((row // rpc * rpc,) + (0,) * (ds.ndim - 1))
        return info.byte_offset + info.size - 4


def test_first_reads_check_each_chunk_without_reading_rows_through_hdf5(checked, monkeypatch):
    """A healthy chunk is checked once, from its bytes; HDF5 is asked only about chunks that fail."""
    filled = checked
    from lighthead.store.shard import ShardReader

    def refuse(*args, **kwargs):
        raise AssertionError("read through HDF5")

    monkeypatch.setattr(ShardReader, "_h5_rows", refuse)
    monkeypatch.setattr(ShardReader, "_h5_slice", refuse)
    fs = FeatureSet(filled.path / "test/all")
    order = [7, 33, 7, 0, 49, 18, 33, 18]
    batch = fs.get_batch([item_id(i) for i in order])
    for j, i in enumerate(order):
        assert_item({k: v[j] for k, v in batch.items()}, i)
    for i in range(50):
        assert_item(fs[item_id(i)], i)
    assert all(idx.checked.all() for r in fs._readers for idx in r.raw.values())


@pytest.mark.parametrize("field", ["features", "boxes"])
def test_a_damaged_fletcher_sum_is_an_error_naming_shard_and_id(filled, field):
    """In a shard without XXH3 sums, the Fletcher-32 sum is what a read checks."""
    strip_sums(filled)
    path = shard_file(filled, 1)
    row = 1
    if field == "boxes":
        with h5py.File(path, "r") as f:
            row = int(f["offsets"][field][1])
    flip(path, checksum_offset(path, f"fields/{field}", row))
    fs = FeatureSet(filled.path / "test/all")
    with pytest.raises(
        StoreError, match=re.escape(path.name) + ".*" + re.escape(repr(item_id(17))) + ".*" + re.escape(repr(field))
    ):
        fs.get(item_id(17), [field])


def test_a_chunk_only_hdf5_accepts_is_read(filled):
    """HDF5 also accepts the byte-swapped checksum of releases before 1.6.3; our Fletcher-32
    check does not, so HDF5 judges the chunk and its values are read."""
    strip_sums(filled)
    path = shard_file(filled, 1)
    at = checksum_offset(path, "fields/features", 1)
    data = bytearray(path.read_bytes())
    data[at : at + 4] = bytes([data[at + 1], data[at], data[at + 3], data[at + 2]])
    path.write_bytes(bytes(data))
    assert_item(FeatureSet(filled.path / "test/all")[item_id(17)], 17)
    batch = FeatureSet(filled.path / "test/all").get_batch([item_id(16), item_id(17)], ["features"])
    assert np.array_equal(batch["features"][1], make_item(17)["features"])


# -- the XXH3 sums of new shards --------------------------------------------------------


def test_sums_are_the_xxh3_of_each_chunk_as_hdf5_stores_it(filled):
    """The reference reads each chunk's stored bytes through HDF5's chunk API (not the
    arrays the writer hashed), drops Fletcher-32's 4 bytes and the padding rows of an edge
    chunk, and hashes them with xxhash directly."""
    for k in range(4):
        with h5py.File(shard_file(filled, k), "r") as f:
            assert f["sums"].attrs["algorithm"] == "xxh3_64"
            for fl in FIELDS:
                ds = f[f"fields/{fl.name}"]
                rpc = ds.chunks[0]
                row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
                want = []
                for a in range(0, ds.shape[0], rpc):
                    _, raw = ds.id.read_direct_chunk((a,) + (0,) * (ds.ndim - 1))
                    assert len(raw) == rpc * row_bytes + 4
                    want.append(xxhash.xxh3_64_intdigest(raw[: (min(ds.shape[0], a + rpc) - a) * row_bytes]))
                got = f[f"sums/{fl.name}"][...]
                assert got.dtype == np.uint64 and got.tolist() == want, fl.name
                assert f[f"sums/{fl.name}"].fletcher32  # the sums are checked by HDF5 in turn


def test_damage_fletcher32_cannot_see_is_an_error(tmp_path):
    """Fletcher-32 adds 16-bit words modulo 65535, so in a chunk whose sum is not zero a word
    0x0000 turned to 0xFFFF leaves its sum unchanged: HDF5 reads the damaged chunk without a
    word, the XXH3 check refuses it."""
    store = open_store(tmp_path / "st", create=True)
    item = np.zeros((8, 512), np.float16)
    item[0, 0] = 1.0
    with store.writer("z", [Field("features", (8, 512), "float16")], fsync=False) as w:  # 8 KiB: a chunk each
        for i in range(4):
            w.add(f"i{i}", {"features": item})
    path = next((store.path / "z").glob("shard-*.h5"))
    at = row_offset(path, "fields/features", 2) + 100  # an even offset: a whole Fletcher-32 word
    data = bytearray(path.read_bytes())
    assert data[at : at + 2] == b"\x00\x00"
    data[at : at + 2] = b"\xff\xff"
    path.write_bytes(bytes(data))
    with h5py.File(path, "r") as f:
        assert f["fields/features"][2].view(np.uint16).max() == 0xFFFF  # HDF5 accepts it
    fs = FeatureSet(store.path / "z")
    assert np.array_equal(fs["i1"]["features"], item)
    with pytest.raises(StoreError, match=re.escape(path.name) + ": id 'i2', field 'features': checksum mismatch"):
        fs["i2"]
    with pytest.raises(StoreError, match="'i2'.*checksum mismatch"):
        fs.get_batch(["i3", "i2"])
    rewrite_manifest_sums(store.path / "z")  # the change recorded in the manifest: only the chunk sums tell
    assert verify(store.path) == [f"{path}: id 'i2', field 'features': checksum mismatch, the shard is damaged"]


def test_damaged_or_missing_sums_refuse_to_open(filled):
    path = shard_file(filled, 1)
    flip(path, row_offset(path, "sums/features", 0))
    with pytest.raises(StoreError, match=re.escape(path.name) + ": field 'features': unreadable HDF5 metadata"):
        FeatureSet(filled.path / "test/all")
    flip(path, row_offset(path, "sums/features", 0))  # repaired
    path = shard_file(filled, 2)
    with h5py.File(path, "r+") as f:
        del f["sums/boxes"]
    rewrite_manifest_sums(filled.path / "test/all")
    with pytest.raises(StoreError, match=re.escape(path.name) + ": field 'boxes' has no checksums"):
        FeatureSet(filled.path / "test/all").get(item_id(40))


def test_sums_of_the_wrong_shape_refuse_to_open(filled):
    path = shard_file(filled, 0)
    with h5py.File(path, "r") as f:
        sums = f["sums/features"][...]
    replace_dataset(filled, path, "sums/features", data=np.concatenate([sums, sums]))
    with pytest.raises(StoreError, match=re.escape(path.name) + ": field 'features': /sums holds .* for 1 chunks"):
        FeatureSet(filled.path / "test/all").get(item_id(0))


def test_sums_claiming_a_huge_size_are_refused_before_reading(filled):
    """A hostile shard's /sums dataset may claim terabytes: its shape is checked first."""
    path = shard_file(filled, 0)  # nothing allocated:
    replace_dataset(filled, path, "sums/features", shape=(10**12,), dtype=np.uint64, chunks=(1024,))
    # read first, it was an attempt to allocate 8 TB (a MemoryError, no line naming the shard)
    with pytest.raises(
        StoreError, match=r"field 'features': /sums holds \(1000000000000,\) uint64 checksums for 1 chunks"
    ):
        FeatureSet(filled.path / "test/all").get(item_id(0))


@pytest.mark.parametrize("dataset", ["ids", "offsets/boxes"])
def test_ids_or_offsets_claiming_more_than_the_file_are_refused_before_reading(filled, dataset):
    """HDF5 lets a dataset claim any shape over unallocated chunks: one read whole (ids,
    offsets; sums and preloaded fields likewise) must fit in its file, else one line, not an
    attempt to allocate terabytes."""
    path = shard_file(filled, 1)
    with h5py.File(path, "r") as f:
        dtype = f[dataset].dtype
    replace_dataset(filled, path, dataset, shape=(10**12,), dtype=dtype, chunks=(1024,))  # nothing allocated
    pattern = re.escape(f"{path}: dataset /{dataset} claims (1000000000000,)") + ".*more than the file's"
    with pytest.raises(StoreError, match=pattern):
        FeatureSet(filled.path / "test/all")
    [problem] = [p for p in verify(filled.path) if path.name in p]
    assert re.search(pattern, problem), problem


def test_a_variable_field_claiming_more_than_the_file_is_refused(filled):
    """Offsets that fit but end at a huge row count, over a flat array claiming that many rows
    (nothing allocated): one line, not a chunk table of billions of entries."""
    path = shard_file(filled, 1)
    with h5py.File(path, "r+") as f:
        off = f["offsets/boxes"][...]
        off[-1] = 10**11
        f["offsets/boxes"][...] = off
    replace_dataset(filled, path, "fields/boxes", shape=(10**11, 4), dtype=np.float32, chunks=(64, 4), fletcher32=True)
    with pytest.raises(StoreError, match=re.escape(f"{path}: field /fields/boxes extends past the end of the file")):
        FeatureSet(filled.path / "test/all")


def test_sums_of_an_unknown_algorithm_are_left_to_fletcher32(filled):
    """A shard from a later version with another algorithm is still checked, by Fletcher-32."""
    path = shard_file(filled, 1)
    with h5py.File(path, "r+") as f:
        f["sums"].attrs["algorithm"] = "sha3_ultra"
    rewrite_manifest_sums(filled.path / "test/all")
    flip(path, row_offset(path, "fields/features", 1))
    fs = FeatureSet(filled.path / "test/all")
    assert_item(fs[item_id(3)], 3)
    assert fs._readers[1].raw["features"].sums is None
    with pytest.raises(StoreError, match=re.escape(path.name) + ".*" + re.escape(repr(item_id(17)))):
        fs.get(item_id(17), ["features"])


def test_a_damaged_fletcher_sum_beside_intact_data(filled):
    """In a shard with XXH3 sums, reads check the data against those: intact rows read as
    written even when HDF5's own sum after them is damaged. HDF5 refuses the chunk (preload
    reads through it) and `verify` names the shard."""
    path = shard_file(filled, 1)
    flip(path, checksum_offset(path, "fields/features", 1))
    assert_item(FeatureSet(filled.path / "test/all")[item_id(17)], 17)
    with pytest.raises(StoreError, match=re.escape(path.name) + ".*" + re.escape(repr("features"))):
        FeatureSet(filled.path / "test/all").preload()
    assert any(path.name in p for p in verify(filled.path))


def test_readers_of_a_shard_share_its_mapping(filled):
    from lighthead.store.shard import map_shard

    a, b = FeatureSet(filled.path / "test/all"), FeatureSet(filled.path / "test/all")
    a[item_id(0)], b[item_id(1)]
    assert a._readers[0].mapped() is b._readers[0].mapped()
    assert a._readers[0].mapped() is not a._readers[1].mapped()  # another file
    path = a._readers[0].path
    a.close()
    assert map_shard(path) is b._readers[0].mapped()  # b still holds it
    b.close()
    gc.collect()
    first_bytes = map_shard(path)[:8].copy()
    # a file replaced by another one (a new inode) is mapped anew, never served from the old mapping
    old = map_shard(path)
    replacement = path.with_suffix(".new")
    replacement.write_bytes(path.read_bytes())
    replacement.replace(path)
    assert map_shard(path) is not old
    assert np.array_equal(map_shard(path)[:8], first_bytes)


def test_verify_checks_the_chunk_sums_too(filled):
    """A shard whose data disagree with its XXH3 sums while its sha256 in the manifest agrees
    (edited and re-recorded, or written wrong) reads as damaged: `verify` says so too."""
    path = shard_file(filled, 2)
    with h5py.File(path, "r+") as f:  # a value changed through HDF5, which rewrites its own sum
        f["fields/label"][3] = f["fields/label"][3] + 1
    rewrite_manifest_sums(filled.path / "test/all")
    with pytest.raises(StoreError, match="checksum mismatch"):
        FeatureSet(filled.path / "test/all").get(item_id(35), ["label"])
    [problem] = verify(filled.path)
    # the labels of the shard's 16 items share one chunk: verify names them all
    assert (
        problem
        == f"{path}: ids {item_id(32)!r} to {item_id(47)!r}, field 'label': checksum mismatch, the shard is damaged"
    )
    assert verify(filled.path, checksums=False) == []  # the quick check reads no data


def _read_all_items(fs) -> None:
    for i in range(50):
        fs[item_id(i)]


def test_chunks_checked_in_a_forked_worker_count_for_the_reader(checked):
    """DataLoader workers are forked anew every epoch: what one of them checked is checked for
    the reader they came from and for the next workers, not once per worker per epoch."""
    import multiprocessing

    from lighthead.store.shard import _Chunks

    fs = FeatureSet(checked.path / "test/all")
    flags = [i.checked for r in fs._readers for i in r.raw.values() if isinstance(i, _Chunks) and i.checked is not None]
    assert flags and not any(f.any() for f in flags)
    for r in fs._readers:  # one shared block per reader, not one mapping per field
        assert len({id(i.checked.base) for i in r.raw.values() if isinstance(i, _Chunks)}) == 1
    child = multiprocessing.get_context("fork").Process(target=_read_all_items, args=(fs,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert all(f.all() for f in flags)  # seen here, in the parent, without reading anything
    import pickle

    copy = pickle.loads(pickle.dumps(fs))  # a spawned worker's copy: private flags, values intact
    assert_item(copy[item_id(17)], 17)
