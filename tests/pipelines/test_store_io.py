"""Imports that train and imports into a dataset store (pipelines/store_io.py)."""

from __future__ import annotations

import base64
import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from lighthead.extract.vocab import VocabConfig, Vocabulary
from lighthead.pipelines.datasets import load_records
from lighthead.pipelines.datasets.base import Record
from lighthead.pipelines.features import ExtractOptions
from lighthead.pipelines.features.words import run_words
from lighthead.pipelines.store_io import export_features, import_features, vg_names
from lighthead.pipelines.training.loop import train
from lighthead.store import StoreError, open_store
from tests.conftest_helpers import build_retrieval_store
from tests.pipelines.datasets.fixtures import karpathy
from tests.store.test_formats import LXMERT_FIELDS, write_uniter_npz

TINY = {"embed_size": "8", "word_dim": "8", "batch_size": "16", "val_images": "0"}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return build_retrieval_store(
        tmp_path_factory.mktemp("syn") / "store",
        n_images=30,
        splits=(20, 5, 5),
        region_dim=16,
        num_regions=36,
        global_dim=16,
        token_dim=8,
        seed=3,
    )


def test_exported_precomp_is_split_with_captions_in_training_order(synthetic, tmp_path):
    files = export_features("precomp", synthetic, tmp_path / "pre")
    assert sorted(p.name for p in files) == sorted(
        f"{s}_{k}" for s in ("train", "dev", "test") for k in ("ims.npy", "caps.txt", "ids.txt")
    )
    store = open_store(synthetic)
    records = store.read_json("records")
    fs = store["regions/butd-r101-vg-36"]
    for precomp, split in (("train", "train"), ("dev", "val"), ("test", "test")):
        recs = [r for r in records if r["split"] == split]
        ims = np.load(tmp_path / "pre" / f"{precomp}_ims.npy")
        assert ims.dtype == np.float32 and ims.shape == (len(recs), 36, 16)
        assert np.array_equal(ims, fs.get_batch([r["image_id"] for r in recs], ["features"])["features"])
        lines = (tmp_path / "pre" / f"{precomp}_caps.txt").read_text().splitlines()
        assert lines == [t for r in recs for t in r["texts"][:5]]  # caption j of image j // 5
        assert (tmp_path / "pre" / f"{precomp}_ids.txt").read_text().split() == [r["image_id"] for r in recs]


def test_precomp_import_trains_as_the_store_it_came_from(synthetic, tmp_path):
    export_features("precomp", synthetic, tmp_path / "pre")
    summary = import_features("precomp", tmp_path / "pre", tmp_path / "imported")
    assert (summary.feature_set, summary.added, summary.records, summary.dataset) == (
        "regions/butd-r101-vg-36",
        30,
        30,
        "pre",
    )
    imported = open_store(tmp_path / "imported")
    records = imported.read_json("records")
    assert [r["split"] for r in records] == ["val"] * 5 + ["test"] * 5 + ["train"] * 20  # dev -> val
    original = open_store(synthetic).read_json("records")
    by_split = {s: [r["texts"] for r in original if r["split"] == s] for s in ("train", "val", "test")}
    assert all([r["texts"] for r in records if r["split"] == s] == texts for s, texts in by_split.items())
    vocab = Vocabulary.build([t for t in by_split["train"] for t in t], VocabConfig(threshold=4))
    assert imported.read_json("vocab") == vocab.to_json()
    assert imported["words/vocab"]["train/3#2"]["word_ids"].tolist() == vocab.encode(by_split["train"][3][2])

    # The original store with the same vocabulary (an extraction's threshold) trains identically.
    twin = tmp_path / "twin"
    shutil.copytree(synthetic, twin)
    shutil.rmtree(twin / "words")
    (twin / "meta" / "vocab.json").unlink()
    run_words([Record.from_json(r) for r in original], open_store(twin), ExtractOptions(progress=False))
    a = train("scan", tmp_path / "imported", tmp_path / "a", epochs=1, overrides=TINY, progress=False)
    b = train("scan", twin, tmp_path / "b", epochs=1, overrides=TINY, progress=False)
    assert a["test"]["n_images"] == 5 and a["history"][0]["loss"] == b["history"][0]["loss"]
    assert a["test"]["rsum"] == b["test"]["rsum"]
    c = train(
        "casc",
        tmp_path / "imported",
        tmp_path / "c",
        epochs=1,
        overrides={**TINY, "label_hidden": "8", "num_labels": "5"},
        progress=False,
    )
    assert imported.has_json("labels/nouns-5") and c["test"]["n_images"] == 5  # labels built as for extraction
    # VSE++ reads global CNN vectors by default; on a precomp store it mean-pools the regions, with no --set.
    d = train("vsepp", tmp_path / "imported", tmp_path / "d", epochs=1, overrides=TINY, progress=False)
    assert json.loads((tmp_path / "d" / "config.json").read_text())["config"]["image"] == "regions/butd-r101-vg-36"
    assert d["test"]["n_images"] == 5
    train("vsepp", synthetic, tmp_path / "e", epochs=1, overrides=TINY, progress=False)  # an extracted store
    assert json.loads((tmp_path / "e" / "config.json").read_text())["config"]["image"] == "global/resnet152"


