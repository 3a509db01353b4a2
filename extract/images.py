"""Image reading shared by every image feature job (global CNN, thumbnails, region detector).

Use it like this::

    from lighthead.extract.images import unique_images, image_loader

    items = unique_images(records, skip=writer.done_ids)     # [(image_id, path)], one per image_id
    for batch in image_loader(items, transform, batch_size=8, workers=2):
        batch["ids"]      # list[str]: images decoded fine, in order
        batch["images"]   # whatever `transform` returns, stacked if tensors (else a list)
        batch["sizes"]    # list[(width, height)] of the decoded originals
        batch["skipped"]  # list[(image_id, reason)]: unreadable inputs of this batch

Decoding runs in DataLoader worker processes. `load_rgb` applies the EXIF orientation tag
(as OpenCV's imread does), turns CMYK, greyscale, palette and alpha images into 3-channel RGB
(alpha composited on white, so transparent logos do not turn black), and raises `ImageReadError` with a one-line reason for a missing, truncated or
undecodable file; the loader turns that into a skipped entry instead of stopping the run.

Memory: an image above `MAX_PIXELS` (width x height, read from the file's header before any
pixel is decoded) is refused, whatever the format. An image above `LARGE_PIXELS` is decoded
by one loader worker at a time (a lock shared by the workers), so N workers hold at most one
such image plus N - 1 images below `LARGE_PIXELS`; a decoded image is never copied whole
except to convert its mode or turn it upright. PIL holds an RGB pixel in 4 bytes; converting
keeps the original beside the RGB image, a band of rows at a time (`to_rgb`), so decoding
needs at most 8 bytes a pixel (CMYK, alpha, an EXIF turn), 5 for greyscale of any depth.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

# Refuse decompression bombs: a few hundred megapixels is far beyond any dataset we read.
MAX_PIXELS = 300_000_000  # width x height above this is refused from the header (at most 8 bytes/pixel: 2.4 GB)
LARGE_PIXELS = 40_000_000  # above this, one loader worker at a time decodes
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own check (only a warning up to twice this): exact below
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a skipped input, not a grey half-image


class ImageReadError(Exception):
    """An image could not be read; the message is the reason shown in the skipped list."""


def file_problem(path: str | Path) -> str | None:
    """Why `path` is not a readable image file, from its metadata alone, or None: "file not
    found", "is a directory, not a file", "is not a regular file (...)", ... Checked before
    opening, since opening a FIFO would wait for a writer forever."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "file not readable (permission denied)"
    except OSError as e:  # a file where a folder of the path should be, a link loop, ...
        return f"file not readable ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    return None


