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
        ("9\t1\t../up.jpg\t$T$ ok\tx", r"dev.tsv:5: image id '../up.jpg' is not a file name"),
        ("9\t1\ttr0.jpg\t$T$ ok", r"dev.tsv:5: expected 5 tab-separated columns"),
    ],
)
def test_twitter_malformed_lines_name_file_and_line(tmp_path, bad_line, message):
    fixtures.twitter(tmp_path)
    (tmp_path / "twitter2015_images" / "tr0.jpg").write_bytes(
        (tmp_path / "twitter2015_images" / "tr1.jpg").read_bytes()
    )
    path = tmp_path / "dev.tsv"
    path.write_text(path.read_text() + bad_line + "\n")
    with pytest.raises(DatasetError, match=message):
        load_records("twitter15", tmp_path)


def test_twitter_missing_files_show_the_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"train.tsv not found(.|\n)*twitter2015_images"):
        load_records("twitter15", tmp_path)


def test_twitter_without_images_loads_and_warns(tmp_path):
    """The text alone is a dataset: records load, one warning counts the missing images."""
    fixtures.twitter(tmp_path)
    (tmp_path / "twitter2015_images" / "tr1.jpg").unlink()
    with pytest.warns(UserWarning, match=r"1 of 9 image files not found \(first: .*tr1.jpg\); text feature jobs run"):
        assert len(load_records("twitter15", tmp_path)) == 9
    (tmp_path / "twitter2015_images").rename(tmp_path / "elsewhere")
    with pytest.warns(UserWarning, match=r"no image folder .*twitter2015_images: none of the 9 images is present"):
        records = load_records("twitter15", tmp_path)
    assert records[0].image_path == str(tmp_path / "twitter2015_images" / "tr0.jpg")


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
        ({"iid": "../nowhere"}, "entry '2': 'iid' '../nowhere' is not a file name"),
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
