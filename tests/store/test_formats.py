"""Each import format on a file written the way its tool writes it, and each export read the way
its consumer reads it. The writers below follow the tools' own code (named per fixture): field
names, orders, dtypes, base64, line ends and pickled dicts as they produce them."""

import base64
import csv
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from lighthead.store import StoreError, open_store
from lighthead.store.exporters import export_npz, export_tsv
from lighthead.store.importers import import_npz, import_tsv, import_vinvl
from tests.conftest_helpers import LXMERT_FIELDS, lxmert_load_obj_tsv


def regions(n_images=4, d=16, seed=0, w=64, h=48):
    """Per image: (id, w, h, boxes [n, 4] f32, features [n, D] f32, objects [n] i64, conf [n] f32,
    attrs [n] i64, attr conf [n] f32), n = 1..4."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        n = 1 + i % 4
        xy = rng.uniform(0, [w, h, w, h], (n, 4))
        boxes = np.concatenate([np.minimum(xy[:, :2], xy[:, 2:]), np.maximum(xy[:, :2], xy[:, 2:])], 1)
        out.append(
            (
                f"COCO_train2014_{i:012d}",
                w + i,
                h,
                boxes.astype(np.float32),
                rng.standard_normal((n, d)).astype(np.float32),
                rng.integers(0, 1600, n),
                rng.uniform(0, 1, n).astype(np.float32),
                rng.integers(0, 400, n),
                rng.uniform(0, 1, n).astype(np.float32),
            )
        )
    return out


def write_lxmert_tsv(path, data):
    """As py-bottom-up-attention's detectron2_mscoco_proposal_maxnms.py `dump_features` writes:
    csv.DictWriter on a text file opened with 'a', each array base64-encoded then decoded."""
    with open(path, "a") as tsvfile:
        writer = csv.DictWriter(tsvfile, delimiter="\t", fieldnames=LXMERT_FIELDS)
        for img_id, w, h, boxes, feats, obj, conf, attr, aconf in data:
            writer.writerow(
                {
                    "img_id": img_id,
                    "img_h": h,
                    "img_w": w,
                    "objects_id": base64.b64encode(obj).decode(),
                    "objects_conf": base64.b64encode(conf).decode(),
                    "attrs_id": base64.b64encode(attr).decode(),
                    "attrs_conf": base64.b64encode(aconf).decode(),
                    "num_boxes": len(boxes),
                    "boxes": base64.b64encode(boxes).decode(),
                    "features": base64.b64encode(feats).decode(),
                }
            )


def check_item(item, w, h, boxes, feats, obj, conf, attr=None, aconf=None):
    n = int(item["num_boxes"])
    assert (int(item["image_w"]), int(item["image_h"]), n) == (w, h, len(boxes))
    assert np.array_equal(item["boxes"][:n], boxes) and np.array_equal(item["features"][:n], feats)
    assert np.array_equal(item["object_ids"][:n], obj) and np.array_equal(item["object_scores"][:n], conf)
    if attr is not None:
        assert np.array_equal(item["attr_ids"][:n], attr) and np.array_equal(item["attr_scores"][:n], aconf)


def test_lxmert_tsv_import_keeps_objects_and_attributes(tmp_path):
    data = regions()
    write_lxmert_tsv(tmp_path / "train2014_obj36.tsv", data)
    assert b"\r\n" in (tmp_path / "train2014_obj36.tsv").read_bytes()  # csv's line ends, as the tool's file has
    assert import_tsv(tmp_path / "train2014_obj36.tsv", tmp_path / "st", dtype="float32") == len(data)
    fs = open_store(tmp_path / "st")["regions/butd-tsv"]
    assert fs.fields["object_ids"].dtype == "int32" and fs.attrs["imported_from"] == "tsv (10 fields)"
    for img_id, *values in data:
        check_item(fs[img_id], *values)  # image_w/image_h from img_w/img_h: height first in this layout


def test_tsv_layouts_are_told_by_field_count(tmp_path):
    write_lxmert_tsv(tmp_path / "a.tsv", regions(2))
    lines = (tmp_path / "a.tsv").read_bytes().split(b"\r\n")
    (tmp_path / "eight.tsv").write_bytes(b"\t".join(lines[0].split(b"\t")[:8]) + b"\r\n")
    with pytest.raises(StoreError, match=r"eight.tsv:1: 8 tab-separated fields, expected 6 .* or 10 "):
        import_tsv(tmp_path / "eight.tsv", tmp_path / "st")
    (tmp_path / "mixed").mkdir()
    write_lxmert_tsv(tmp_path / "mixed" / "a.tsv", regions(2))
    (tmp_path / "mixed" / "b.tsv").write_bytes(b"9\t640\t480\t1\tAAAA\tAAAA\r\n")
    with pytest.raises(StoreError, match=r"b.tsv: 6 fields per line, but a.tsv has 10"):
        import_tsv(tmp_path / "mixed", tmp_path / "st")
    assert not (tmp_path / "st").exists()


def test_tsv_export_is_what_lxmert_reads_and_round_trips(tmp_path):
    data = regions(5)
    write_lxmert_tsv(tmp_path / "in.tsv", data)
    import_tsv(tmp_path / "in.tsv", tmp_path / "st", dtype="float32")
    out = export_tsv(tmp_path / "st", tmp_path / "out.tsv", "regions/butd-tsv")
    assert out.read_bytes() == (tmp_path / "in.tsv").read_bytes()  # byte for byte what the tool wrote
    for item, (img_id, w, h, _boxes, feats, obj, _conf, _attr, _aconf) in zip(lxmert_load_obj_tsv(out), data):
        assert (item["img_id"], item["img_w"], item["img_h"]) == (img_id, w, h)
        assert np.array_equal(item["features"], feats) and np.array_equal(item["objects_id"], obj)
    import_tsv(out, tmp_path / "st2", dtype="float32")
    a, b = open_store(tmp_path / "st")["regions/butd-tsv"], open_store(tmp_path / "st2")["regions/butd-tsv"]
    assert a.ids == b.ids and a.fields == b.fields
    for i in a.ids:
        assert all(np.array_equal(a[i][k], b[i][k]) for k in a.fields)


def test_padded_fixed_set_exports_real_rows_and_round_trips(tmp_path):
    data = regions(4)
    write_lxmert_tsv(tmp_path / "in.tsv", data)
    import_tsv(tmp_path / "in.tsv", tmp_path / "st", boxes=4)  # float16, padded to 4 boxes
    fs = open_store(tmp_path / "st")["regions/butd-tsv"]
    assert fs["COCO_train2014_000000000000"]["object_ids"].tolist()[1:] == [-1, -1, -1]  # padding ids
    export_tsv(tmp_path / "st", tmp_path / "out.tsv", "regions/butd-tsv")
    assert [x["num_boxes"] for x in lxmert_load_obj_tsv(tmp_path / "out.tsv")] == [1, 2, 3, 4]
    import_tsv(tmp_path / "out.tsv", tmp_path / "st2", boxes=4)
    back = open_store(tmp_path / "st2")["regions/butd-tsv"]
    for i in fs.ids:
        assert all(np.array_equal(fs[i][k], back[i][k]) for k in fs.fields)


def test_six_field_sets_export_six_fields_unless_asked(tmp_path):
    from tests.store.test_importers import tsv_rows, write_tsv

    rows = list(tsv_rows(3))
    write_tsv(tmp_path / "in.tsv", rows)
    import_tsv(tmp_path / "in.tsv", tmp_path / "st", dtype="float32")
    export_tsv(tmp_path / "st", tmp_path / "six.tsv", "regions/butd-tsv")
    assert (tmp_path / "six.tsv").read_bytes() == (tmp_path / "in.tsv").read_bytes()
    export_tsv(tmp_path / "st", tmp_path / "ten.tsv", "regions/butd-tsv", layout="10")
    items = lxmert_load_obj_tsv(tmp_path / "ten.tsv")
    assert [x["img_h"] for x in items] == [r["image_h"] for r, _, _ in rows]
    assert not any(x["objects_id"].any() or x["objects_conf"].any() for x in items)  # none known: zeros


def write_bua_npz(folder, data, attributes=True):
    """As bottom-up-attention.pytorch's utils/extract_utils.py save_roi_features writes: the file
    is the image name without extension, `info` a dict that numpy pickles, sizes as Python ints."""
    folder.mkdir(parents=True, exist_ok=True)
    for img_id, w, h, boxes, feats, obj, conf, attr, aconf in data:
        info = {
            "image_id": img_id,
            "image_h": h,
            "image_w": w,
            "num_boxes": len(boxes),
            "objects_id": obj,
            "objects_conf": conf,
        }
        if attributes:
            info.update(attrs_id=attr, attrs_conf=aconf)
        np.savez_compressed(
            os.path.join(folder, img_id), x=feats, bbox=boxes, num_bbox=len(boxes), image_h=h, image_w=w, info=info
        )


def test_bua_npz_keeps_the_info_dicts_objects_and_attributes(tmp_path):
    data = regions()
    write_bua_npz(tmp_path / "npz", data)
    assert import_npz(tmp_path / "npz", tmp_path / "st", dtype="float32") == len(data)
    fs = open_store(tmp_path / "st")["regions/butd-npz"]
    for img_id, *values in data:
        check_item(fs[img_id], *values)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_npz_info_that_would_run_code_is_refused(tmp_path):
    write_bua_npz(tmp_path / "npz", regions(1))
    path = next((tmp_path / "npz").glob("*.npz"))
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    members["info.npy"] = header.getvalue() + pickle.dumps(np.array(_Boom(), dtype=object), protocol=3)
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(StoreError, match=r"refused to unpickle its info: it names posix.system"):
            import_npz(tmp_path / "npz", tmp_path / "st")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "st").exists()


def test_npz_export_is_bua_layout_and_round_trips(tmp_path):
    data = regions(3)
    write_bua_npz(tmp_path / "npz", data)
    import_npz(tmp_path / "npz", tmp_path / "st", dtype="float32")
    files = export_npz(tmp_path / "st", tmp_path / "out", "regions/butd-npz")
    assert sorted(p.name for p in files) == sorted(p.name for p in (tmp_path / "npz").glob("*.npz"))
    for p in files:  # what a bua.pytorch reader gets (it loads with allow_pickle=True)
        mine, theirs = np.load(p, allow_pickle=True), np.load(tmp_path / "npz" / p.name, allow_pickle=True)
        assert list(mine.keys()) == list(theirs.keys()) == ["x", "bbox", "num_bbox", "image_h", "image_w", "info"]
        for k in ("x", "bbox", "num_bbox", "image_h", "image_w"):
            assert np.array_equal(mine[k], theirs[k]) and mine[k].dtype == theirs[k].dtype
        a, b = mine["info"].item(), theirs["info"].item()
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    import_npz(tmp_path / "out", tmp_path / "st2", dtype="float32")
    x, y = open_store(tmp_path / "st")["regions/butd-npz"], open_store(tmp_path / "st2")["regions/butd-npz"]
    assert x.ids == y.ids and all(np.array_equal(x[i][k], y[i][k]) for i in x.ids for k in x.fields)


class Sized:
    """A target that knows image sizes (as a dataset store's image files give them)."""

    def __init__(self, sizes):
        self.sizes = sizes

    def match(self, source_id, where):
        return source_id.split("_", 1)[1]  # UNITER's "<prefix>_<id>"

    def check_size(self, item_id, w, h):
        return None

    def size(self, item_id):
        return self.sizes.get(item_id)


def write_uniter_npz(folder, data, prefix="nlvr2_"):
    """As UNITER's BUTD image tools/generate_npz.py save_to_npz writes: boxes normalised by the
    image size into norm_bb (x1, y1, x2, y2, w, h), confidence reshaped to [K, 1], all float16."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    soft = []
    for img_id, w, h, boxes, feats, obj, conf, _, _ in data:
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        sx, sy, sw, sh = boxes[:, 0] / float(w), boxes[:, 1] / float(h), bw / float(w), bh / float(h)
        norm = np.concatenate([v[:, None] for v in (sx, sy, sx + sw, sy + sh, sw, sh)], axis=1)
        scores = rng.uniform(0, 0.1, (len(boxes), 1601)).astype(np.float32)
        scores[np.arange(len(boxes)), obj + 1] = 0.9  # column 0 is the background
        soft.append(scores)
        np.savez_compressed(
            os.path.join(folder, prefix + img_id + ".npz"),
            norm_bb=norm.astype(np.float16),
            features=feats.astype(np.float16),
            conf=conf.astype(np.float64).reshape(-1, 1).astype(np.float16),
            soft_labels=scores.astype(np.float16),
        )
    return soft


def test_uniter_npz_boxes_come_back_to_pixels_with_the_image_size(tmp_path):
    data = regions()
    write_uniter_npz(tmp_path / "npz", data)
    with pytest.raises(StoreError, match=r"holds boxes relative to the image and not the image's size"):
        import_npz(tmp_path / "npz", tmp_path / "st")
    target = Sized({img_id: (w, h) for img_id, w, h, *_ in data})
    assert import_npz(tmp_path / "npz", tmp_path / "st", target=target) == len(data)
    fs = open_store(tmp_path / "st")["regions/butd-npz"]
    assert fs.attrs["imported_from"] == "npz (uniter)" and "attr_ids" not in fs.fields
    for img_id, w, h, boxes, feats, obj, conf, _, _ in data:
        item = fs[img_id]
        np.testing.assert_allclose(item["boxes"], boxes, atol=max(w, h) * 1e-3)  # float16 norm_bb
        assert np.array_equal(item["features"], feats.astype(np.float16))
        assert np.array_equal(item["object_ids"], obj)  # best non-background class
        assert np.array_equal(item["object_scores"], conf.astype(np.float16).astype(np.float32))


def write_vinvl(folder, data, names, *, inline=False, sizes="hw", three_columns=False, shuffle_labels=False):
    """As scene_graph_benchmark writes: tsv_writer rows ("\\t".join(map(str, row)) + "\\n") with a
    .lineidx of row offsets; predictions from convert_predictions_to_tsv ({"objects": [...],
    "relations": None}, rect/class/conf/attributes/attr_scores per object, "feature" with
    TEST.OUTPUT_FEATURE); features as Oscar reads them; sizes in <split>.hw.tsv."""
    folder.mkdir(parents=True, exist_ok=True)

    def tsv_writer(rows, path):
        idx = 0
        with open(path, "w") as fp, open(str(path)[: -len(".tsv")] + ".lineidx", "w") as fpidx:
            for row in rows:
                v = "{}\n".format("\t".join(map(str, row)))
                fp.write(v)
                fpidx.write(str(idx) + "\n")
                idx += len(v)

    feats_rows, label_rows, hw_rows = [], [], []
    for img_id, w, h, boxes, feats, obj, conf, attr, aconf in data:
        key = img_id.split("_")[-1]  # VinVL keys COCO images by number: "000000000001"
        objects = [
            {
                "rect": b.tolist(),
                "bbox_id": j,
                "class": names[0][o],
                "conf": float(c),
                "attributes": [names[1][a]],
                "attr_scores": [float(s)],
            }
            for j, (b, o, c, a, s) in enumerate(zip(boxes, obj, conf, attr, aconf))
        ]
        if inline:
            for o, f in zip(objects, feats):
                o["feature"] = base64.b64encode(f).decode("utf-8")
        label = {"objects": objects, "relations": None}
        if sizes == "labels":
            label.update(image_h=h, image_w=w)
        label_rows.append([key, json.dumps(label)])
        blob = base64.b64encode(feats).decode("utf-8")
        feats_rows.append(
            [key, len(boxes), blob] if three_columns else [key, json.dumps({"num_boxes": len(boxes), "features": blob})]
        )
        hw_rows.append([key, json.dumps([{"height": h, "width": w}])])
    if shuffle_labels:
        label_rows = label_rows[::-1]
    tsv_writer(label_rows, folder / "predictions.tsv")
    if not inline:
        tsv_writer(feats_rows, folder / "features.tsv")
    if sizes == "hw":
        tsv_writer(hw_rows, folder / "train.hw.tsv")


@pytest.fixture()
def vocab():
    objects, attributes = [f"obj{i}" for i in range(1600)], [f"attr{i}" for i in range(400)]
    lookup = {"object": {n: i for i, n in enumerate(objects)}, "attribute": {n: i for i, n in enumerate(attributes)}}
    return (objects, attributes), (lambda kind, name: lookup[kind].get(name, -1))


@pytest.mark.parametrize(
    "layout", [dict(), dict(three_columns=True, sizes="labels", shuffle_labels=True), dict(inline=True)]
)
def test_vinvl_tsvs(tmp_path, vocab, layout):
    names, to_id = vocab
    data = regions(5)
    write_vinvl(tmp_path / "vinvl", data, names, **layout)
    assert import_vinvl(tmp_path / "vinvl", tmp_path / "st", dtype="float32", names=to_id) == len(data)
    fs = open_store(tmp_path / "st")["regions/vinvl"]
    for img_id, *values in data:
        check_item(fs[img_id.split("_")[-1]], *values)


def test_vinvl_needs_sizes_and_a_true_lineidx(tmp_path, vocab):
    names, to_id = vocab
    write_vinvl(tmp_path / "v", regions(3), names, sizes=None)
    with pytest.raises(StoreError, match=r"features.tsv:1: no image size for '000000000000'"):
        import_vinvl(tmp_path / "v", tmp_path / "st", names=to_id)
    write_vinvl(tmp_path / "w", regions(3), names)
    idx = tmp_path / "w" / "features.lineidx"
    idx.write_text("0\n7\n9\n")
    with pytest.raises(StoreError, match=r"features.tsv:2: row 1 starts at byte \d+, its .lineidx says 7"):
        import_vinvl(tmp_path / "w", tmp_path / "st", names=to_id)
    assert len(open_store(tmp_path / "st")["regions/vinvl"]) == 1  # the row before stays stored


def test_vinvl_inline_features_of_differing_sizes_are_an_error(tmp_path, vocab):
    names, to_id = vocab
    write_vinvl(tmp_path / "v", regions(2)[1:], names, inline=True, sizes="labels")  # 2 boxes
    rows = (tmp_path / "v" / "predictions.tsv").read_text().splitlines()
    key, label = rows[0].split("\t")
    label = json.loads(label)
    label["objects"][0]["feature"] = base64.b64encode(np.ones(3, np.float32)).decode()
    (tmp_path / "v" / "predictions.tsv").write_text(f"{key}\t{json.dumps(label)}\n")
    (tmp_path / "v" / "predictions.lineidx").unlink()
    with pytest.raises(StoreError, match=r"predictions.tsv:1: the objects' \"feature\" sizes differ"):
        import_vinvl(tmp_path / "v", tmp_path / "st", names=to_id)


def test_vinvl_ids_given_twice_are_errors(tmp_path, vocab):
    names, to_id = vocab
    data = regions(3)
    write_vinvl(tmp_path / "v", data + data[:1], names)  # features and labels both repeat the first key
    with pytest.raises(
        StoreError,
        match=r"features.tsv:4: id '000000000000' is given twice \(first at "
        r".*features.tsv:1\)",
    ):
        import_vinvl(tmp_path / "v", tmp_path / "st", names=to_id)
    write_vinvl(tmp_path / "w", data, names, shuffle_labels=True)  # labels found through an index
    with open(tmp_path / "w" / "predictions.tsv", "a") as fh:
        fh.write((tmp_path / "w" / "predictions.tsv").read_text().splitlines()[0] + "\n")
    (tmp_path / "w" / "predictions.lineidx").unlink()
    with pytest.raises(
        StoreError,
        match=r"predictions.tsv:4: id '000000000002' is given twice \(first at "
        r".*predictions.tsv:1\)",
    ):
        import_vinvl(tmp_path / "w", tmp_path / "st2", names=to_id)
