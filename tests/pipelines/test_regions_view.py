"""`lighthead show` draws the stored boxes on the image; `store info --json` names the objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lighthead.extract.regions.config import SelectionConfig
from lighthead.extract.regions.runner import item_fields
from lighthead.pipelines.cli import app
from lighthead.pipelines.regions_view import box_color, show_regions
from lighthead.store import Field, open_store

W, H = 160, 120
SET = "regions/butd-r101-vg-36"
# (x1, y1, x2, y2), object id, object score, attribute id, attribute score; the last row is padding
REGIONS = [
    ((20, 40, 90, 110), 50, 0.40, 7, 0.05),  # man; attribute below 0.1: not named
    ((100, 30, 150, 100), 16, 0.90, 7, 0.60),  # white stop sign
    ((60, 60, 70, 70), 3, 0.10, 4, 0.50),  # red macaroni: the least confident
    ((0, 0, 0, 0), -1, 0.0, -1, 0.0),
]


def _store(path, classes: int = 1601, size=(W, H)):
    store = open_store(path, create=True)
    fields = [Field(n, s, d) for n, s, d in item_fields(SelectionConfig(num_boxes=len(REGIONS)), 8, "float32")]
    attrs = {"config": {"num_classes": classes, "num_attributes": 401}}
    item = {
        "features": np.zeros((len(REGIONS), 8), np.float32),
        "boxes": np.array([r[0] for r in REGIONS], np.float32),
        "object_ids": np.array([r[1] for r in REGIONS], np.int32),
        "object_scores": np.array([r[2] for r in REGIONS], np.float32),
        "attr_ids": np.array([r[3] for r in REGIONS], np.int32),
        "attr_scores": np.array([r[4] for r in REGIONS], np.float32),
        "num_boxes": np.int32(3),
        "image_w": np.int32(size[0]),
        "image_h": np.int32(size[1]),
    }
    with store.writer(SET, fields, attrs) as w:
        w.add("sub dir/photo 1", item)
    image = path.parent / "photo 1.jpg"
    Image.new("RGB", size, (128, 128, 128)).save(image, quality=100)
    store.write_json("records", [{"id": "sub dir/photo 1", "image_id": "sub dir/photo 1", "image_path": str(image)}])
    return path, image


def _edge_share(png: np.ndarray, box, color) -> float:
    """Share of the pixels along the middle of a box's left and bottom edges that have `color`."""
    x1, y1, x2, y2 = box
    left = png[y1 + 8 : y2 - 8, x1]
    bottom = png[y2, x1 + 8 : x2 - 8]
    pixels = np.concatenate([left, bottom]).astype(int)
    return float((np.abs(pixels - np.array(color)).max(axis=1) < 40).mean())