def open_image(path: str | Path) -> Image.Image:
    """Open `path` lazily (header only) and refuse it when it claims more than MAX_PIXELS."""
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise ImageReadError(f"{problem}: {path}")
    try:
        with warnings.catch_warnings():  # PIL only warns between MAX_IMAGE_PIXELS and twice that: checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(f"not a readable image: {path}") from None
    except Image.DecompressionBombError:  # over twice PIL's limit: refused by PIL from the header
        raise ImageReadError(
            f"image too large: {path} (more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, "
            f"the limit is {MAX_PIXELS:,}); not decoded"
        ) from None
    except PermissionError:  # not "corrupt": the bytes were never read
        raise ImageReadError(f"file not readable (permission denied): {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"corrupt or truncated image: {path} ({e})") from None
    width, height = im.size
    if width * height > MAX_PIXELS:  # exact, whatever PIL's own limit is set to
        im.close()
        raise ImageReadError(
            f"image too large: {path} ({width}x{height} = {width * height:,} pixels, "
            f"the limit is {MAX_PIXELS:,}); not decoded"
        )
    return im


DECODES = ("upright", "plain")  # how `decode_rgb` turns a file into RGB (see there)


def decode_rgb(im: Image.Image, path: str | Path, decode: str = "upright") -> Image.Image:
    """Decode an image from `open_image` into RGB (raises ImageReadError with a reason).

    "upright": the EXIF orientation applied, alpha composited on white (`to_rgb`); "plain":
    PIL's `convert("RGB")` of the pixels as stored, as `Image.open(path).convert('RGB')` in
    ITIN's Demo.py gives them (no EXIF turn, alpha dropped).
    """
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {decode!r}")
    try:
        im.load()  # decode now, so truncation surfaces here and not later in a transform
        if decode == "plain":
            with im:
                return im.convert("RGB")  # a new image: the file's one can close
        # Upright as viewers (and OpenCV's imread, which the reference detector code uses)
        # show it: a camera's EXIF orientation tag is applied, then dropped.
        ImageOps.exif_transpose(im, in_place=True)
        if getattr(im, "fp", None) is None:  # a single frame: loading closed the file, no copy needed
            return to_rgb(im, copy=False, release=True)
        with im:  # several frames keep the file open: copy the one decoded, then close
            return to_rgb(im, release=True)
    except (OSError, SyntaxError, ValueError) as e:
        im.close()
        raise ImageReadError(f"corrupt or truncated image: {path} ({e})") from None


def load_rgb(path: str | Path) -> Image.Image:
    """Decode `path` fully into an RGB PIL image (raises ImageReadError with a reason)."""
    return decode_rgb(open_image(path), path)


def load_rgb_scaled(path: str | Path, max_pixels: int) -> tuple[Image.Image, tuple[int, int]]:
    """`load_rgb` for display: the image upright in RGB, shrunk (aspect kept) to at most
    `max_pixels` pixels, and its full upright (width, height). A JPEG is decoded at 1/2, 1/4 or
    1/8 scale directly (libjpeg's scaled decoding, PIL's `draft`), so a huge photo never exists
    in memory at full size; other formats are decoded whole (within the bound above), then reduced."""
    im = open_image(path)
    w, h = im.size
    scale = math.sqrt(max_pixels / (w * h))
    if scale < 1:
        im.draft(None, (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))  # at least this size
    decoded = im.size
    rgb = decode_rgb(im, path)
    turned = rgb.size != decoded  # an EXIF orientation swapped width and height
    full = (h, w) if turned else (w, h)
    if scale < 1:
        target = (max(1, int(full[0] * scale)), max(1, int(full[1] * scale)))
        rgb = rgb.resize(target, Image.Resampling.BOX, reducing_gap=2.0)
    return rgb, full


def to_rgb(im: Image.Image, copy: bool = True, release: bool = False) -> Image.Image:
    """RGB version of any PIL mode: alpha composited on white; CMYK, L, P, I;16, ... converted.
    An RGB image is copied unless `copy` is False. `release`: the caller is done with `im`, whose
    pixels are freed once converted (a 16-bit or float image before its 8-bit copy becomes RGB).

    Memory (bytes a pixel; PIL holds RGB, RGBA, CMYK, I and F in 4, I;16 in 2, L and P in 1):
    the original beside the RGB result, with only BAND_PIXELS pixels of working memory, so at
    most 8 (CMYK, alpha); 16/32-bit and float greyscale first become an 8-bit copy, at most 5.
    """
    if im.mode == "RGB":
        return im.copy() if copy else im
    if im.mode in DEEP_GREY:  # scaled to 8 bits first: the RGB conversion would clip them
        grey = _deep_grey_to_l(im)
        if release:
            im.close()
        im, release = grey, True
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        out = Image.new("RGB", im.size)
        white = Image.new("RGBA", (im.width, _band_rows(im.width)), (255, 255, 255, 255))
        for y0, y1 in _bands(im):
            band = im.crop((0, y0, im.width, y1)).convert("RGBA")
            out.paste(Image.alpha_composite(white.crop((0, 0, im.width, y1 - y0)), band).convert("RGB"), (0, y0))
    else:
        out = im.convert("RGB")
    if release:
        im.close()
    return out


DEEP_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16-bit, 32-bit and float greyscale
BAND_PIXELS = 1 << 18  # pixels converted at a time: the working memory of a conversion


def _band_rows(width: int) -> int:
    return max(1, BAND_PIXELS // max(1, width))


def _bands(im: Image.Image) -> Iterator[tuple[int, int]]:
    """(first row, end row) of each band of about BAND_PIXELS pixels."""
    rows = _band_rows(im.width)
    for y0 in range(0, im.height, rows):
        yield y0, min(im.height, y0 + rows)


def _deep_grey_to_l(im: Image.Image) -> Image.Image:
    """An 8-bit ("L") copy of a 16/32-bit or float greyscale image, its finite range scaled to
    0..255 (NaN and inf become 0), a band at a time: no full-size float copy."""
    import numpy as np

    lo, hi = np.inf, -np.inf
    for y0, y1 in _bands(im):
        a = np.asarray(im.crop((0, y0, im.width, y1)))  # (rows, W) as stored
        a = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    out = np.zeros((im.height, im.width), np.uint8)  # (H, W)
    if hi > lo:
        for y0, y1 in _bands(im):
            a = np.asarray(im.crop((0, y0, im.width, y1)), dtype=np.float64)
            with np.errstate(invalid="ignore"):
                scaled = np.nan_to_num((a - lo) / (hi - lo) * 255.0, nan=0.0, posinf=0.0, neginf=0.0)
            out[y0:y1] = scaled.astype(np.uint8)
    return Image.fromarray(out)  # mode "L"


def unique_images(records: Iterable[Any], skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(image_id, image_path) once per image_id, in first-seen order, leaving out ids in `skip`."""
    done = set(skip)
    items: dict[str, str] = {}
    for r in records:
        if r.image_id not in done and r.image_id not in items:
            items[r.image_id] = r.image_path
    return list(items.items())


class ImageDataset(Dataset):
    """Decodes (image_id, path) items; yields a dict with "id", "image", "size", "error".

    A failed read yields image None and the reason in "error" (never raises), so one bad
    file cannot stop a worker.
    """

    def __init__(
        self,
        items: Sequence[tuple[str, str]],
        transform: Callable[[Image.Image], Any] | None = None,
        large_lock: Any = None,
        decode: str = "upright",
    ):
        self.items = list(items)  # (image_id, path)
        self.transform = transform  # PIL RGB image -> tensor (or anything); None keeps the PIL image
        self.large_lock = large_lock  # a multiprocessing lock: one image above LARGE_PIXELS at a time
        if decode not in DECODES:  # here, not per image, where it would skip every one
            raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {decode!r}")
        self.decode = decode  # `decode_rgb`'s "upright" or "plain"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id, path = self.items[index]
        try:
            im = open_image(path)
            large = im.size[0] * im.size[1] > LARGE_PIXELS and self.large_lock is not None
            with self.large_lock if large else contextlib.nullcontext():
                im = decode_rgb(im, path, self.decode)
                size = im.size
                image = self.transform(im) if self.transform else im
                del im  # a large original is freed before the lock is released
            return {"id": image_id, "image": image, "size": size, "error": None}
        except ImageReadError as e:
            return {"id": image_id, "image": None, "size": None, "error": str(e)}
        except Exception as e:  # a transform failing on one odd image skips it, with the reason
            return {"id": image_id, "image": None, "size": None, "error": f"cannot transform {path}: {e}"}


def collate_images(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch of ImageDataset items -> ids, images (stacked when tensors of one shape), sizes, skipped."""
    ok = [b for b in batch if b["error"] is None]
    images: Any = [b["image"] for b in ok]
    if images and all(isinstance(x, torch.Tensor) for x in images) and len({x.shape for x in images}) == 1:
        images = torch.stack(images)  # (B, ...) same-shape tensors
    return {
        "ids": [b["id"] for b in ok],
        "images": images,
        "sizes": [b["size"] for b in ok],
        "skipped": [(b["id"], b["error"]) for b in batch if b["error"] is not None],
    }


def large_lock(workers: int) -> Any:
    """The lock the loader workers share for images above LARGE_PIXELS (None without workers)."""
    import multiprocessing

    return multiprocessing.Lock() if workers > 0 else None


def image_loader(
    items: Sequence[tuple[str, str]],
    transform: Callable[[Image.Image], Any] | None,
    batch_size: int = 8,
    workers: int = 2,
    decode: str = "upright",
) -> Iterator[dict[str, Any]]:
    """Iterate batches (see `collate_images`) of decoded images (`decode_rgb`'s `decode`), decoding
    in `workers` processes."""
    if not items:
        return iter(())
    loader = DataLoader(
        ImageDataset(items, transform, large_lock(workers), decode),
        batch_size=batch_size,
        shuffle=False,
        num_workers=max(0, workers),
        collate_fn=collate_images,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
    return iter(loader)
