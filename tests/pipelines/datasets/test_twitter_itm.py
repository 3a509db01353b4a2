"""twitter15/17 (TomBERT TSV) and itm (ITM annotation files) adapters."""

from __future__ import annotations

import json
import pickle

import pytest

from lighthead.pipelines.datasets import SENTIMENTS, DatasetError, load_records
from tests.pipelines.datasets import fixtures


def _read_rows(path):
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


@pytest.mark.parametrize("name, folder", [("twitter15", "twitter2015_images"), ("twitter17", "twitter2017_images")])
def test_twitter_records_match_the_rows(tmp_path, name, folder):
    fixtures.twitter(tmp_path, folder=folder)
    records = load_records(name, tmp_path)
    expected = []
    for split, fname in (("train", "train.tsv"), ("val", "dev.tsv"), ("test", "test.tsv")):
        for index, label, image, sentence, target in _read_rows(tmp_path / fname):
            expected.append((f"{split}-{index}", split, int(label), image[:-4], sentence, target))
    got = [(r.id, r.split, r.label, r.image_id, r.texts[0], r.target) for r in records]
    assert got == expected
    assert all(r.kind == "target" and "$T$" in r.texts[0] for r in records)


def test_twitter_label_names_and_images_folder(tmp_path):
    fixtures.twitter(tmp_path, folder="images")
    path = tmp_path / "train.tsv"
    path.write_text(path.read_text().replace("\n1\t0\t", "\n1\tnegative\t", 1))
    records = load_records("twitter17", tmp_path)
    assert records[0].label == SENTIMENTS.index("negative")


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("9\t1\ttr0.jpg\tno placeholder here\tx", r"dev.tsv:5: the sentence has no \$T\$"),
        ("9\t7\ttr0.jpg\t$T$ ok\tx", r"dev.tsv:5: unknown label '7'"),
        ("9\t1\tmissing.jpg\t$T$ ok\tx", r"dev.tsv:5: image .*missing.jpg not found"),
        ("9\t1\ttr0.jpg\t$T$ ok", r"dev.tsv:5: expected 5 tab-separated columns"),
    ],
)
def test_twitter_malformed_lines_name_file_and_line(tmp_path, bad_line, message):
    fixtures.twitter(tmp_path)
    (tmp_path / "twitter2015_images" / "tr0.jpg").write_bytes((tmp_path / "twitter2015_images" / "tr1.jpg").read_bytes())
    path = tmp_path / "dev.tsv"
    path.write_text(path.read_text() + bad_line + "\n")
    with pytest.raises(DatasetError, match=message):
        load_records("twitter15", tmp_path)


def test_twitter_missing_files_show_the_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"train.tsv not found(.|\n)*twitter2015_images"):
        load_records("twitter15", tmp_path)
    fixtures.twitter(tmp_path)
    (tmp_path / "twitter2015_images").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="no image folder"):
        load_records("twitter15", tmp_path)


@pytest.mark.parametrize("fmt", ["pkl", "json"])
def test_itm_records(tmp_path, fmt):
    fixtures.itm(tmp_path, fmt)
    records = {r.id: r for r in load_records("itm", tmp_path)}
    assert len(records) == 9
    for split in ("train", "val", "test"):
        for key, e in fixtures.itm_entries(split).items():
            r = records[f"{split}-{key}"]
            assert (r.split, r.texts, r.target, r.image_id) == (split, [e["sentence"]], e["aspect"], e["iid"])
            assert r.label == (int(e["sentiment"]) if e["sentiment"] else None)
            assert r.extra["relevance"] == (0 if e["relation"] == "0" else 1)
            # one box per related target: the first annotated one; none for unrelated targets
            assert r.extra["box"] == ([float(v) for v in e["boxes"][0]] if e["relation"] != "0" else None)


def test_itm_refuses_pickled_objects(tmp_path):
    fixtures.itm(tmp_path)
    import collections

    (tmp_path / "VG_dev.pkl").write_bytes(pickle.dumps(collections.OrderedDict(fixtures.itm_entries("val"))))
    with pytest.raises(DatasetError, match="VG_dev.pkl: cannot read .*refusing to load collections.OrderedDict"):
        load_records("itm", tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"relation": "5"}, "entry '2': unknown relation '5'"),
        ({"sentiment": "happy"}, "entry '2': unknown label 'happy'"),
        ({"relation": "1", "boxes": [(5, 5, 1, 1)]}, "entry '2': malformed box"),
        ({"iid": "nowhere"}, "entry '2': image .*nowhere.jpg not found"),
        ({"sentence": "no placeholder"}, r"entry '2': the sentence has no \$T\$"),
    ],
)
def test_itm_malformed_entries(tmp_path, change, message):
    fixtures.itm(tmp_path, "json")
    path = tmp_path / "VG_test.json"
    entries = json.loads(path.read_text())
    entries["2"].update(change)
    path.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match=f"VG_test.json: {message}"):
        load_records("itm", tmp_path)
