"""Part 2: images/s of the region detector per precision, box count and batch, and the whole extract loop."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.gpu_parts.common import Device, Part, load_bench, timed
from bench.gpu_parts.sizes import Sizes

# What a CPU (the dry run) cannot exercise in this part.
CUDA_ONLY = (
    "bf16/fp16 autocast of the convolutions (the dry run's bf16 rows use the CPU's autocast)",
    "channels-last convolutions",
    "page-locked batches and non-blocking copies",
    "memory peaks and memory-based skips",
)


def detector_part(part: Part, dev: Device, sizes: Sizes) -> None:
    import torch

    from lighthead.extract.regions.batching import batches, bucketed
    from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
    from lighthead.extract.regions.model import BottomUpDetector, init_random

    extract_bench = load_bench("extract")
    cfg = DetectorConfig.from_name(sizes.detector, **sizes.detector_overrides)
    # bf16 autocast where the GPU has it (Ampere and later), else the fp16 the runner falls back to
    low = "fp16" if dev.cuda and not torch.cuda.is_bf16_supported() else "bf16"
    autocast = {"fp32": None, low: torch.float16 if low == "fp16" else torch.bfloat16}
    cases = [(p, k, b) for p in autocast for k in sizes.boxes for b in sizes.detector_batches]

    def name(p: str, k: int, b: int) -> str:
        return f"{p}, {k} boxes, batch {b}"

    loop_case = (
        f"whole extract loop: JPEGs decoded by {sizes.loop_workers} workers, batch {sizes.loop_batch}, "
        f"{min(sizes.boxes)} boxes"
    )
    part.plan([name(*c) for c in cases] + [loop_case])
    scale = f"{cfg.min_size}/{cfg.max_size}, {cfg.rpn_post_nms_top_n} ROIs"

    with tempfile.TemporaryDirectory(prefix="lighthead-gpu-bench-") as tmp:

        def setup():
            items = extract_bench.make_images(Path(tmp), sizes.detector_images, *sizes.image_hw)
            model = init_random(BottomUpDetector(cfg), seed=0).to(dev.device)
            model = model.optimize_for_inference(channels_last=dev.cuda)
            # decoded and resized once; each batch size regroups the same single images
            singles = list(batches(items, cfg, 1, workers=sizes.loop_workers))
            return items, model, singles

        ready = part.prepare(f"{cfg.name} ({scale}), {sizes.detector_images} images", setup)
        if ready is None:
            return
        items, model, singles = ready
        base = dev.allocated()  # the weights
        per_image: dict[str, float] = {}  # precision -> bytes per image in a batch (from the smallest batch)

        def one_pass(prepared: list, selection, dtype) -> int:
            n = 0
            for batch in prepared:
                images = batch.images.to(dev.device, non_blocking=True)
                with torch.autocast(dev.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    outputs = model(images, batch.image_sizes, batch.scales)
                for region in model.regions(outputs, selection):  # selection in float32, as the runner runs it
                    region["features"].cpu()
                n += len(batch.ids)
            return n

        for p, k, b in cases:

            def case(p=p, k=k, b=b) -> tuple[float, str, str]:
                if p in per_image:
                    dev.fits(per_image[p] * b, f"batch {b}")
                prepared = list(bucketed(iter(singles), b, cfg.size_divisibility))
                if dev.cuda:
                    prepared = [batch.pin_memory() for batch in prepared]
                selection = SelectionConfig(mode="fixed", num_boxes=k)
                warm = timed(lambda: one_pass(prepared, selection, autocast[p]), dev)  # kernels, allocator
                if b == sizes.detector_batches[0] and dev.cuda:
                    per_image.setdefault(p, max(0.0, torch.cuda.max_memory_allocated(dev.device) - base) / b)
                best = min(timed(lambda: one_pass(prepared, selection, autocast[p]), dev) for _ in range(sizes.rounds))
                return (
                    len(items) / best,
                    "images/s",
                    f"{scale}; best of {sizes.rounds} passes over {len(items)} "
                    f"decoded images after a warm-up pass ({warm:.1f} s)",
                )

            part.run(name(p, k, b), case, on_error=dev.clear)

        def loop() -> tuple[float, str, str]:
            selection = SelectionConfig(mode="fixed", num_boxes=min(sizes.boxes))
            extract_bench.time_pass(model, items, selection, sizes.loop_batch, sizes.loop_workers)  # warm-up
            rate = extract_bench.time_pass(model, items, selection, sizes.loop_batch, sizes.loop_workers)
            from lighthead.extract.regions.runner import autocast_dtype

            amp = autocast_dtype(dev.device)
            return (
                rate,
                "images/s",
                (
                    f"{scale}; bench/extract.py's pass: decode, detect "
                    f"({'fp32' if amp is None else str(amp).split('.')[-1]}), select, store items"
                ),
            )

        part.run(loop_case, loop, on_error=dev.clear)
        ready = model = singles = None  # the weights and images go before the next part
        dev.clear()