def test_precomp_round_trip_keeps_every_file(synthetic, tmp_path):
    export_features("precomp", synthetic, tmp_path / "pre")
    import_features("precomp", tmp_path / "pre", tmp_path / "st")
    export_features("precomp", tmp_path / "st", tmp_path / "again")
    for p in (tmp_path / "pre").iterdir():
        assert (tmp_path / "again" / p.name).read_bytes() == p.read_bytes(), p.name
    with pytest.raises(StoreError, match="already holds other records"):
        import_features("precomp", tmp_path / "pre", synthetic)


def make_folder(folder, splits, k=3, d=4, repeat=False):
    """A precomp folder; `repeat`: one image row per caption (SCAN reads it with im_div = 1)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for s, n in splits.items():
        ims = rng.standard_normal((n, k, d)).astype(np.float32)
        np.save(folder / f"{s}_ims.npy", np.repeat(ims, 5, axis=0) if repeat else ims)
        (folder / f"{s}_caps.txt").write_text(
            "".join(f" {s} image {i} caption {j} \n" for i in range(n) for j in range(5))
        )
        (folder / f"{s}_ids.txt").write_text("".join(f"{100 + i}\n" for i in range(n)))
    return folder


def test_one_row_per_caption_and_cocos_testall(tmp_path):
    make_folder(tmp_path / "coco_precomp", {"train": 3, "dev": 2, "test": 2, "testall": 4}, repeat=True)
    summary = import_features("precomp", tmp_path / "coco_precomp", tmp_path / "st", dtype="float32")
    assert summary.added == 11 and summary.feature_set == "regions/precomp" and summary.dataset == "coco"
    store = open_store(tmp_path / "st")
    recs = {r["id"]: r for r in store.read_json("records")}
    assert {r["split"] for r in recs.values() if r["extra"]["precomp_split"] == "testall"} == {"test"}
    assert {r["split"] for r in recs.values() if r["extra"]["precomp_split"] == "test"} == {"test1k"}
    assert (
        recs["testall/3"]["texts"][4] == "testall image 3 caption 4" and recs["train/2"]["extra"]["source_id"] == "102"
    )
    ims = np.load(tmp_path / "coco_precomp" / "testall_ims.npy")
    assert np.array_equal(store["regions/precomp"]["testall/3"]["features"], ims[15])  # rows 15..19: image 3
    ims[16, 0, 0] += 1
    np.save(tmp_path / "coco_precomp" / "testall_ims.npy", ims)
    with pytest.raises(StoreError, match=r"testall_ims.npy: rows 15..19 \(image 3\) differ"):
        import_features("precomp", tmp_path / "coco_precomp", tmp_path / "st2")


def test_precomp_captions_that_are_not_utf8_are_an_error_naming_file_and_line(tmp_path):
    make_folder(tmp_path / "pre", {"train": 2, "dev": 2})
    caps = (tmp_path / "pre" / "dev_caps.txt").read_bytes().split(b"\n")
    caps[6] = b"caf\xe9 latin-1"
    (tmp_path / "pre" / "dev_caps.txt").write_bytes(b"\n".join(caps))
    with pytest.raises(StoreError, match=r"dev_caps.txt:7: not UTF-8 text \(byte 0xe9 at column 4\)"):
        import_features("precomp", tmp_path / "pre", tmp_path / "st")
    assert not (tmp_path / "st").exists()  # checked before anything is written


@pytest.fixture()
def coco_store(tmp_path):
    """A store holding a small COCO dataset's records (image ids are COCO's integer ids)."""
    root = karpathy(tmp_path / "coco", n_images=6)
    store = open_store(tmp_path / "st", create=True)
    store.write_json("records", [r.to_json() for r in load_records("coco", root)])
    store.write_json("dataset", {"name": "coco"})
    return store


def lxmert_line(img_id, w=40, h=32, n=2, d=8):
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 30]][:n], np.float32)
    b64 = lambda a: base64.b64encode(a).decode()  # noqa: E731
    return {
        "img_id": img_id,
        "img_h": h,
        "img_w": w,
        "objects_id": b64(np.arange(n)),
        "objects_conf": b64(np.ones(n, np.float32)),
        "attrs_id": b64(np.zeros(n, np.int64)),
        "attrs_conf": b64(np.zeros(n, np.float32)),
        "num_boxes": n,
        "boxes": b64(boxes),
        "features": b64(np.ones((n, d), np.float32)),
    }


def write_lines(path, rows):
    with open(path, "w") as fh:
        w = csv.DictWriter(fh, delimiter="\t", fieldnames=LXMERT_FIELDS)
        for row in rows:
            w.writerow(row)


def test_region_ids_are_matched_to_the_datasets_images(coco_store, tmp_path):
    # COCO_x_000000000001.jpg is image 1001; "1002" is itself; 000000001003 is its number (VinVL's keys);
    # coco_1004 has a prefix (UNITER's file names); the last matches nothing
    names = ["COCO_x_000000000001", "1002", "000000001003", "coco_1004", "COCO_val2014_000000777777"]
    write_lines(tmp_path / "x.tsv", [lxmert_line(n) for n in names])
    summary = import_features("tsv", tmp_path / "x.tsv", coco_store.path, "regions/butd-r101-vg-36")
    assert summary.added == 4
    assert sorted(coco_store["regions/butd-r101-vg-36"].ids) == ["1001", "1002", "1003", "1004"]
    assert summary.unmatched == [("COCO_val2014_000000777777", f"{tmp_path / 'x.tsv'}:5")]
    assert summary.missing == ["1000", "1005"]


def test_a_source_matching_no_image_is_an_error(coco_store, tmp_path):
    from lighthead.pipelines.cli import app

    write_lines(tmp_path / "other.tsv", [lxmert_line(n) for n in ("flickr_a", "flickr_b", "flickr_c")])
    res = CliRunner().invoke(app, ["store", "import", "tsv", str(tmp_path / "other.tsv"), str(coco_store.path)])
    assert res.exit_code == 1 and res.stderr.strip() == (
        f"error: {tmp_path / 'other.tsv'}: none of its 3 ids matches an image of the dataset in {coco_store.path} "
        "(6 images, ids like '1000'; the source's are like 'flickr_a'); nothing imported"
    )
    assert coco_store.names() == []


def test_two_ids_for_one_image_and_a_swapped_size_are_errors(coco_store, tmp_path):
    write_lines(tmp_path / "two.tsv", [lxmert_line("1002"), lxmert_line("COCO_x_000000000002")])
    with pytest.raises(StoreError, match=r"two.tsv:2: 'COCO_x_000000000002' and '1002' .*both match image '1002'"):
        import_features("tsv", tmp_path / "two.tsv", coco_store.path)
    write_lines(tmp_path / "swap.tsv", [lxmert_line("1001", w=32, h=40)])
    with pytest.raises(
        StoreError,
        match=r"swap.tsv:1: image_w x image_h is 32 x 40, but the image file .*"
        r"COCO_x_000000000001.jpg of '1001' is 40 x 32 \(height and width swapped\?\)",
    ):
        import_features("tsv", tmp_path / "swap.tsv", coco_store.path)


def test_uniter_npz_into_a_dataset_store_reads_sizes_from_the_images(coco_store, tmp_path):
    rng = np.random.default_rng(0)
    data = []
    for i in (1, 3):
        boxes = np.array([[2, 3, 30, 20], [0, 0, 40, 32]], np.float32)
        data.append(
            (
                f"COCO_x_{i:012d}",
                40,
                32,
                boxes,
                rng.standard_normal((2, 8)).astype(np.float32),
                np.array([5, 7]),
                np.array([0.5, 0.25], np.float32),
                None,
                None,
            )
        )
    write_uniter_npz(tmp_path / "npz", data, prefix="coco_")
    summary = import_features("npz", tmp_path / "npz", coco_store.path, "regions/uniter")
    fs = coco_store["regions/uniter"]
    assert summary.added == 2 and sorted(fs.ids) == ["1001", "1003"]
    np.testing.assert_allclose(fs["1003"]["boxes"], data[1][3], atol=0.05)
    assert (fs["1003"]["image_w"], fs["1003"]["image_h"]) == (40, 32)


def test_vinvl_class_names_become_visual_genome_ids():
    from lighthead.extract.regions import vocab

    names = vg_names()
    assert names("object", "man") == vocab.objects().index("man")
    assert names("object", "stopsign") == names("object", "stop sign")  # any synonym of the line
    assert names("attribute", "white") == vocab.attributes().index("white")
    assert names("object", "spaceship") == -1 and names.unknown == {"spaceship": 1}


def test_cli_import_precomp_then_train(synthetic, tmp_path):
    from lighthead.pipelines.cli import app

    runner = CliRunner()
    export_features("precomp", synthetic, tmp_path / "pre")
    res = runner.invoke(app, ["store", "import", "precomp", str(tmp_path / "pre"), str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    assert "imported 30 new items into" in res.stdout and "words/vocab: 150 new caption word-id lists" in res.stdout
    res = runner.invoke(
        app,
        ["train", "heads", "scan", "--store", str(tmp_path / "st"), "--out", str(tmp_path / "run"), "--epochs", "1"]
        + [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "metrics.json").is_file()
