"""Image preparation, padded batching and bad inputs through the extraction loop."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lighthead.extract.regions import batching
from lighthead.extract.regions.batching import Prepare, image_scale, pad_batch, resized_size
from lighthead.extract.regions.config import SelectionConfig
from lighthead.extract.regions.runner import extract_regions, item_fields


def test_image_scale_follows_the_test_scales():
    assert image_scale(480, 640, 600, 1000) == 600 / 480  # shorter side to 600
    assert image_scale(300, 1000, 600, 1000) == 1.0  # 600/300 would make the long side 2000 > 1000
    assert resized_size(480, 640, 1.25) == (600, 800)
    assert resized_size(333, 500, 600 / 333) == (600, 901)


def test_prepare_is_mean_subtracted_bgr_resized_like_cv2():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cfg = type("C", (), {"min_size": 80, "max_size": 200, "pixel_mean": (102.9801, 115.9465, 122.7717)})
    out = Prepare(cfg)(Image.fromarray(rgb))
    assert out["size"] == (80, 120) and out["scale"] == (2.0, 2.0)
    x = out["image"]
    assert x.shape == (3, 80, 120)
    assert torch.allclose(x[2], torch.full((80, 120), 200 - 122.7717))  # channel 2 = red after BGR flip
    assert torch.allclose(x[0], torch.full((80, 120), -102.9801))
    # a ramp checks the bilinear sampling positions: src = (dst + 0.5) / scale - 0.5
    ramp = np.tile(np.arange(60, dtype=np.uint8)[None, :, None], (40, 1, 3))
    got = Prepare(cfg)(Image.fromarray(ramp))["image"][0, 0] + 102.9801
    src = np.clip((np.arange(120) + 0.5) / 2 - 0.5, 0, 59)
    assert np.allclose(got.numpy(), src, atol=1e-3)


def test_huge_images_are_reduced_before_the_float_conversion(monkeypatch):
    monkeypatch.setattr(batching, "MAX_DECODED_PIXELS", 1000)
    cfg = type("C", (), {"min_size": 30, "max_size": 60, "pixel_mean": (0.0, 0.0, 0.0)})
    out = Prepare(cfg)(Image.new("RGB", (200, 100), (10, 20, 30)))
    assert out["size"] == (30, 60) and out["scale"] == (0.3, 0.3)
    assert torch.allclose(out["image"][0], torch.full((30, 60), 30.0))


def test_pad_batch_is_top_left_aligned_and_divisible():
    a, b = torch.ones(3, 5, 7), 2 * torch.ones(3, 9, 4)
    out = pad_batch([a, b], 8)
    assert out.shape == (2, 3, 16, 8)
    assert out[0, :, :5, :7].eq(1).all() and out[0, :, 5:].eq(0).all() and out[1, :, :9, :4].eq(2).all()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return head + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.fixture()
def image_files(tmp_path):
    rng = np.random.default_rng(0)

    def noise(h, w):
        return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)

    files = {}
    Image.fromarray(noise(90, 120)).save(tmp_path / "ok.jpg")
    files["ok"] = tmp_path / "ok.jpg"
    Image.fromarray(noise(70, 100)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    files["cmyk"] = tmp_path / "cmyk.jpg"
    Image.fromarray(noise(80, 80)).convert("L").save(tmp_path / "grey.png")
    files["grey"] = tmp_path / "grey.png"
    rgba = Image.fromarray(noise(60, 90)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "alpha.png")
    files["alpha"] = tmp_path / "alpha.png"
    Image.fromarray(noise(1, 1)).save(tmp_path / "dot.png")
    files["dot"] = tmp_path / "dot.png"
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    files["truncated"] = tmp_path / "truncated.jpg"
    (tmp_path / "text.jpg").write_text("not an image")
    files["text"] = tmp_path / "text.jpg"
    (tmp_path / "zero.png").write_bytes(_png_header_only(0, 10))
    files["zero"] = tmp_path / "zero.png"
    (tmp_path / "bomb.png").write_bytes(_png_header_only(40000, 40000))
    files["bomb"] = tmp_path / "bomb.png"
    files["missing"] = tmp_path / "missing.jpg"
    return files


def test_bad_inputs_are_skipped_with_reasons_and_never_stop_the_run(tiny_model, image_files):
    items = [(k, str(v)) for k, v in image_files.items()]
    got: dict[str, dict] = {}
    sel = SelectionConfig(mode="fixed", num_boxes=8)
    stats = extract_regions(
        tiny_model, items, lambda i, item: got.__setitem__(i, item), sel, batch_size=3, loader_workers=0
    )
    assert set(got) == {"ok", "cmyk", "grey", "alpha", "dot"}
    reasons = dict(stats.skipped)
    assert set(reasons) == {"truncated", "text", "zero", "bomb", "missing"}
    assert "truncated" in reasons["truncated"] and "not a readable image" in reasons["text"]
    assert "too large" in reasons["bomb"] and "not found" in reasons["missing"]
    fields = {n: (s, d) for n, s, d in item_fields(sel, tiny_model.cfg.feature_dim)}
    for image_id, item in got.items():
        assert set(item) == set(fields)
        for name, (shape, dtype) in fields.items():
            assert item[name].shape == shape and item[name].dtype == np.dtype(dtype), (image_id, name)
    assert (got["ok"]["image_w"], got["ok"]["image_h"]) == (120, 90)
    # a 1x1 image yields too few ROIs for K=8: zero rows, ids -1, num_boxes says how many are real
    dot = got["dot"]
    n = int(dot["num_boxes"])
    assert n < 8 and (dot["object_ids"][n:] == -1).all() and not dot["features"][n:].any()


def test_results_do_not_depend_on_the_batch_size(tiny_model, image_files):
    items = [(k, str(image_files[k])) for k in ("ok", "cmyk", "grey", "alpha")]
    sel = SelectionConfig(mode="adaptive", min_boxes=3, max_boxes=20)
    runs = []
    for batch_size in (1, 4):
        got: dict[str, dict] = {}
        extract_regions(
            tiny_model,
            items,
            lambda i, item: got.__setitem__(i, item),  # noqa: B023 - called before the loop moves on
            sel,
            batch_size=batch_size,
            loader_workers=0,
            dtype="float32",
        )
        runs.append(got)
    for key in runs[0]:
        a, b = runs[0][key], runs[1][key]
        assert np.allclose(a["boxes"], b["boxes"], atol=1e-4)
        assert np.allclose(a["features"], b["features"], atol=1e-4)
        assert np.array_equal(a["object_ids"], b["object_ids"])


def test_given_boxes_mode_through_the_loop(tiny_model, image_files):
    got: dict[str, dict] = {}
    boxes = {"ok": np.array([[0, 0, 50, 40], [10, 20, 119, 89]], np.float32), "grey": np.zeros((1, 4), np.float32)}
    extract_regions(
        tiny_model,
        [("ok", str(image_files["ok"])), ("grey", str(image_files["grey"]))],
        lambda i, item: got.__setitem__(i, item),
        SelectionConfig(mode="given"),
        boxes,
        loader_workers=0,
    )
    assert got["ok"]["features"].shape == (2, tiny_model.cfg.feature_dim) and int(got["ok"]["num_boxes"]) == 2
    assert np.allclose(got["ok"]["boxes"], boxes["ok"])
    assert got["grey"]["boxes"].shape == (1, 4)


def test_a_failing_sink_stops_the_run_with_its_error(tiny_model, image_files):
    def sink(i, item):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        extract_regions(
            tiny_model,
            [("ok", str(image_files["ok"]))] * 3,
            sink,
            SelectionConfig(num_boxes=4),
            batch_size=1,
            loader_workers=0,
        )


def test_bucketing_groups_orientations_and_passes_skips_on():
    from lighthead.extract.regions.batching import Batch, bucketed

    def single(i, h, w):
        return Batch([f"{i}"], pad_batch([torch.full((3, h, w), float(i))], 32), [(h, w)], [1.0], [(w, h)], [])

    sizes = [(40, 60), (60, 40), (40, 70), (50, 30), (45, 60), (30, 30)]
    singles = [single(i, h, w) for i, (h, w) in enumerate(sizes)]
    singles.insert(2, Batch([], torch.zeros((0, 3, 0, 0)), [], [], [], [("bad", "unreadable")]))
    out = list(bucketed(singles, 2, 32))
    assert out[0].ids == [] and out[0].skipped == [("bad", "unreadable")]
    grouped = [b.ids for b in out if b.ids]
    assert sorted(sum(grouped, [])) == [str(i) for i in range(6)]
    for b in out[1:]:
        landscape = {w >= h for h, w in b.image_sizes}
        assert len(landscape) == 1  # one orientation per batch
        for i, image_id in enumerate(b.ids):
            h, w = b.image_sizes[i]
            assert b.images[i, :, :h, :w].eq(float(image_id)).all() and b.images[i, :, h:, :].eq(0).all()


# ---- one host copy per batch: padding into a (page-locked) buffer, a prefetch thread ----------


def test_pad_into_overwrites_a_dirty_buffer():
    from lighthead.extract.regions.batching import pad_into, padded_shape

    images = [torch.full((3, 5, 7), 1.0), torch.full((3, 9, 4), 2.0)]
    buffer = torch.full(padded_shape(images, 8), float("nan"))  # a reused buffer holds the last batch
    out = pad_into(buffer, images)
    assert out.data_ptr() == buffer.data_ptr()  # written in place, no second host copy
    assert torch.equal(out, pad_batch(images, 8))
    assert torch.equal(out[0, :, :5, :7], images[0]) and out[0, :, 5:].eq(0).all() and out[0, :, :, 7:].eq(0).all()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_batches_for_a_device_come_from_a_prefetch_thread(image_files, tiny_cfg, device):
    """For a device, a prefetch thread regroups and pads the batches (for a GPU into page-locked
    memory); they equal the batches made on demand."""
    from lighthead.extract.regions.batching import batches

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("page-locked memory needs CUDA")
    items = [(k, str(image_files[k])) for k in ("ok", "cmyk", "text", "grey", "alpha", "ok")]
    out = list(batches(items, tiny_cfg, 2, workers=0, device=torch.device(device)))
    plain = list(batches(items, tiny_cfg, 2, workers=0))
    assert [(b.ids, b.skipped) for b in out] == [(b.ids, b.skipped) for b in plain]
    assert all(torch.equal(a.images, b.images) for a, b in zip(out, plain))
    assert all(b.images.is_pinned() == (device == "cuda") for b in out if b.ids)


def test_prefetch_keeps_order_passes_errors_and_stops_early():
    import threading

    from lighthead.extract.regions.batching import prefetch

    assert list(prefetch(lambda: iter(range(10)), depth=2)) == list(range(10))

    def broken():
        yield 1
        raise OSError("disk gone")

    it = prefetch(broken)
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    it = prefetch(endless, depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # the consumer stops early: the thread ends, having run at most `depth` + 1 ahead
    assert threading.active_count() == before and len(produced) <= 3 + 3


def test_backbone_copies_the_image_sizes_once_per_forward(monkeypatch):
    """A padded batch masks every layer's padding; the sizes reach the device in one copy per
    forward whatever the depth (on a GPU each `torch.tensor(list, device=cuda)` blocks the host)."""
    from lighthead.extract.regions.backbone import ResNetC4

    made = []
    real = torch.tensor

    def counting(*args, **kwargs):
        made.append(args)
        return real(*args, **kwargs)

    x = torch.randn(2, 3, 64, 96)
    sizes = ([64, 40], [96, 72])  # the second image is padded
    counts = {}
    for blocks in ((1, 1, 1), (2, 3, 6)):
        net = ResNetC4(blocks, width=4, stem_channels=8, res2_out=16).eval()
        with torch.no_grad():
            want, _ = net(x, *sizes)  # reference: then compare the masked result with a per-image run
            monkeypatch.setattr(torch, "tensor", counting)
            made.clear()
            out, valid = net(x, *sizes)
            monkeypatch.setattr(torch, "tensor", real)
        counts[blocks] = len(made)
        assert torch.equal(out, want)
        alone, _ = net(x[1:, :, :40, :72])  # the padded image alone: the padding changes nothing
        h, w = valid.heights[1], valid.widths[1]
        torch.testing.assert_close(out[1, :, :h, :w], alone[0], rtol=1e-5, atol=1e-5)
    assert counts == {(1, 1, 1): 1, (2, 3, 6): 1}
