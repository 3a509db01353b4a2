"""What every adapter refuses: two files behind one image id, null fields, non-UTF-8 text."""

from __future__ import annotations

import json

import pytest

from lighthead.pipelines.datasets import DatasetError, load_records
from tests.pipelines.datasets import fixtures


def test_twitter_images_sharing_a_stem_are_an_error_naming_both(tmp_path):
    fixtures.twitter(tmp_path)
    images = tmp_path / "twitter2015_images"
    fixtures.write_image(images / "tr0.png", 99)  # tr0.jpg exists: both would become image id "tr0"
    dev = tmp_path / "dev.tsv"
    dev.write_text(dev.read_text() + "9\t1\ttr0.png\t$T$ again\tx\n")
    with pytest.raises(DatasetError) as e:
        load_records("twitter15", tmp_path)
    msg = str(e.value)
    assert "'tr0'" in msg and str(images / "tr0.jpg") in msg and str(images / "tr0.png") in msg


def test_itm_images_sharing_a_stem_are_an_error(tmp_path):
    fixtures.itm(tmp_path, fmt="json")
    fixtures.write_image(tmp_path / "twitter2017_images" / "train_1.png", 5)
    path = tmp_path / "VG_train.json"
    entries = json.loads(path.read_text())
    entries["9"] = {**entries["2"], "iid": "train_1.png"}
    path.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match=r"train_1\.jpg.*train_1\.png"):
        load_records("itm", tmp_path)


def test_f30k_images_sharing_a_stem_name_both_files(tmp_path):
    fixtures.karpathy(tmp_path, coco=False)
    path = tmp_path / "dataset_flickr30k.json"
    data = json.loads(path.read_text())
    fixtures.write_image(tmp_path / "flickr30k-images" / "5000.png", 3)
    data["images"].append({**data["images"][1], "filename": "5000.png"})
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"duplicate image id '5000': .*5000\.jpg \(images\[0\]\) and .*5000\.png"):
        load_records("f30k", tmp_path)


def test_the_same_file_under_one_id_is_fine(tmp_path):
    fixtures.twitter(tmp_path)
    dev = tmp_path / "dev.tsv"
    dev.write_text(dev.read_text() + "9\t1\ttr0.jpg\t$T$ again\tx\n")  # many rows share one image
    records = load_records("twitter15", tmp_path)
    assert sum(r.image_id == "tr0" for r in records) == 2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("cocoid", None, r"images\[2\] \(COCO_x_000000000002\.jpg\): 'cocoid' is null"),
        ("cocoid", "", r"'cocoid' is \"\""),
        ("sentences", None, r"images\[2\] \(COCO_x_000000000002\.jpg\): 'sentences' is null"),
        ("sentences", {"raw": "x"}, r"'sentences' is \{"),
        ("filename", None, r"images\[2\]: 'filename' is null"),
        ("split", None, r"unknown split None"),
        ("filepath", None, r"'filepath' is null"),
    ],
)
def test_null_or_mistyped_karpathy_fields_name_file_and_entry(tmp_path, field, value, message):
    fixtures.karpathy(tmp_path)
    path = tmp_path / "dataset_coco.json"
    data = json.loads(path.read_text())
    data["images"][2][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message) as e:
        load_records("coco", tmp_path)
    assert str(path) in str(e.value)


def test_null_itm_fields_are_errors(tmp_path):
    fixtures.itm(tmp_path, fmt="json")
    path = tmp_path / "VG_dev.json"
    entries = json.loads(path.read_text())
    entries["2"]["iid"] = None
    path.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match=r"VG_dev\.json: entry '2': 'iid' is None"):
        load_records("itm", tmp_path)


@pytest.mark.parametrize(
    "name, make, file, line",
    [
        ("twitter15", fixtures.twitter, "dev.tsv", 3),
        ("coco", fixtures.karpathy, "dataset_coco.json", 4),
        ("mvsa-single", lambda root: fixtures.mvsa(root, ["positive,positive"] * 3), "labelResultAll.txt", 2),
    ],
)
def test_non_utf8_files_name_file_and_line(tmp_path, name, make, file, line):
    make(tmp_path)
    path = tmp_path / file
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = (
        lines[line - 1].replace(b" ", b" \xe9", 1) if b" " in lines[line - 1] else lines[line - 1] + b"\xff"
    )
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DatasetError, match=rf"{file}:{line}: not UTF-8 text \(byte 0x(e9|ff)"):
        load_records(name, tmp_path)
