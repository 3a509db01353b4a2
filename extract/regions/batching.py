"""Image preparation for the detector, run in DataLoader workers, and padded batching.

Each checkpoint format is prepared the way its reference prepares it (`DetectorConfig.resize`):

- "cv2" (py-faster-rcnn's `_get_image_blob`, bottom-up-attention.pytorch's
  `bua/caffe/dataloader/transform_gen.py` and `utils/extract_utils.get_image_blob`): scale =
  min_size / shorter side, replaced by max_size / longer side when `np.round(scale * longer)`
  passes max_size; BGR pixels as float minus the pixel mean, then `cv2.resize(fx=fy=scale,
  INTER_LINEAR)`: bilinear without antialiasing, sampled at `(dst + 0.5) / scale - 0.5`, each
  side `cvRound(side * scale)` (half to even). Boxes map with the one scale.
- "pil" (detectron2's `ResizeShortestEdge.get_transform` and `ResizeTransform.apply_image`, as
  py-bottom-up-attention runs them; read in its fork, `detectron2/data/transforms/`): the
  shorter side set to min_size and the longer one to `scale * longer`, both multiplied by
  max_size / longer when that *unrounded* value passes max_size, each then `int(x + 0.5)`;
  the uint8 image resized by `PIL.Image.resize((new_w, new_h), BILINEAR)` (antialiased when
  shrinking, rounded to uint8), and only then the mean subtracted (detectron2's
  `preprocess_image`). Boxes map per axis by new size / old size.

`scale` of a prepared image is the pair (scale_y, scale_x): equal under "cv2", each axis's
new size / old size under "pil". Decoding (CMYK, greyscale, palette, alpha) and the reasons
for skipping unreadable files come from `lighthead.extract.images`.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from lighthead.extract.images import ImageDataset, collate_images, large_lock
from lighthead.extract.regions.config import DetectorConfig

# Images above this many pixels are first shrunk by an integer factor (PIL's box reduce) before
# the "cv2" preparation, so a huge scan cannot exhaust memory as float32; the final resize
# still targets the test scale. The "pil" preparation resizes the uint8 image directly.
MAX_DECODED_PIXELS = 40_000_000


def image_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """The test-time resize factor of py-faster-rcnn (max_size tested on the rounded long side)."""
    short, long = min(height, width), max(height, width)
    scale = float(min_size) / float(short)
    if round(scale * long) > max_size:  # np.round in the original: half-to-even, as Python's round
        scale = float(max_size) / float(long)
    return scale


def resized_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Output size of cv2.resize(fx=fy=scale): each side cvRound(side * scale), i.e. rounded
    half to even, at least 1."""
    return max(1, round(height * scale)), max(1, round(width * scale))  # Python's round: half to even


def detectron2_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w) of detectron2's ResizeShortestEdge: max_size tested before rounding."""
    scale = min_size * 1.0 / min(height, width)
    if height < width:
        new_h, new_w = float(min_size), scale * width
    else:
        new_h, new_w = scale * height, float(min_size)
    if max(new_h, new_w) > max_size:
        shrink = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def plan_resize(height: int, width: int, cfg: DetectorConfig) -> tuple[tuple[int, int], tuple[float, float]]:
    """((new_h, new_w), (scale_y, scale_x)) of an image under the config's resize rule."""
    if getattr(cfg, "resize", "cv2") == "pil":
        out_h, out_w = detectron2_size(height, width, cfg.min_size, cfg.max_size)
        return (out_h, out_w), (out_h / height, out_w / width)
    scale = image_scale(height, width, cfg.min_size, cfg.max_size)
    return resized_size(height, width, scale), (scale, scale)


def resize_like_pillow9(im: Image.Image, out_w: int, out_h: int) -> Image.Image:
    """`im.resize((out_w, out_h), BILINEAR)` as Pillow 9 computes it, under any Pillow.

    py-bottom-up-attention needs Pillow < 10 (it uses `Image.LINEAR`). Pillow resamples in two
    8-bit passes; Pillow 9 always runs the horizontal pass first, Pillow >= 10 runs the vertical
    one first when that is cheaper (downscaled images taller than about 1.9x their width), which
    moves values by one grey level and then the selected boxes. Two explicit passes, width then
    height, give Pillow 9's bytes (tests/extract/regions/test_pillow9_resize.py holds digests
    made with Pillow 9.5.0)."""
    if im.size == (out_w, out_h):
        return im
    if im.width != out_w:
        im = im.resize((out_w, im.height), Image.BILINEAR)
    if im.height != out_h:
        im = im.resize((out_w, out_h), Image.BILINEAR)
    return im


