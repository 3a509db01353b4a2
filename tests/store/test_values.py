"""Values a field cannot hold are refused, never stored changed: NaN/inf, float16 overflow,
integers that would wrap, boxes outside the image."""

import base64
import re

import numpy as np
import pytest

from lighthead.store import Field, StoreError, open_store
from lighthead.store.importers import import_npz, import_precomp, import_tsv
from tests.store.test_importers import make_npz, make_precomp, tsv_rows, write_tsv

HINT = "--dtype float32"


@pytest.mark.parametrize(
    "field, value, match",
    [
        (Field("f", (3,)), [1.0, np.nan, 2.0], "NaN or inf"),
        (Field("f", (3,), "float32"), np.array([1.0, -np.inf, 2.0]), "NaN or inf"),
        (Field("f", (3,)), np.array([1.0, 70000.0, 2.0], np.float32), "overflows float16"),
        (Field("f", (3,)), np.array([1.0, -65520.0, 2.0], np.float64), "overflows float16"),
        (Field("f", (2,), "float32"), np.array([1.0, 1e39]), "overflows float32"),
        (Field("n", (), "int32"), 5_000_000_000, "does not fit int32"),
        (Field("n", (2,), "int32"), np.array([1, -(2**31) - 1], np.int64), "does not fit int32"),
        (Field("u", (None,), "uint8"), np.array([3, -1, 4]), "does not fit uint8"),
        (Field("u", (), "uint16"), np.int64(70000), "does not fit uint16"),
        (Field("s", (), "int8"), np.uint8(200), "does not fit int8"),
    ],
)
def test_writer_refuses_values_it_would_change(store, field, value, match):
    with store.writer("x/y", [field], fsync=False) as w:
        with pytest.raises(StoreError, match=r"id 'a', field '\w': .*" + match):
            w.add("a", {field.name: value})
        assert w.add("b", {field.name: np.zeros(3 if field.variable else field.shape, dtype=np.int8)})
    assert store["x/y"].ids == ["b"]


def test_float16_overflow_names_the_float32_option(store):
    with store.writer("x/y", [Field("f", (2,))], fsync=False) as w:
        with pytest.raises(StoreError, match=re.escape(HINT)):
            w.add("a", {"f": [65520.0, 0]})
        assert w.add("b", {"f": [65504.0, -65504.0]})  # the largest float16 is fine
    assert store["x/y"]["b"]["f"].tolist() == [65504.0, -65504.0]


def test_ints_that_fit_are_stored_exactly(store):
    fields = [Field("i", (), "int32"), Field("u", (None,), "uint8")]
    with store.writer("x/y", fields, fsync=False) as w:
        w.add("a", {"i": np.int64(2**31 - 1), "u": np.array([0, 255], np.int64)})
    got = store["x/y"]["a"]
    assert int(got["i"]) == 2**31 - 1 and got["u"].tolist() == [0, 255]


def tsv_line(rows, k, **change):
    r, boxes, feats = rows[k]
    r = dict(r)
    if "boxes" in change:
        r["boxes"] = base64.b64encode(np.asarray(change.pop("boxes"), np.float32)).decode()
    if "features" in change:
        r["features"] = base64.b64encode(np.asarray(change.pop("features"), np.float32)).decode()
    r.update(change)
    return r, boxes, feats


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(image_w=5_000_000_000), r"x.tsv:2: id '1001', field 'image_w': .*does not fit int32"),
        (dict(features=[[np.nan] * 8, [0] * 8]), r"x.tsv:2: id '1001', field 'features': .*NaN or inf"),
        (
            dict(features=[[1e5] * 8, [0] * 8]),
            r"x.tsv:2: id '1001', field 'features': .*overflows float16.*--dtype float32",
        ),
        (
            dict(boxes=[[0, 0, 10, 10], [5, 5, 700, 20]]),
            r"x.tsv:2: box 1 \[5, 5, 700, 20\] is outside the 640 x 479 image",
        ),
        (dict(boxes=[[0, 0, 10, 10], [5, -3, 7, 20]]), r"x.tsv:2: box 1 .* is outside"),
        (dict(boxes=[[0, 0, 10, 10], [9, 5, 7, 20]]), r"x.tsv:2: box 1 .* is outside"),  # x2 < x1
        (dict(boxes=[[0, 0, 10, 10], [np.nan, 5, 7, 20]]), r"x.tsv:2: box 1 .* is outside"),
        (dict(image_h=0), r"x.tsv:2: image size 640 x 0"),
    ],
)
def test_tsv_values_are_checked_with_file_and_line(tmp_path, change, match):
    rows = list(tsv_rows(3))
    rows[1] = tsv_line(rows, 1, **change)
    write_tsv(tmp_path / "x.tsv", rows)
    with pytest.raises(StoreError, match=match):
        import_tsv(tmp_path / "x.tsv", tmp_path / "st")


def test_tsv_float32_keeps_large_values(tmp_path):
    rows = list(tsv_rows(3))
    rows[1] = tsv_line(rows, 1, features=[[1e5] * 8, [-3e6] * 8])
    write_tsv(tmp_path / "x.tsv", rows)
    assert import_tsv(tmp_path / "x.tsv", tmp_path / "st", dtype="float32") == 3
    feats = open_store(tmp_path / "st")["regions/butd-tsv"]["1001"]["features"]
    assert feats[0, 0] == 1e5 and feats[1, 0] == -3e6


def test_npz_values_are_checked_with_file(tmp_path):
    make_npz(tmp_path / "npz", n=3, transpose_last=False)
    z = dict(np.load(tmp_path / "npz" / "1001.npz", allow_pickle=True))
    bad = dict(z, image_w=np.int64(5_000_000_000))
    np.savez(tmp_path / "npz" / "1001.npz", **bad)
    with pytest.raises(StoreError, match=r"1001.npz: id '1001', field 'image_w': .*does not fit int32"):
        import_npz(tmp_path / "npz", tmp_path / "st")
    x = z["x"].copy()
    x[0, 0] = np.inf
    np.savez(tmp_path / "npz" / "1001.npz", **dict(z, x=x))
    with pytest.raises(StoreError, match=r"1001.npz: id '1001', field 'features': .*NaN or inf"):
        import_npz(tmp_path / "npz", tmp_path / "st")
    bbox = z["bbox"].copy()
    bbox[0, 2] = 1000.0
    np.savez(tmp_path / "npz" / "1001.npz", **dict(z, bbox=bbox))
    with pytest.raises(StoreError, match=r"1001.npz: box 0 .* is outside the 640 x 479 image"):
        import_npz(tmp_path / "npz", tmp_path / "st")


@pytest.mark.parametrize(
    "value, match",
    [
        (np.nan, r"dev_ims.npy: item 2 \(id 'dev/2'\): .*NaN or inf"),
        (-1e6, r"dev_ims.npy: item 2 \(id 'dev/2'\): .*overflows float16.*--dtype float32"),
    ],
)
def test_precomp_values_are_checked_before_writing(tmp_path, value, match):
    make_precomp(tmp_path / "pre")
    ims = np.load(tmp_path / "pre" / "dev_ims.npy")
    ims[2, 1, 3] = value
    np.save(tmp_path / "pre" / "dev_ims.npy", ims)
    with pytest.raises(StoreError, match=match):
        import_precomp(tmp_path / "pre", tmp_path / "st")
    assert not (tmp_path / "st").exists()
    if not np.isnan(value):
        assert import_precomp(tmp_path / "pre", tmp_path / "st", dtype="float32") == 7
        assert open_store(tmp_path / "st")["regions/precomp"]["dev/2"]["features"][1, 3] == value
