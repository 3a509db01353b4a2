"""The demo dataset: deterministic, consistent with its documented rules, validated on read."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lighthead.pipelines.datasets import SENTIMENTS, DatasetError, demo, load_records


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return demo.generate(tmp_path_factory.mktemp("demo"), n_images=40, seed=3)


def test_deterministic(demo_root, tmp_path):
    other = demo.generate(tmp_path / "again", n_images=40, seed=3)
    assert (demo_root / "annotations.json").read_text() == (other / "annotations.json").read_text()
    a = np.asarray(Image.open(demo_root / "images" / "demo00007.png"))
    b = np.asarray(Image.open(other / "images" / "demo00007.png"))
    assert np.array_equal(a, b)
    third = demo.generate(tmp_path / "seed4", n_images=40, seed=4)
    assert (third / "annotations.json").read_text() != (other / "annotations.json").read_text()


def test_records_and_splits(demo_root):
    records = load_records("demo", demo_root)
    kinds = Counter(r.kind for r in records)
    assert kinds["image"] == 40 and kinds["post"] == 40 and kinds["target"] >= 40
    assert len({r.id for r in records}) == len(records)
    images = [r for r in records if r.kind == "image"]
    assert all(len(r.texts) == 5 for r in images)
    assert Counter(r.split for r in images) == {"train": 32, "val": 4, "test": 4}
    for r in records:
        if r.kind == "target":
            assert "$T$" in r.texts[0] and r.target


def test_colour_rule_and_boxes(demo_root):
    """Labels follow the documented valence rule; boxes cover pixels of the shape's colour."""
    ann = json.loads((demo_root / "annotations.json").read_text())
    for im in ann["images"]:
        v = sum(demo.VALENCE[s["colour"]] for s in im["shapes"])
        expected = "positive" if v > 0 else "negative" if v < 0 else "neutral"
        assert SENTIMENTS[im["label"]] == expected
        pixels = np.asarray(Image.open(demo_root / im["file"]).convert("RGB")).astype(int)
        for s in im["shapes"]:
            x1, y1, x2, y2 = s["box"]
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2 + (y2 - y1) // 4  # inside circle, square and triangle
            assert np.abs(pixels[cy, cx] - np.array(demo.COLOURS[s["colour"]])).max() <= 1
        for t in im["targets"]:
            if t["related"]:
                shape = next(s for s in im["shapes"] if s["kind"] == t["target"])
                assert t["box"] == shape["box"]
                assert (
                    SENTIMENTS[t["label"]]
                    == {1: "positive", 0: "neutral", -1: "negative"}[demo.VALENCE[shape["colour"]]]
                )
            else:
                assert t["box"] is None and all(s["kind"] != t["target"] for s in im["shapes"])


def test_post_and_target_texts_name_no_colour(demo_root):
    for r in load_records("demo", demo_root):
        if r.kind in ("post", "target"):
            words = set((r.texts[0] + " " + (r.target or "")).split())
            assert not words & set(demo.COLOURS)


def test_missing_image_named(demo_root, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_root, copy)
    (copy / "images" / "demo00003.png").unlink()
    with pytest.raises(DatasetError, match="demo00003"):
        load_records("demo", copy)


def test_missing_root_and_annotations(tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTHEAD_DATA", raising=False)
    with pytest.raises(DatasetError, match="--root"):
        load_records("demo", None)
    with pytest.raises(DatasetError, match="annotations.json"):
        load_records("demo", tmp_path)
