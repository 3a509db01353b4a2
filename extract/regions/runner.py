"""The extraction loop: decoded batches -> detector -> selected regions -> a sink, overlapped.

Images are decoded and resized in DataLoader workers; on a GPU a prefetch thread regroups
them and pads each batch straight into page-locked memory, so the main thread starts one
non-blocking copy per batch; the detector runs in the main thread (GPU: autocast bf16/fp16
for the convolutions by default, box arithmetic in float32; the `precision` option picks
another), and the finished
items go through a bounded queue to a background thread that writes them (HDF5 never makes
the GPU wait). One bad image never stops a run: it is reported with its reason. That holds for
unreadable files (the loader skips them) and for any failure inside the detector: a batch
that raises is run again one image at a time, and the image that still raises is skipped with
the error as its reason (a rerun tries it again, and skips it again;
`lighthead.extract.per_image`, shared with the global-image jobs). An image with no proposal (a
side under 16 pixels, e.g. 1x5000: every box is below the RPN's minimum size) is no failure: it
gets no regions (`num_boxes` 0). Errors of the sink (the store: disk full, ...) still stop the
run, and so does a failed device (an illegal memory access, a device-side assert:
`per_image.is_fatal`), in the detector or in the copy out.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from lighthead.extract.per_image import batch_or_each, device_error, is_fatal, reason
from lighthead.extract.precision import DTYPES, autocast, resolve
from lighthead.extract.regions.batching import Batch, batches, pad_batch
from lighthead.extract.regions.config import SelectionConfig
from lighthead.extract.regions.model import BottomUpDetector

Sink = Callable[[str, dict[str, np.ndarray]], Any]


def item_fields(selection: SelectionConfig, dim: int, dtype: str = "float16") -> list[tuple[str, tuple, str]]:
    """(name, shape, dtype) of the stored fields; K is fixed for modes "fixed" and "d2-maxnms", else variable."""
    k = selection.num_boxes if selection.fixed_k else None
    return [
        ("features", (k, dim), dtype),
        ("boxes", (k, 4), "float32"),
        ("object_ids", (k,), "int32"),
        ("object_scores", (k,), "float32"),
        ("attr_ids", (k,), "int32"),
        ("attr_scores", (k,), "float32"),
        ("num_boxes", (), "int32"),
        ("image_w", (), "int32"),
        ("image_h", (), "int32"),
    ]


def to_item(
    region: Mapping[str, torch.Tensor], width: int, height: int, selection: SelectionConfig, dtype: str = "float16"
) -> dict[str, np.ndarray]:
    """One image's selected regions as numpy fields. Fixed K with fewer boxes than K (tiny
    images) is padded with zero rows and ids -1; `num_boxes` tells the real count."""
    n = int(region["boxes"].shape[0])
    item = {
        "features": region["features"].float().cpu().numpy().astype(dtype),
        "boxes": region["boxes"].float().cpu().numpy(),
        "object_ids": region["object_ids"].cpu().numpy().astype(np.int32),
        "object_scores": region["object_scores"].float().cpu().numpy(),
        "attr_ids": region["attr_ids"].cpu().numpy().astype(np.int32),
        "attr_scores": region["attr_scores"].float().cpu().numpy(),
    }
    if selection.fixed_k and n < selection.num_boxes:
        pad = selection.num_boxes - n
        for key, arr in item.items():
            fill = -1 if key.endswith("_ids") else 0
            item[key] = np.concatenate([arr, np.full((pad,) + arr.shape[1:], fill, arr.dtype)], axis=0)
    item["num_boxes"] = np.int32(n)
    item["image_w"] = np.int32(width)
    item["image_h"] = np.int32(height)
    return item


class BackgroundSink:
    """Runs `sink(*job)` on a worker thread fed by a bounded queue; re-raises its errors."""

    def __init__(self, sink: Callable[..., Any], max_pending: int = 64):
        self.sink = sink
        self.results: list[Any] = []
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="region-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    self.results.append(self.sink(*job))
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    self._error = exc

    def put(self, *job: Any) -> None:
        """Queue `sink(*job)` (blocks while `max_pending` jobs wait)."""
        if self._error is not None:
            raise self._error
        self._queue.put(job)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


@dataclass
class RunStats:
    """What `extract_regions` did."""

    written: int = 0  # items handed to the sink
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)
    images_per_s: float = 0.0  # over the whole loop


def _batch_name(ids: Sequence[str]) -> str:
    """The images of a batch, for an error: `image ID` or `images ID (+N more)`."""
    return f"image {ids[0]}" if len(ids) == 1 else f"images {ids[0]} (+{len(ids) - 1} more)"


GPU_PRECISION = "bf16"  # the detector's "auto" precision on CUDA (fp16 on a GPU without bf16)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The "auto" precision's dtype: bf16 where the GPU supports it, else fp16; None (float32) on the CPU."""
    return DTYPES[resolve("auto", device, GPU_PRECISION)]