class Prepare:
    """PIL RGB image -> dict(image (3, h, w) float32 mean-subtracted BGR, scale (sy, sx), size (h, w))."""

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.mean = torch.tensor(cfg.pixel_mean, dtype=torch.float32).reshape(3, 1, 1)

    def __call__(self, im: Image.Image) -> dict[str, Any]:
        width, height = im.size
        if width < 1 or height < 1:
            raise ValueError(f"empty image ({width}x{height})")
        (out_h, out_w), scale = plan_resize(height, width, self.cfg)
        if getattr(self.cfg, "resize", "cv2") == "pil":
            x = self._pil(im, out_h, out_w)
        else:
            x = self._cv2(im, out_h, out_w, scale[0])
        return {"image": x.contiguous(), "scale": scale, "size": (out_h, out_w)}

    def _pil(self, im: Image.Image, out_h: int, out_w: int) -> torch.Tensor:
        # Resampling is per channel, so RGB here equals detectron2 resizing the BGR array.
        im = resize_like_pillow9(im, out_w, out_h)
        rgb = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())  # (h, w, 3)
        return rgb.permute(2, 0, 1).flip(0).float() - self.mean  # (3, h, w) BGR minus mean

    def _cv2(self, im: Image.Image, out_h: int, out_w: int, scale: float) -> torch.Tensor:
        width, height = im.size
        if width * height > MAX_DECODED_PIXELS:
            factor = int(np.ceil(np.sqrt(width * height / MAX_DECODED_PIXELS)))
            im = im.reduce(factor)
        rgb = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())  # (H, W, 3)
        x = rgb.permute(2, 0, 1).flip(0).float() - self.mean  # (3, H, W) BGR minus mean
        if (x.shape[1], x.shape[2]) != (out_h, out_w):
            src_scale_h, src_scale_w = out_h / x.shape[1], out_w / x.shape[2]
            if x.shape[1] == height:  # not reduced: map coordinates with the scale itself, as cv2 does
                src_scale_h = src_scale_w = scale
            x = torch.ops.aten.upsample_bilinear2d(x[None], [out_h, out_w], False, src_scale_h, src_scale_w)[0]
        return x


@dataclass
class Batch:
    """A padded batch ready for the detector."""

    ids: list[str]  # image ids decoded fine, in order
    images: torch.Tensor  # (B, 3, H, W) padded, mean-subtracted BGR
    image_sizes: list[tuple[int, int]]  # (h, w) of each resized image
    scales: list[tuple[float, float]]  # (scale_y, scale_x) resize factors of each image
    original_sizes: list[tuple[int, int]]  # (width, height) of each original image
    skipped: list[tuple[str, str]]  # (image id, reason) of inputs that could not be read

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True): page-locked images copy to the GPU asynchronously."""
        self.images = self.images.pin_memory()
        return self


def padded_shape(images: Sequence[torch.Tensor], divisibility: int) -> tuple[int, int, int, int]:
    """(B, 3, H, W) of the padded batch: H and W the largest sides rounded up to multiples of divisibility."""
    H = max(x.shape[1] for x in images)
    W = max(x.shape[2] for x in images)
    return len(images), 3, -(-H // divisibility) * divisibility, -(-W // divisibility) * divisibility


def pad_into(out: torch.Tensor, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Write (3, h_i, w_i) images top-left aligned into the preallocated (B, 3, H, W) `out`, zero
    around them (zero = the mean colour, as Caffe pads); whatever `out` held is overwritten."""
    for i, x in enumerate(images):
        h, w = x.shape[1], x.shape[2]
        out[i, :, :h, :w] = x
        out[i, :, :h, w:] = 0
        out[i, :, h:] = 0
    return out


def pad_batch(images: Sequence[torch.Tensor], divisibility: int, pin_memory: bool = False) -> torch.Tensor:
    """Stack (3, h_i, w_i) images top-left aligned into (B, 3, H, W), H and W multiples of divisibility.

    pin_memory: pad straight into page-locked memory, which a GPU copies from asynchronously
    (padding first and pinning after would copy every batch twice on the host)."""
    out = torch.empty(padded_shape(images, divisibility), dtype=images[0].dtype, pin_memory=pin_memory)
    return pad_into(out, images)


