"""coco and f30k adapters on generated Karpathy split files."""

from __future__ import annotations

import json

import pytest

from lighthead.pipelines.datasets import DatasetError, load_records
from tests.pipelines.datasets import fixtures


def test_coco_records(tmp_path):
    fixtures.karpathy(tmp_path, n_images=8)
    records = load_records("coco", tmp_path)
    data = json.loads((tmp_path / "dataset_coco.json").read_text())["images"]
    assert [r.id for r in records] == [str(e["cocoid"]) for e in data]
    # restval counts as train; the Karpathy split field decides the rest
    expect = {"train": "train", "restval": "train", "val": "val", "test": "test"}
    assert [r.split for r in records] == [expect[e["split"]] for e in data]
    for r, e in zip(records, data):
        assert r.texts == [s["raw"] for s in e["sentences"]][:5]
        assert r.image_path == str(tmp_path / e["filepath"] / e["filename"])
        assert r.kind == "image" and r.image_id == r.id and r.label is None


def test_coco_keeps_five_captions_and_images_subfolder(tmp_path):
    fixtures.karpathy(tmp_path / "tmp", n_images=2)
    (tmp_path / "images").mkdir()
    for folder in ("train2014", "val2014"):
        (tmp_path / "tmp" / folder).rename(tmp_path / "images" / folder)
    obj = json.loads((tmp_path / "tmp" / "dataset_coco.json").read_text())
    obj["images"][0]["sentences"].append({"raw": "a sixth caption"})
    (tmp_path / "dataset_coco.json").write_text(json.dumps(obj))
    records = load_records("coco", tmp_path)
    assert len(records[0].texts) == 5 and "a sixth caption" not in records[0].texts
    assert "/images/" in records[0].image_path


def test_f30k_ids_are_file_stems(tmp_path):
    fixtures.karpathy(tmp_path, n_images=5, coco=False)
    records = load_records("f30k", tmp_path)
    assert [r.id for r in records] == [str(5000 + i) for i in range(5)]
    assert all(r.image_path.endswith(f"flickr30k-images/{r.id}.jpg") for r in records)


def test_missing_root_and_file_say_what_is_expected(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="does not exist"):
        load_records("coco", tmp_path / "nope")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DatasetError, match=r"a-file for dataset 'coco' is not a directory$"):
        load_records("coco", tmp_path / "a-file")
    monkeypatch.delenv("LIGHTHEAD_DATA", raising=False)
    with pytest.raises(DatasetError, match="LIGHTHEAD_DATA"):
        load_records("coco", None)
    with pytest.raises(DatasetError, match=r"dataset_coco.json not found(.|\n)*train2014"):
        load_records("coco", tmp_path)


def test_lighthead_data_env(tmp_path, monkeypatch):
    fixtures.karpathy(tmp_path / "f30k", n_images=4, coco=False)
    monkeypatch.setenv("LIGHTHEAD_DATA", str(tmp_path))
    assert len(load_records("f30k", None)) == 4


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda o: o["images"][1].pop("split"), r"images\[1\]: missing field 'split'"),
        (lambda o: o["images"][2].update(split="holdout"), r"images\[2\].*unknown split 'holdout'"),
        (lambda o: o["images"][0]["sentences"].pop(), r"images\[0\].*4 captions, expected at least 5"),
        (lambda o: o["images"][3].update(filename="gone.jpg"), r"images\[3\]: image .*gone.jpg not found"),
        (lambda o: o["images"][3].update(cocoid=o["images"][0]["cocoid"]), r"images\[3\]: duplicate image id"),
    ],
)
def test_malformed_entries_name_file_and_entry(tmp_path, damage, message):
    fixtures.karpathy(tmp_path, n_images=4)
    path = tmp_path / "dataset_coco.json"
    obj = json.loads(path.read_text())
    damage(obj)
    path.write_text(json.dumps(obj))
    with pytest.raises(DatasetError, match=message) as err:
        load_records("coco", tmp_path)
    assert str(path) in str(err.value)


def test_bad_json_names_the_line(tmp_path):
    fixtures.karpathy(tmp_path, n_images=2)
    path = tmp_path / "dataset_coco.json"
    path.write_text(path.read_text().replace('"split"', "split", 1))
    with pytest.raises(DatasetError, match=rf"{path}:\d+: not valid JSON"):
        load_records("coco", tmp_path)