def extract_regions(
    model: BottomUpDetector,
    items: Sequence[tuple[str, str]],
    sink: Sink,
    selection: SelectionConfig,
    given_boxes: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 8,
    loader_workers: int = 2,
    dtype: str = "float16",
    progress: Callable[[int], None] | None = None,
    batch_source: Iterable[Batch] | None = None,
    precision: str = "auto",
) -> RunStats:
    """Run the detector over (image_id, path) items and hand each image's regions to `sink`.

    given_boxes: for mode "given", image id -> (N, 4) boxes in original pixels.
    progress: called with the number of inputs finished (written or skipped) per batch.
    precision: "auto" (bf16 on a GPU, fp16 without bf16; fp32 on a CPU), "fp32", "bf16" or "fp16"
    (`lighthead.extract.precision`).
    """
    import time

    device = next(model.parameters()).device
    precision = resolve(precision, device, GPU_PRECISION)
    stats = RunStats()
    start = time.perf_counter()
    source = (
        batch_source
        if batch_source is not None
        else batches(items, model.cfg, batch_size, loader_workers, device if device.type == "cuda" else None)
    )

    def detect(images: torch.Tensor, sizes: list, scales: list, boxes: list | None) -> list:
        images = images.to(device, non_blocking=True)
        with autocast(precision, device):
            outputs = model(images, sizes, scales, boxes=boxes)
        return model.regions(outputs, selection)

    def detect_alone(batch: Batch, k: int, boxes: list | None) -> dict[str, torch.Tensor]:
        h, w = batch.image_sizes[k]
        alone = pad_batch([batch.images[k, :, :h, :w]], model.cfg.size_divisibility)  # (1, 3, H, W)
        return detect(alone, [(h, w)], [batch.scales[k]], boxes and [boxes[k]])[0]

    def write(image_id: str, region: Mapping[str, torch.Tensor], w: int, h: int) -> tuple[str, str] | None:
        # The device-to-host copies and the HDF5 writes both happen on the writer thread; an item
        # that cannot be converted is skipped; a sink (store) error or a failed device stops the run.
        try:
            item = to_item(region, w, h, selection, dtype)
        except Exception as exc:  # noqa: BLE001 - one image's odd output skips that image
            if is_fatal(exc):  # the copy out is where an asynchronous kernel failure surfaces
                raise device_error(f"image {image_id}", exc) from exc
            return image_id, f"cannot store the detector output ({w}x{h} image): {reason(exc)}"
        sink(image_id, item)
        return None

    writer = BackgroundSink(write)
    try:
        for batch in source:
            stats.skipped.extend(batch.skipped)
            if batch.ids:
                boxes = None
                if selection.mode == "given":
                    boxes = [torch.as_tensor(np.asarray(given_boxes[i], np.float32)).reshape(-1, 4) for i in batch.ids]
                regions = batch_or_each(
                    len(batch.ids),
                    lambda: detect(batch.images, batch.image_sizes, batch.scales, boxes),  # noqa: B023 - called before the loop moves on
                    lambda k: detect_alone(batch, k, boxes),  # noqa: B023 - called before the loop moves on
                    where=_batch_name(batch.ids),
                )
                for image_id, region, (w, h) in zip(batch.ids, regions, batch.original_sizes, strict=True):
                    if isinstance(region, Exception):
                        stats.skipped.append((image_id, f"detector failed on this {w}x{h} image: {reason(region)}"))
                    else:
                        writer.put(image_id, region, w, h)
            if progress is not None:
                progress(len(batch.ids) + len(batch.skipped))
    finally:
        writer.close()
    failed = [r for r in writer.results if r is not None]
    stats.skipped.extend(failed)
    stats.written = len(writer.results) - len(failed)
    stats.images_per_s = stats.written / max(time.perf_counter() - start, 1e-9)
    return stats
