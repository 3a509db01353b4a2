"""Robust image reading: odd modes become RGB, bad files become skipped entries."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lighthead.extract.images import ImageReadError, image_loader, load_rgb, unique_images
from lighthead.pipelines.datasets import Record


def _save(path, im, **kw):
    im.save(path, **kw)
    return path


def test_modes_become_rgb(tmp_path):
    grey = _save(tmp_path / "g.png", Image.new("L", (5, 4), 77))
    cmyk = _save(tmp_path / "c.jpg", Image.new("CMYK", (5, 4), (0, 0, 0, 0)), quality=100)
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (10, 20, 30, 0))  # fully transparent pixel
    rgba = _save(tmp_path / "a.png", rgba)
    deep = _save(tmp_path / "d.png", Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)))
    for path in (grey, cmyk, rgba, deep):
        assert load_rgb(path).mode == "RGB"
    assert load_rgb(grey).getpixel((1, 1)) == (77, 77, 77)
    assert all(abs(v - 255) <= 2 for v in load_rgb(cmyk).getpixel((2, 2)))  # CMYK 0,0,0,0 is white
    assert load_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background
    assert load_rgb(rgba).getpixel((1, 1)) == (10, 20, 30)
    assert load_rgb(deep).getpixel((1, 1)) == (255, 255, 255)  # 16-bit scaled, not clipped
    assert load_rgb(deep).getpixel((0, 0)) == (0, 0, 0)


def test_bad_files_raise_with_reason(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"hello")
    with pytest.raises(ImageReadError, match="truncated"):
        load_rgb(tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match="not a readable image"):
        load_rgb(tmp_path / "junk.jpg")
    with pytest.raises(ImageReadError, match="file not found"):
        load_rgb(tmp_path / "none.jpg")


def test_what_is_not_a_readable_file_says_what_it_is(tmp_path, monkeypatch):
    (tmp_path / "folder.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would wait for a writer forever
    with pytest.raises(ImageReadError, match=r"^is a directory, not a file: .*folder.jpg$"):
        load_rgb(tmp_path / "folder.jpg")
    with pytest.raises(ImageReadError, match=r"^is not a regular file \(a FIFO, socket or device\): .*pipe.jpg$"):
        load_rgb(tmp_path / "pipe.jpg")
    _save(tmp_path / "locked.png", Image.new("L", (5, 4)))

    def denied(path, *args, **kwargs):  # as for a file without read permission (the tests may run as root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageReadError, match=r"^file not readable \(permission denied\): .*locked.png$"):
        load_rgb(tmp_path / "locked.png")


def _rec(i, image_id, path):
    return Record(id=str(i), image_id=image_id, image_path=str(path), texts=["x"], split="train")


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_skips_bad_images_and_dedupes(tmp_path, workers):
    good = [_save(tmp_path / f"{k}.png", Image.new("RGB", (6 + k, 5), (k, 0, 0))) for k in range(3)]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    records = [
        _rec(0, "a", good[0]),
        _rec(1, "a", good[0]),
        _rec(2, "bad", tmp_path / "bad.png"),
        _rec(3, "b", good[1]),
        _rec(4, "c", good[2]),
    ]
    items = unique_images(records, skip={"c"})
    assert items == [("a", str(good[0])), ("bad", str(tmp_path / "bad.png")), ("b", str(good[1]))]

    def to_tensor(im):
        return torch.from_numpy(np.array(im.resize((4, 4)))).permute(2, 0, 1)  # (3, 4, 4)

    batches = list(image_loader(items, to_tensor, batch_size=2, workers=workers))
    assert [b["ids"] for b in batches] == [["a"], ["b"]]
    assert batches[0]["skipped"][0][0] == "bad" and "not a readable image" in batches[0]["skipped"][0][1]
    assert batches[0]["images"].shape == (1, 3, 4, 4) and batches[1]["sizes"] == [(7, 5)]
    assert list(image_loader([], to_tensor)) == []


def test_exif_orientation_is_applied(tmp_path):
    # a 40 x 20 picture stored sideways, tagged "rotate 90 CW to display" (orientation 6)
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # left half red, right half blue as stored
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(a).save(path, exif=exif, quality=95)
    im = load_rgb(path)
    assert im.size == (20, 40)  # displayed upright: width and height swapped
    top, bottom = np.asarray(im)[5, 10], np.asarray(im)[35, 10]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red on top after the turn
    assert 0x0112 not in im.getexif()  # the tag is gone, so nothing rotates it twice


def test_plain_decode_is_pils_convert_as_itins_demo(tmp_path):
    """decode="plain" gives what `Image.open(path).convert('RGB')` does (ITIN's Demo.py): the
    stored pixels, no EXIF turn, alpha dropped rather than composited on white."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    sideways = _save(tmp_path / "sideways.jpg", Image.fromarray(a), exif=exif, quality=95)
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (10, 20, 30, 0))  # transparent, its colour still stored
    rgba = _save(tmp_path / "a.png", rgba)
    for path in (sideways, rgba):
        with Image.open(path) as im:
            want = np.asarray(im.convert("RGB"))
        items = [(path.stem, str(path))]
        batch = next(image_loader(items, None, workers=0, decode="plain"))
        np.testing.assert_array_equal(np.asarray(batch["images"][0]), want)
    assert batch["images"][0].getpixel((0, 0)) == (10, 20, 30)  # upright decoding gives white here
    assert next(image_loader([("s", str(sideways))], None, workers=0))["sizes"] == [(20, 40)]  # upright: turned
    with pytest.raises(ValueError, match="decode"):
        next(image_loader([("s", str(sideways))], None, workers=0, decode="exif"))


