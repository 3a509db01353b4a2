"""Import small generated precomp / TSV / npz inputs, export back, compare element by element."""

import base64
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from lighthead.store import StoreError, open_store, verify
from lighthead.store.exporters import export_npz, export_precomp, export_tsv
from lighthead.store.importers import import_npz, import_precomp, import_tsv
from lighthead.store.writer import KILL_ENV
from tests.store.helpers import ROOT, file_digests

CAPTIONS = [
    b"A man rides a horse .\n",
    "Un caf\u00e9 \u00e0 Paris\n".encode(),
    b"two dogs\r\n",
    b"  leading spaces and tabs\there\n",
    b"\xff not utf-8 at all\n",
]


def make_precomp(folder, splits=None, k=5, d=16, captions=CAPTIONS):
    splits = {"train": 4, "dev": 3} if splits is None else splits
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for s, n in splits.items():
        ims = np.random.default_rng(n).standard_normal((n, k, d)).astype(np.float32)
        np.save(folder / f"{s}_ims.npy", ims)
        caps = b"".join(captions[(i + j) % len(captions)] for i in range(n) for j in range(5))
        if s == "dev":
            caps = caps[:-1]  # no newline at the end of the file
        (folder / f"{s}_caps.txt").write_bytes(caps)
        data[s] = (ims, caps)
    return data


def test_precomp_round_trip_float32_is_exact(tmp_path):
    data = make_precomp(tmp_path / "pre")
    assert import_precomp(tmp_path / "pre", tmp_path / "st", dtype="float32", shard_items=3) == 7
    fs = open_store(tmp_path / "st")["regions/precomp"]
    assert sorted(fs.ids) == sorted(["train/0", "train/1", "train/2", "train/3", "dev/0", "dev/1", "dev/2"])
    assert fs["dev/1"]["captions"].tobytes() == b"".join(CAPTIONS[(1 + j) % 5] for j in range(5))
    files = export_precomp(tmp_path / "st", tmp_path / "out")
    assert sorted(p.name for p in files) == ["dev_caps.txt", "dev_ims.npy", "train_caps.txt", "train_ims.npy"]
    for s, (ims, caps) in data.items():
        back = np.load(tmp_path / "out" / f"{s}_ims.npy")
        assert back.dtype == np.float32 and np.array_equal(back, ims)
        assert (tmp_path / "out" / f"{s}_caps.txt").read_bytes() == caps
    assert not [p for p in os.listdir(tmp_path / "out") if ".tmp" in p]


def test_precomp_float16_default_and_rerun_adds_nothing(tmp_path):
    data = make_precomp(tmp_path / "pre")
    assert import_precomp(tmp_path / "pre", tmp_path / "st") == 7
    assert import_precomp(tmp_path / "pre", tmp_path / "st") == 0
    fs = open_store(tmp_path / "st")["regions/precomp"]
    assert fs.fields["features"].dtype == "float16"
    export_precomp(tmp_path / "st", tmp_path / "out")
    ims, caps = data["train"]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "train_ims.npy"), ims, rtol=1e-3, atol=1e-3)
    assert (tmp_path / "out" / "train_caps.txt").read_bytes() == caps


def tsv_rows(n, d=8, fixed=None):
    rng = np.random.default_rng(0)
    for i in range(n):
        k = fixed or 1 + i % 4
        xy = rng.uniform(0, 100, (k, 4))
        boxes = np.concatenate([np.minimum(xy[:, :2], xy[:, 2:]), np.maximum(xy[:, :2], xy[:, 2:])], axis=1).astype(
            np.float32
        )  # (k, 4) x1 <= x2, y1 <= y2
        feats = rng.standard_normal((k, d)).astype(np.float32)
        yield (
            {
                "image_id": str(1000 + i),
                "image_w": 640,
                "image_h": 480 - i,
                "num_boxes": k,
                "boxes": base64.b64encode(boxes).decode("ascii"),
                "features": base64.b64encode(feats).decode("ascii"),
            },
            boxes,
            feats,
        )


