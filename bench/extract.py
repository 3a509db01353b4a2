"""Region-detector benchmark: images/s of the full ResNet-101 model at batch 1, 4 and 8.

    python -m bench.extract                  # 16 images of 480x640 at the 600/1000 test scale, 300 ROIs
    python -m bench.extract --quick          # 8 small images, 16 ROIs: a CPU finishes in a minute or two
    python -m bench.extract --device cuda    # on a GPU (bf16 autocast, channels-last)

Random weights (the speed does not depend on them). The same JPEG files go through the whole
loop of `lighthead extract` (decoding in DataLoader workers, detector, box selection, a sink
that drops the result) at each batch size; each size gets an untimed warm-up pass, then the
sizes are timed in interleaved rounds (bench/ratio.py: at least 5, and 10 s per size, 3 s
with `--quick`; the order reverses every round, so a busy machine slows all sizes alike).
Per round the ratio is the best batched rate over the batch-1 rate; the figure is its median
over the rounds, printed with its min-max. When detectron2 is installed the reference backend
is timed at batch 1 too, interleaved with ours. The last line is for scripts:
`extract_batched_vs_single: <median of best batched images/s / batch-1 images/s>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.ratio import Rounds, add_arguments, interleave, options, report


def make_images(folder: Path, n: int, height: int, width: int, seed: int = 0) -> list[tuple[str, str]]:
    """n JPEGs of smooth noise around height x width (sizes vary a little, so batches pad)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        h, w = (
            height + int(rng.integers(-height // 8, height // 8 + 1)),
            width + int(rng.integers(-width // 8, width // 8 + 1)),
        )
        coarse = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
        im = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        path = folder / f"{i:03d}.jpg"
        im.save(path, quality=90)
        items.append((f"{i:03d}", str(path)))
    return items


def time_pass(model, items, selection, batch_size: int, loader_workers: int) -> float:
    """images/s of one pass over all items."""
    import torch

    from lighthead.extract.regions.runner import extract_regions

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    stats = extract_regions(
        model, items, lambda *_: None, selection, batch_size=batch_size, loader_workers=loader_workers
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    assert stats.written == len(items) and not stats.skipped
    return len(items) / (time.perf_counter() - start)


def timed_sizes(model, items, selection, sizes: list[int], loader_workers: int, opts: dict) -> Rounds:
    """Images/s per batch size (keyed by str(size)) in interleaved rounds, after a warm-up pass each."""
    for bs in sizes:  # warm-up: kernels, allocator, DataLoader start
        time_pass(model, items, selection, bs, loader_workers)
    return interleave(
        {str(bs): lambda bs=bs: time_pass(model, items, selection, bs, loader_workers) for bs in sizes}, **opts
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few small images and ROIs, fewer seconds (CPU-friendly)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--images", type=int, default=None, help="images per pass (default 16, quick 8)")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers decoding images")
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated; the first is the baseline")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    add_arguments(parser)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from lighthead.extract.regions import detectron2_backend
    from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
    from lighthead.extract.regions.model import BottomUpDetector, init_random

    if args.quick:
        overrides = {"min_size": 160, "max_size": 240, "rpn_post_nms_top_n": 16}
        n, height, width = args.images or 8, 180, 240
    else:
        overrides = {}
        n, height, width = args.images or 16, 480, 640
    cfg = DetectorConfig.from_name("r101", **overrides)
    device = torch.device(args.device)
    model = init_random(BottomUpDetector(cfg), seed=0)
    reference = None
    if detectron2_backend.available():
        from lighthead.extract.regions.checkpoints import format_config

        d2_model = init_random(BottomUpDetector(format_config("d2-pkl", cfg, True)), seed=0)
        reference = detectron2_backend.Detectron2Detector(d2_model).to(device)
    model = model.to(device).optimize_for_inference(channels_last=device.type == "cuda")
    selection = SelectionConfig(mode="fixed", num_boxes=min(36, cfg.rpn_post_nms_top_n))
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"device: {name}; model: ResNet-101 C4 (random weights), test scale {cfg.min_size}/{cfg.max_size}, "
        f"{cfg.rpn_post_nms_top_n} ROIs; {n} images of about {height}x{width}"
    )
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        items = make_images(Path(tmp), n, height, width)
        rounds = timed_sizes(model, items, selection, sizes, args.loader_workers, options(args))
        for bs in sizes:
            print(f"batch {bs}: {rounds.median(str(bs)):.2f} images/s (median of {len(rounds)} rounds)")
        if reference is not None:
            time_pass(reference, items, selection, 1, args.loader_workers)  # warm-up
            best = max(sizes, key=lambda bs: rounds.median(str(bs)))
            ref = interleave(
                {
                    "ours": lambda: time_pass(model, items, selection, best, args.loader_workers),
                    "reference": lambda: time_pass(reference, items, selection, 1, args.loader_workers),
                },
                **options(args),
            )
            print(f"detectron2 reference (batch 1): {ref.median('reference'):.2f} images/s")
            figures["extract_vs_reference"] = ref.ratio("ours", "reference")
    base, batched = str(sizes[0]), [str(bs) for bs in sizes[1:]] or [str(sizes[0])]
    figures["extract_batched_vs_single"] = rounds.combine(lambda r: max(r[b] for b in batched) / r[base])
    report(figures, digits=3)


if __name__ == "__main__":
    main()
