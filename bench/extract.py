"""Region-detector benchmark: images/s of the full ResNet-101 model at batch 1, 4 and 8.

    python -m bench.extract                  # 16 images of 480x640 at the 600/1000 test scale, 300 ROIs
    python -m bench.extract --quick          # 8 small images, 16 ROIs: a CPU finishes in a minute or two
    python -m bench.extract --device cuda    # on a GPU (bf16 autocast, channels-last)

Random weights (the speed does not depend on them). The same JPEG files go through the whole
loop of `lighthead extract` (decoding in DataLoader workers, detector, box selection, a sink
that drops the result) at each batch size; each size gets an untimed warm-up pass, then the
best of `--rounds` timed passes counts (rounds interleave the sizes, so a busy machine slows
all sizes alike). When detectron2 is installed the reference backend
is timed at batch 1 too. The last line is for scripts:
`extract_batched_vs_single: <best batched images/s / batch-1 images/s>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


import numpy as np  # noqa: E402


def make_images(folder: Path, n: int, height: int, width: int, seed: int = 0) -> list[tuple[str, str]]:
    """n JPEGs of smooth noise around height x width (sizes vary a little, so batches pad)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        h, w = height + int(rng.integers(-height // 8, height // 8 + 1)), width + int(rng.integers(-width // 8, width // 8 + 1))
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
    stats = extract_regions(model, items, lambda *_: None, selection, batch_size=batch_size,
                            loader_workers=loader_workers)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    assert stats.written == len(items) and not stats.skipped
    return len(items) / (time.perf_counter() - start)


def best_rates(model, items, selection, sizes: list[int], loader_workers: int, rounds: int) -> dict[int, float]:
    """Best images/s per batch size; rounds interleave the sizes so load drifts hit all alike."""
    for bs in sizes:  # warm-up: kernels, allocator, DataLoader start
        time_pass(model, items, selection, bs, loader_workers)
    best = {bs: 0.0 for bs in sizes}
    for _ in range(rounds):
        for bs in sizes:
            best[bs] = max(best[bs], time_pass(model, items, selection, bs, loader_workers))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few small images and ROIs (CPU-friendly)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--images", type=int, default=None, help="images per pass (default 16, quick 8)")
    parser.add_argument("--rounds", type=int, default=None, help="timed passes per batch size (default 3)")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers decoding images")
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated; the first is the baseline")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from lighthead.extract.regions import detectron2_backend
    from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
    from lighthead.extract.regions.model import BottomUpDetector, init_random

    if args.quick:
        overrides = {"min_size": 160, "max_size": 240, "rpn_post_nms_top_n": 16}
        n, height, width, rounds = args.images or 8, 180, 240, args.rounds or 3
    else:
        overrides = {}
        n, height, width, rounds = args.images or 16, 480, 640, args.rounds or 3
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
    print(f"device: {name}; model: ResNet-101 C4 (random weights), test scale {cfg.min_size}/{cfg.max_size}, "
          f"{cfg.rpn_post_nms_top_n} ROIs; {n} images of about {height}x{width}")
    with tempfile.TemporaryDirectory() as tmp:
        items = make_images(Path(tmp), n, height, width)
        rates = best_rates(model, items, selection, sizes, args.loader_workers, rounds)
        for bs in sizes:
            print(f"batch {bs}: {rates[bs]:.2f} images/s")
        if reference is not None:
            ref_rate = best_rates(reference, items, selection, [1], args.loader_workers, rounds)[1]
            print(f"detectron2 reference (batch 1): {ref_rate:.2f} images/s")
            print(f"extract_vs_reference: {max(rates.values()) / ref_rate:.3f}")
    base = rates[sizes[0]]
    best = max(rates[bs] for bs in sizes[1:]) if len(sizes) > 1 else base
    print(f"extract_batched_vs_single: {best / base:.3f}")


if __name__ == "__main__":
    main()