def write_tsv(path, rows):
    """As generate_tsv.py writes it: csv.DictWriter, tab-delimited, default \\r\\n line ends."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, delimiter="\t", fieldnames=list(rows[0][0]))
        for r, _, _ in rows:
            w.writerow(r)


def check_regions(fs, rows, dtype=np.float16):
    assert len(fs) == len(rows)
    for r, boxes, feats in rows:
        item = fs[r["image_id"]]
        assert np.array_equal(item["boxes"], boxes) and item["boxes"].dtype == np.float32
        assert np.array_equal(item["features"], feats.astype(dtype))
        assert (item["image_w"], item["image_h"], item["num_boxes"]) == (r["image_w"], r["image_h"], len(boxes))


def test_tsv_variable_boxes_from_split_files(tmp_path):
    rows = list(tsv_rows(9))
    (tmp_path / "tsv").mkdir()
    write_tsv(tmp_path / "tsv" / "train.tsv.0", rows[:5])
    write_tsv(tmp_path / "tsv" / "train.tsv.1", rows[5:])
    seen = []
    assert import_tsv(tmp_path / "tsv", tmp_path / "st", shard_items=4, progress=lambda a, b: seen.append((a, b))) == 9
    fs = open_store(tmp_path / "st")["regions/butd-tsv"]
    assert fs.fields["features"].shape == (None, 8) and fs.fields["features"].dtype == "float16"
    check_regions(fs, rows)
    assert seen[-1][0] == seen[-1][1] > 0


def test_tsv_fixed_boxes_float32(tmp_path):
    rows = list(tsv_rows(5, fixed=3))
    write_tsv(tmp_path / "x.tsv", rows)
    import_tsv(tmp_path / "x.tsv", tmp_path / "st", dtype="float32", boxes=3)
    fs = open_store(tmp_path / "st")["regions/butd-tsv"]
    assert fs.fields["features"].shape == (3, 8)
    check_regions(fs, rows, np.float32)
    write_tsv(tmp_path / "x2.tsv", list(tsv_rows(2)))  # 1 box, then 2
    with pytest.raises(StoreError, match=r"x2.tsv:2: 2 boxes, but the import fixes boxes=1"):
        import_tsv(tmp_path / "x2.tsv", tmp_path / "st2", boxes=1)


def test_tsv_fixed_boxes_pads_fewer_as_extraction_does(tmp_path):
    rows = list(tsv_rows(4))  # 1, 2, 3 and 4 boxes
    write_tsv(tmp_path / "x.tsv", rows)
    import_tsv(tmp_path / "x.tsv", tmp_path / "st", dtype="float32", boxes=4)
    fs = open_store(tmp_path / "st")["regions/butd-tsv"]
    for r, boxes, feats in rows:
        item, n = fs[r["image_id"]], len(boxes)
        assert item["num_boxes"] == n and item["features"].shape == (4, 8)
        assert np.array_equal(item["boxes"][:n], boxes) and np.array_equal(item["features"][:n], feats)
        assert not item["boxes"][n:].any() and not item["features"][n:].any()  # zero rows after the real ones


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda line: line.replace(b"\t", b"\t\t", 1), r"bad.tsv:3: 7 tab-separated fields, expected 6"),
        (lambda line: line[:-20] + b"!!!!" + line[-16:], r"bad.tsv:3: field features is not valid base64"),
        (lambda line: b"\t".join(line.split(b"\t")[:3] + [b"x"] + line.split(b"\t")[4:]), r"bad.tsv:3: num_boxes"),
        (
            lambda line: b"\t".join(line.split(b"\t")[:4] + [base64.b64encode(b"abcdef")] + line.split(b"\t")[5:]),
            r"bad.tsv:3: field boxes holds 6 bytes",
        ),
        (
            lambda line: b"\t".join(line.split(b"\t")[:1] + [b"1e400"] + line.split(b"\t")[2:]),
            r"bad.tsv:3: image_w b'1e400' is not a non-negative integer",
        ),  # float inf, not an OverflowError
    ],
)
def test_tsv_errors_name_file_and_line_and_keep_data(tmp_path, damage, match):
    good = list(tsv_rows(6))
    write_tsv(tmp_path / "good.tsv", good[:2])
    import_tsv(tmp_path / "good.tsv", tmp_path / "st")
    before = file_digests(tmp_path / "st")
    write_tsv(tmp_path / "bad.tsv", good[2:])
    lines = (tmp_path / "bad.tsv").read_bytes().split(b"\r\n")
    lines[2] = damage(lines[2])
    (tmp_path / "bad.tsv").write_bytes(b"\r\n".join(lines))
    with pytest.raises(StoreError, match=match):
        import_tsv(tmp_path / "bad.tsv", tmp_path / "st")
    after = file_digests(tmp_path / "st")
    assert all(after.get(f) == h for f, h in before.items() if ".lock" not in f and "manifest" not in f)
    assert verify(tmp_path / "st") == []
    fs = open_store(tmp_path / "st")["regions/butd-tsv"]
    assert fs.ids == ["1000", "1001", "1002", "1003"]  # lines before the bad one are kept


def test_killed_tsv_import_resumes(tmp_path):
    rows = list(tsv_rows(10))
    write_tsv(tmp_path / "x.tsv", rows)
    code = (
        f"from lighthead.store.importers import import_tsv; "
        f"import_tsv({str(tmp_path / 'x.tsv')!r}, {str(tmp_path / 'st')!r}, shard_items=3)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), KILL_ENV: "manifest_written"}
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT)
    assert p.returncode == -9
    assert len(open_store(tmp_path / "st")["regions/butd-tsv"]) == 3 and verify(tmp_path / "st") == []
    assert import_tsv(tmp_path / "x.tsv", tmp_path / "st", shard_items=3) == 7
    check_regions(open_store(tmp_path / "st")["regions/butd-tsv"], rows)


def make_npz(folder, n=4, d=8, transpose_last=True):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (r, boxes, feats) in enumerate(tsv_rows(n, d)):
        x = feats.T if transpose_last and i == n - 1 else feats  # an older [D, K] dump
        np.savez_compressed(
            folder / f"{r['image_id']}.npz",
            x=x,
            bbox=boxes,
            num_bbox=len(boxes),
            image_h=r["image_h"],
            image_w=r["image_w"],
            info={
                "image_id": r["image_id"],
                "num_boxes": len(boxes),
                "objects_id": np.arange(len(boxes)),
                "objects_conf": np.ones(len(boxes), np.float32),
            },
        )
        out.append((r, boxes, feats))
    return out


def test_npz_folder(tmp_path):
    rows = make_npz(tmp_path / "npz")
    assert import_npz(tmp_path / "npz", tmp_path / "st", dtype="float32") == 4
    check_regions(open_store(tmp_path / "st")["regions/butd-npz"], rows, np.float32)


def test_npz_errors(tmp_path):
    make_npz(tmp_path / "npz", n=2)
    np.savez(tmp_path / "npz" / "1005.npz", x=np.zeros((2, 8)), num_bbox=2, image_w=1, image_h=1)
    with pytest.raises(StoreError, match=r"1005.npz: missing key 'bbox'"):
        import_npz(tmp_path / "npz", tmp_path / "st")
    np.savez(tmp_path / "npz" / "1005.npz", x=np.zeros((1, 8)), bbox=np.zeros((1, 4)), num_bbox=5, image_w=1, image_h=1)
    with pytest.raises(StoreError, match=r"1005.npz: num_bbox is 5, but bbox has 1 rows"):
        import_npz(tmp_path / "npz", tmp_path / "st")
    (tmp_path / "npz" / "1005.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(StoreError, match=r"1005.npz: not a readable .npz"):
        import_npz(tmp_path / "npz", tmp_path / "st")
    assert len(open_store(tmp_path / "st")["regions/butd-npz"]) == 2


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda f: np.save(f / "dev_ims.npy", np.zeros((3, 80), np.float32)), r"dev_ims.npy: shape \(3, 80\)"),
        (lambda f: (f / "dev_ims.npy").write_bytes((f / "dev_ims.npy").read_bytes()[:300]), r"dev_ims.npy: unreadable"),
        (lambda f: (f / "dev_caps.txt").write_bytes(b"one\ntwo\n"), r"dev_caps.txt: 2 lines for 3 images"),
        (lambda f: (f / "dev_caps.txt").unlink(), r"dev_caps.txt: missing"),
        # damaged .npy headers: numpy raises tokenize.TokenError, OverflowError, ... for these
        (
            lambda f: (f / "dev_ims.npy").write_bytes((f / "dev_ims.npy").read_bytes().replace(b"}", b" ", 1)),
            r"dev_ims.npy: unreadable .npy",
        ),
        (
            lambda f: (f / "dev_ims.npy").write_bytes(
                (f / "dev_ims.npy").read_bytes().replace(b"(3, 5, 16)", b"(9999999999999999999,)", 1)
            ),
            r"dev_ims.npy: unreadable .npy",
        ),
        (
            lambda f: (f / "dev_ims.npy").write_bytes(
                (f / "dev_ims.npy").read_bytes().replace(b"(3, 5, 16)", b"(-3, 5, 16)", 1)
            ),
            r"dev_ims.npy: unreadable .npy",
        ),
        (lambda f: (f / "dev_ids.txt").write_bytes(b"a\nb\xff\nc\n"), r"dev_ids.txt:2: not UTF-8 text \(byte 0xff"),
        (lambda f: (f / "dev_ids.txt").write_bytes(b"a\nb\x00c\nd\n"), r"dev_ids.txt:2: the id holds a NUL character"),
    ],
)
def test_precomp_errors_write_nothing(tmp_path, damage, match):
    make_precomp(tmp_path / "pre")
    damage(tmp_path / "pre")
    with pytest.raises(StoreError, match=match):
        import_precomp(tmp_path / "pre", tmp_path / "st")
    assert not (tmp_path / "st").exists()  # everything is checked before the store is touched


def test_export_errors(tmp_path):
    write_tsv(tmp_path / "x.tsv", list(tsv_rows(3)))
    import_tsv(tmp_path / "x.tsv", tmp_path / "st")
    with pytest.raises(StoreError, match="fixed"):
        export_precomp(tmp_path / "st", tmp_path / "out", "regions/butd-tsv")
    write_tsv(tmp_path / "y.tsv", list(tsv_rows(3, fixed=2)))
    import_tsv(tmp_path / "y.tsv", tmp_path / "st", "regions/two", boxes=2)
    with pytest.raises(StoreError, match="'1000' is not '<split>/<index>'"):
        export_precomp(tmp_path / "st", tmp_path / "out", "regions/two")
    files = export_precomp(tmp_path / "st", tmp_path / "out", "regions/two", split="test")
    assert [p.name for p in files] == ["test_ims.npy"] and np.load(files[0]).shape == (3, 2, 8)


def test_export_precomp_refuses_a_dtype_that_would_change_the_values(tmp_path):
    make_precomp(tmp_path / "pre")
    ims = np.load(tmp_path / "pre" / "train_ims.npy")
    ims[2, 0, 0] = 1e5  # fits float32, not float16
    np.save(tmp_path / "pre" / "train_ims.npy", ims)
    import_precomp(tmp_path / "pre", tmp_path / "st", dtype="float32")
    for dtype in ("int8", "uint8", "int64", "bool", "complex64"):  # int8 wrote zeros
        with pytest.raises(ValueError, match=rf"export dtype '{dtype}' is not supported: .*float16, float32, float64"):
            export_precomp(tmp_path / "st", tmp_path / "out", dtype=dtype)
    with pytest.raises(StoreError, match=r"id 'train/2', field 'features': value 100000 overflows float16"):
        export_precomp(tmp_path / "st", tmp_path / "out", dtype="float16")
    assert not (tmp_path / "out").exists()  # dev was written first: removed with the folder
    files = export_precomp(tmp_path / "st", tmp_path / "out", dtype="float64")
    assert np.array_equal(np.load(tmp_path / "out" / "train_ims.npy"), ims) and len(files) == 4


def test_a_failed_export_leaves_no_tmp_and_no_partial_folder(tmp_path):
    rows = list(tsv_rows(3))
    rows[2] = ({**rows[2][0], "image_id": "a/b"},) + rows[2][1:]  # cannot be a file name: fails after two files
    write_tsv(tmp_path / "x.tsv", rows)
    import_tsv(tmp_path / "x.tsv", tmp_path / "st")
    with pytest.raises(StoreError, match="'a/b' cannot be a file name"):
        export_npz(tmp_path / "st", tmp_path / "new" / "npz", "regions/butd-tsv")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "1000.npz").write_bytes(b"an earlier export")
    with pytest.raises(StoreError):
        export_npz(tmp_path / "st", tmp_path / "old", "regions/butd-tsv")
    assert os.listdir(tmp_path / "old") == ["1000.npz"]  # as it was: nothing new, no .tmp
    assert (tmp_path / "old" / "1000.npz").read_bytes() == b"an earlier export"
    store = open_store(tmp_path / "st")
    with store.writer("regions/tab", store["regions/butd-tsv"].fields.values(), fsync=False) as w:
        w.add("1000", store["regions/butd-tsv"]["1000"])
        w.add("x\ty", store["regions/butd-tsv"]["1001"])
    with pytest.raises(StoreError, match="holds a tab"):
        export_tsv(tmp_path / "st", tmp_path / "t" / "out.tsv", "regions/tab")
    assert not (tmp_path / "t").exists()
    with pytest.raises(StoreError, match="old: is a directory; export tsv writes one file"):
        export_tsv(tmp_path / "st", tmp_path / "old", "regions/butd-tsv")
    assert not list(tmp_path.glob("*.tmp"))


def test_failed_import_leaves_nothing_behind(tmp_path):
    (tmp_path / "bad.tsv").write_text("1\t2\t3\n")
    with pytest.raises(StoreError, match="bad.tsv:1"):
        import_tsv(tmp_path / "bad.tsv", tmp_path / "st")
    assert not (tmp_path / "st").exists()
    rows = list(tsv_rows(3))
    rows[0] = ({**rows[0][0], "image_w": 5_000_000_000},) + rows[0][1:]
    write_tsv(tmp_path / "first-bad.tsv", rows)  # fails on the first item, after the writer opened
    with pytest.raises(StoreError, match="first-bad.tsv:1"):
        import_tsv(tmp_path / "first-bad.tsv", tmp_path / "st")
    assert not (tmp_path / "st").exists()
    write_tsv(tmp_path / "good.tsv", list(tsv_rows(2)))
    import_tsv(tmp_path / "good.tsv", tmp_path / "st")
    before = file_digests(tmp_path / "st")
    with pytest.raises(StoreError):
        import_tsv(tmp_path / "first-bad.tsv", tmp_path / "st", "regions/new")
    assert open_store(tmp_path / "st").names() == ["regions/butd-tsv"]  # nothing half-made
    assert not (tmp_path / "st" / "regions" / "new").exists()
    after = file_digests(tmp_path / "st")
    assert {f: h for f, h in after.items() if ".lock" not in f} == {f: h for f, h in before.items() if ".lock" not in f}


def test_an_id_given_twice_is_an_error_naming_both_lines(tmp_path):
    rows = list(tsv_rows(4))
    rows[2] = ({**rows[2][0], "image_id": rows[0][0]["image_id"]},) + rows[2][1:]
    write_tsv(tmp_path / "dup.tsv", rows)
    with pytest.raises(StoreError, match=r"dup.tsv:3: id '1000' is given twice \(first at .*dup.tsv:1\)"):
        import_tsv(tmp_path / "dup.tsv", tmp_path / "st")
    assert open_store(tmp_path / "st")["regions/butd-tsv"].ids == ["1000", "1001"]  # the rows before are kept
    with pytest.raises(StoreError, match=r"dup.tsv:3: id '1000' is given twice"):  # and a rerun says it again
        import_tsv(tmp_path / "dup.tsv", tmp_path / "st")
    (tmp_path / "parts").mkdir()  # across the numbered parts of one source too
    write_tsv(tmp_path / "parts" / "x.tsv.0", rows[:2])
    write_tsv(tmp_path / "parts" / "x.tsv.1", rows[:1])
    with pytest.raises(StoreError, match=r"x.tsv.1:1: id '1000' is given twice \(first at .*x.tsv.0:1\)"):
        import_tsv(tmp_path / "parts", tmp_path / "st2")


def test_a_nul_in_an_id_is_refused_naming_the_line(tmp_path):
    rows = list(tsv_rows(3))
    rows[1] = ({**rows[1][0], "image_id": "10\x0001"},) + rows[1][1:]
    write_tsv(tmp_path / "nul.tsv", rows)
    with pytest.raises(StoreError, match=r"nul.tsv:2: the image id holds a NUL character"):
        import_tsv(tmp_path / "nul.tsv", tmp_path / "st")