class Collate:
    """collate_fn for DataLoader workers: decode results -> a padded `Batch`."""

    def __init__(self, divisibility: int):
        self.divisibility = divisibility

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        b = collate_images(items)
        prepared = b["images"]
        if not b["ids"]:
            return Batch([], torch.zeros((0, 3, 0, 0)), [], [], [], b["skipped"])
        return Batch(
            ids=b["ids"],
            images=pad_batch([p["image"] for p in prepared], self.divisibility),
            image_sizes=[p["size"] for p in prepared],
            scales=[p["scale"] for p in prepared],
            original_sizes=list(b["sizes"]),
            skipped=b["skipped"],
        )


def bucketed(singles: Iterable[Batch], batch_size: int, divisibility: int, pin_memory: bool = False) -> Iterator[Batch]:
    """Regroup one-image batches into batches of one orientation (landscape or portrait).

    Mixing a 600x1000 and a 1000x600 image would pad both to 1000x1000 (67% more pixels);
    grouping by orientation keeps the padding to the small size differences within a group.
    Skipped inputs are passed on at once, in batches without images. pin_memory: the batches
    are padded into page-locked memory (see `pad_batch`).
    """
    groups: dict[bool, list[tuple]] = {True: [], False: []}

    def emit(group: list[tuple]) -> Batch:
        ids, images, sizes, scales, originals = zip(*group)
        return Batch(
            list(ids), pad_batch(images, divisibility, pin_memory), list(sizes), list(scales), list(originals), []
        )

    for b in singles:
        if b.skipped:
            yield Batch([], torch.zeros((0, 3, 0, 0)), [], [], [], list(b.skipped))
        for i, image_id in enumerate(b.ids):
            h, w = b.image_sizes[i]
            key = w >= h
            groups[key].append((image_id, b.images[i, :, :h, :w], (h, w), b.scales[i], b.original_sizes[i]))
            if len(groups[key]) == batch_size:
                yield emit(groups[key])
                groups[key] = []
    for group in groups.values():
        if group:
            yield emit(group)


def batches(
    items: Sequence[tuple[str, str]],
    cfg: DetectorConfig,
    batch_size: int = 8,
    workers: int = 2,
    device: torch.device | None = None,
) -> Iterator[Batch]:
    """Padded batches of (image_id, path) items, decoded and resized in `workers` processes,
    grouped by orientation (see `bucketed`).

    device: where the batches go. None: they are regrouped and padded as they are asked for. A
    device: a prefetch thread regroups and pads them ahead, for a CUDA device straight into
    page-locked memory, so the main thread only starts one non-blocking copy per batch.
    """
    if not items:
        return iter(())
    loader = torch.utils.data.DataLoader(
        ImageDataset(items, Prepare(cfg), large_lock(workers)),
        batch_size=1,
        shuffle=False,
        num_workers=max(0, workers),
        collate_fn=Collate(cfg.size_divisibility),
        prefetch_factor=2 * batch_size if workers > 0 else None,
        persistent_workers=False,
    )
    if device is None:
        return bucketed(loader, batch_size, cfg.size_divisibility)
    singles = iter(loader)  # the decoding workers start from this thread, not the prefetch thread
    pin = device.type == "cuda"

    def produce() -> Iterator[Batch]:
        if pin and device.index is not None:
            torch.cuda.set_device(device)  # a thread's current device is its own: pin for this one
        yield from bucketed(singles, batch_size, cfg.size_divisibility, pin_memory=pin)

    return prefetch(produce, depth=2)


_DONE = object()  # the end of a prefetched stream


def prefetch(produce: Callable[[], Iterable[Any]], depth: int = 2) -> Iterator[Any]:
    """Iterate `produce()` in a background thread, at most `depth` items ahead; items come in
    order, an error of the producer is raised here, and closing this iterator early (or an
    error of the consumer) stops the thread."""
    out: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in produce():
                if not put((True, item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((False, exc))
            return
        put((True, _DONE))

    def consume() -> Iterator[Any]:
        # started with the first item asked for: an iterator never used leaves no thread behind
        thread = threading.Thread(target=run, name="batch-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                ok, item = out.get()
                if not ok:
                    raise item
                if item is _DONE:
                    return
                yield item
        finally:
            stop.set()
            thread.join()

    return consume()