def test_scaled_loading_for_display_keeps_the_upright_full_size(tmp_path):
    from lighthead.extract.images import load_rgb_scaled

    a = np.zeros((1200, 1600, 3), np.uint8)
    a[:, :800] = (255, 0, 0)  # left half red, right half blue as stored
    a[:, 800:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    for name, kw, full in (
        ("plain.jpg", {}, (1600, 1200)),
        ("turned.jpg", {"exif": exif}, (1200, 1600)),
        ("plain.png", {}, (1600, 1200)),
    ):
        path = _save(tmp_path / name, Image.fromarray(a), **kw)
        im, size = load_rgb_scaled(path, 1600 * 1200 // 16)  # a quarter of each side
        assert size == full and im.size == (full[0] // 4, full[1] // 4) and im.mode == "RGB"
        assert load_rgb_scaled(path, 1600 * 1200)[0].size == full  # small enough: as it is
        if name == "turned.jpg":  # upright: the stored left (red) half is on top
            top, bottom = np.asarray(im)[5, 10], np.asarray(im)[-5, 10]
            assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def png_header(path, width, height):
    """A PNG of a few dozen bytes whose header claims width x height RGB pixels (no pixel data)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_pixel_limit_is_enforced_from_the_header_before_decoding(tmp_path):
    from lighthead.extract import images

    # 400 MP: above MAX_PIXELS but below twice it, where PIL itself only warns and decodes
    bomb = png_header(tmp_path / "bomb.png", 20_000, 20_000)
    assert images.MAX_PIXELS < 20_000 * 20_000 < 2 * images.MAX_PIXELS
    with pytest.raises(
        ImageReadError,
        match=r"image too large: .*bomb.png \(20000x20000 = 400,000,000 pixels, "
        r"the limit is 300,000,000\); not decoded",
    ):
        load_rgb(bomb)
    # far above: PIL's own error, reported the same way
    with pytest.raises(ImageReadError, match="image too large"):
        load_rgb(png_header(tmp_path / "huge.png", 100_000, 100_000))
    # a header under the limit is decoded (and fails only for its missing pixel data)
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        load_rgb(png_header(tmp_path / "small.png", 100, 100))


def test_pixel_limit_is_exact(tmp_path, monkeypatch):
    from lighthead.extract import images

    monkeypatch.setattr(images, "MAX_PIXELS", 110)
    assert load_rgb(_save(tmp_path / "a.png", Image.new("RGB", (10, 11)))).size == (10, 11)  # 110: at the limit
    with pytest.raises(ImageReadError, match=r"10x12 = 120 pixels, the limit is 110"):
        load_rgb(_save(tmp_path / "b.png", Image.new("RGB", (10, 12))))


def test_loader_lists_the_bomb_as_skipped_and_goes_on(tmp_path):
    good = _save(tmp_path / "good.png", Image.new("RGB", (6, 5)))
    bomb = png_header(tmp_path / "bomb.png", 20_000, 20_000)
    batches = list(image_loader([("bomb", str(bomb)), ("good", str(good))], None, batch_size=2, workers=0))
    assert batches[0]["ids"] == ["good"]
    ((skipped_id, reason),) = batches[0]["skipped"]
    assert skipped_id == "bomb" and "image too large" in reason


def test_large_images_decode_one_at_a_time(tmp_path, monkeypatch):
    """Above LARGE_PIXELS the decode holds the lock the loader workers share; smaller images do not."""
    from lighthead.extract import images

    class Recorder:
        def __init__(self):
            self.held = []

        def __enter__(self):
            self.held.append(True)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(images, "LARGE_PIXELS", 50)
    lock = Recorder()
    small = _save(tmp_path / "s.png", Image.new("RGB", (5, 5)))
    large = _save(tmp_path / "l.png", Image.new("RGB", (10, 10)))
    ds = images.ImageDataset([("s", str(small)), ("l", str(large))], None, large_lock=lock)
    assert ds[0]["size"] == (5, 5) and lock.held == []
    assert ds[1]["size"] == (10, 10) and lock.held == [True]
    assert images.large_lock(0) is None and images.large_lock(2) is not None


def _peak_bytes(fn):
    """Bytes the process's resident memory grew by at its peak while `fn()` ran (Linux VmHWM,
    reset before), and what `fn` returned."""
    status = Path("/proc/self/status")

    def read(key):
        return next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines() if line.startswith(key))

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    base = read("VmRSS:")
    out = fn()
    return read("VmHWM:") - base, out


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
@pytest.mark.parametrize("mode, bound", [("I;16", 5.5), ("F", 5.5), ("I", 5.5), ("RGBA", 8.5), ("RGB", 4.5)])
def test_decoding_stays_within_its_bytes_per_pixel(tmp_path, monkeypatch, mode, bound):
    """The documented bound (docs/reliability.md): PIL holds RGB in 4 bytes a pixel; converting keeps the
    original beside it: at most 5 bytes a pixel for greyscale of any depth, 8 with alpha. A 16-bit or float
    image took about 18 (a float64 copy and its temporaries), one with alpha about 20."""
    from lighthead.extract import images

    monkeypatch.setattr(images, "BAND_PIXELS", 1 << 14)  # the working memory, small beside the image
    w, h = 2000, 1500
    ramp = (np.arange(w * h, dtype=np.uint32) % 65536).reshape(h, w)  # (H, W)
    if mode == "I;16":
        im = Image.fromarray(ramp.astype(np.uint16))
    elif mode in ("F", "I"):
        im = Image.fromarray(ramp.astype(np.float32 if mode == "F" else np.int32) * 3)
    else:
        im = Image.fromarray(np.stack([(ramp >> 8).astype(np.uint8)] * len(mode), -1), mode)
    path = _save(tmp_path / ("x.tif" if mode in ("F", "I") else "x.png"), im)
    assert Image.open(path).mode == mode
    del im
    grown, rgb = _peak_bytes(lambda: load_rgb(path))
    assert rgb.mode == "RGB" and rgb.size == (w, h)
    assert grown / (w * h) < bound, f"{mode}: {grown / (w * h):.1f} bytes a pixel"