def test_show_draws_the_most_confident_boxes_at_the_image_size(tmp_path):
    store, image = _store(tmp_path / "store")
    out = CliRunner().invoke(
        app,
        [
            "show",
            str(store),
            "sub dir/photo 1",
            "--image",
            str(image),
            "--out",
            str(tmp_path / "out" / "regions.png"),
            "--top",
            "2",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "2 regions of regions/butd-r101-vg-36" in out.output
    png = np.asarray(Image.open(tmp_path / "out" / "regions.png").convert("RGB"))
    assert png.shape == (H, W, 3)
    # most confident first: the stop sign gets the first colour, the man the second
    assert _edge_share(png, REGIONS[1][0], box_color(0)) > 0.9
    assert _edge_share(png, REGIONS[0][0], box_color(1)) > 0.9
    # the third box is not among the top 2: its edges keep the image's grey
    x1, y1, x2, y2 = REGIONS[2][0]
    assert np.abs(png[y1 + 2 : y2 - 2, x1].astype(int) - 128).max() < 10


def test_labels_name_attribute_object_score(tmp_path):
    store, _ = _store(tmp_path / "store")
    info = show_regions(store, "sub dir/photo 1", tmp_path / "r.png")  # the image the records name
    assert info["labels"] == ["white stop sign 0.90", "man 0.40", "red macaroni 0.10"]
    assert Image.open(tmp_path / "r.png").size == (W, H)
    other, _ = _store(tmp_path / "other" / "store", classes=21)  # a detector without the VG classes
    assert show_regions(other, "sub dir/photo 1", tmp_path / "o.png", top=1)["labels"] == ["attr 7 class 16 0.90"]


def test_an_image_of_another_size_is_refused_in_one_line(tmp_path):
    store, _ = _store(tmp_path / "store")
    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    out = CliRunner().invoke(
        app,
        [
            "show",
            str(store),
            "sub dir/photo 1",
            "--image",
            str(tmp_path / "small.png"),
            "--out",
            str(tmp_path / "r.png"),
        ],
    )
    assert out.exit_code != 0 and not (tmp_path / "r.png").exists()
    with pytest.raises(
        ValueError,
        match=r"small.png: the image is 100x100 pixels but the regions of sub dir/photo 1 "
        r"in regions/butd-r101-vg-36 were extracted from a 160x120 image",
    ):
        show_regions(store, "sub dir/photo 1", tmp_path / "r.png", image=tmp_path / "small.png")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"item_id": "nope"}, r"nope: in no region feature set"),
        ({"feature_set": "regions/other"}, r"no feature set 'regions/other'"),
        ({"out": "r.jpg"}, r"r.jpg: --out must name a .png file"),
    ],
)
def test_bad_requests_name_what_is_wrong(tmp_path, kw, message):
    store, _ = _store(tmp_path / "store")
    args = {"item_id": "sub dir/photo 1", "out": "r.png", **kw}
    with pytest.raises((KeyError, ValueError), match=message):
        show_regions(store, args.pop("item_id"), tmp_path / args.pop("out"), **args)


def test_store_info_names_the_objects(tmp_path):
    store, _ = _store(tmp_path / "store")
    out = CliRunner().invoke(app, ["store", "info", str(store), "--json"])
    assert out.exit_code == 0, out.output
    objects = json.loads(out.output)["feature_sets"][SET]["objects"]
    assert objects == {
        "top_objects": [["macaroni", 1], ["stop sign", 1], ["man", 1]],
        "images_counted": 1,
        "names": "visual genome",
    }
    table = CliRunner().invoke(app, ["store", "info", str(store)])
    assert f"{SET}: most frequent objects: macaroni (1), stop sign (1), man (1)" in table.output


def test_an_image_above_the_display_size_is_drawn_shrunk_with_its_boxes(tmp_path, monkeypatch):
    from lighthead.pipelines import regions_view

    store, _ = _store(tmp_path / "store")
    monkeypatch.setattr(regions_view, "SHOW_PIXELS", W * H // 4)
    info = show_regions(store, "sub dir/photo 1", tmp_path / "r.png", top=2)
    assert info["size"] == (W, H) and info["drawn"] == (W // 2, H // 2)
    png = np.asarray(Image.open(tmp_path / "r.png").convert("RGB"))
    assert png.shape == (H // 2, W // 2, 3)
    assert _edge_share(png, tuple(v // 2 for v in REGIONS[1][0]), box_color(0)) > 0.8


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
def test_show_needs_about_eight_bytes_a_pixel(tmp_path):
    """matplotlib given the image itself made float RGBA copies of it: about 125 bytes a pixel."""
    from tests.extract.test_images import _peak_bytes

    small, _ = _store(tmp_path / "small")
    show_regions(small, "sub dir/photo 1", tmp_path / "warm.png")  # imports, fonts: outside the measure
    w, h = 2000, 1500
    store, image = _store(tmp_path / "store", size=(w, h))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(image, quality=95)
    grown, info = _peak_bytes(lambda: show_regions(store, "sub dir/photo 1", tmp_path / "r.png"))
    assert info["drawn"] == (w, h) and Image.open(tmp_path / "r.png").size == (w, h)
    assert grown / (w * h) < 12, f"{grown / (w * h):.0f} bytes a pixel"
