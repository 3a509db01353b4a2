"""Part 0: a short self-check whose rows head the table: what only a GPU can tell about the
CUDA paths, and the before/after figures of the GPU fixes that are quick to take.

- GRU dtype under bf16 autocast: lighthead's caption GRU, and a bare `nn.GRU` for comparison
  (cuDNN RNNs autocast to fp16 whatever the autocast dtype).
- per-class NMS per image, one image at a time (before) and a batch at once (after).
- host syncs per detector forward with the earlier per-layer copies (before) and now (after).
- batch preparation: pad then pin (before), pad straight into page-locked memory (after).
- host syncs while scoring SCAN (before: 1 GiB blocks asking the device in each block; after).
- TF32: the largest score difference of SCAN (GRU captions) in fp32 between torch's default
  per-op precisions and IEEE everywhere.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bench.gpu_parts import reference
from bench.gpu_parts.common import Device, Part, Skip, count_syncs, load_bench, timed
from bench.gpu_parts.sizes import Sizes

# What a CPU (the dry run) cannot exercise in this part.
CUDA_ONLY = (
    "cuDNN's GRU under autocast (the dry run shows the CPU's autocast)",
    "the torch lockstep NMS (a CPU runs the numpy one)",
    "host syncs from torch.cuda's sync debug mode (the dry run counts a CPU proxy)",
    "page-locked batches (the dry run clones instead)",
    "TF32 (the per-op fp32_precision flags act on CUDA only; the dry run's difference is 0)",
)


def _bits(dtype: Any) -> float:
    return float(dtype.itemsize * 8)


def check_part(part: Part, dev: Device, sizes: Sizes) -> None:
    import torch

    c = sizes.check
    n_img, rois, classes = c.nms
    cases = [
        "GRU output under bf16 autocast",
        "per-class NMS, one image at a time (before)",
        f"per-class NMS, {n_img} images at once (after)",
        "host syncs per detector forward (before: sizes copied per masked layer)",
        "host syncs per detector forward (after)",
        "batch preparation: pad, then pin (before)",
        "batch preparation: pad into page-locked memory (after)",
        "host syncs scoring SCAN (before: 1 GiB blocks, masks asked per block, a copy per block)",
        "host syncs scoring SCAN (after)",
        "TF32 score difference, SCAN fp32: torch's defaults vs IEEE",
    ]
    part.plan(cases)

    def gru() -> tuple[float, str, str]:
        from lighthead.heads.text_encoders import caption_encoder

        enc = caption_encoder("words/vocab", 64, vocab_size=100, word_dim=32, bidirectional=True).to(dev.device)
        ids = torch.randint(1, 100, (8, 12), device=dev.device)
        lengths = torch.full((8,), 12, device=dev.device)
        bare = torch.nn.GRU(32, 64, batch_first=True).to(dev.device)
        with torch.autocast(dev.device.type, dtype=torch.bfloat16):
            states, _ = enc(ids, lengths)
            out, _ = bare(torch.randn(8, 12, 32, device=dev.device))
        return (
            _bits(states.dtype),
            "bits",
            f"lighthead's caption GRU returns {states.dtype}; a bare nn.GRU "
            f"{out.dtype} (cuDNN RNNs autocast to float16 whatever the autocast dtype)",
        )

    part.run(cases[0], gru, on_error=dev.clear)

    # ---- per-class NMS ----
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n_img, rois, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + torch.rand(n_img, rois, 2, generator=g) * 200 + 8], -1).to(dev.device)
    probs = torch.softmax(torch.randn(n_img, rois, classes, generator=g) * 3, -1).to(dev.device)
    boxes_l, probs_l = list(boxes), list(probs)
    timings: dict[str, float] = {}

    def nms(before: bool) -> tuple[float, str, str]:
        from lighthead.extract.regions.box_selection import batch_max_confidence

        def run() -> None:
            if before:
                reference.nms_one_image_at_a_time(boxes_l, probs_l, 0.3, 1.0)
            else:
                batch_max_confidence(boxes_l, probs_l, 0.3, 1.0)

        run()  # warm-up
        t = min(timed(run, dev) for _ in range(2))
        timings["before" if before else "after"] = t
        note = f"{rois} ROIs x {classes} classes per image, best of 2"
        if not before and "before" in timings:
            note += f"; {timings['before'] / max(t, 1e-9):.1f}x faster than one at a time"
        return 1000 * t / n_img, "ms/image", note

    part.run(cases[1], lambda: nms(True), on_error=dev.clear)
    part.run(cases[2], lambda: nms(False), on_error=dev.clear)

    # ---- host syncs per detector forward ----
    def setup():
        from lighthead.extract.regions.config import DetectorConfig
        from lighthead.extract.regions.model import BottomUpDetector, init_random

        cfg = DetectorConfig.from_name(c.detector, **c.detector_overrides)
        model = init_random(BottomUpDetector(cfg), seed=0).to(dev.device).optimize_for_inference(channels_last=dev.cuda)
        (h, w), (h2, w2) = c.image_hw, (c.image_hw[0], c.image_hw[1] * 4 // 5)  # the second is padded
        from lighthead.extract.regions.batching import pad_batch

        images = [torch.randn(3, h, w) * 50, torch.randn(3, h2, w2) * 50]
        batch = pad_batch(images, cfg.size_divisibility).to(dev.device)
        return model, batch, [(h, w), (h2, w2)], images, cfg

    ready = part.prepare(f"{c.detector} detector, 2 images (one padded)", setup)
    if ready is not None:
        model, batch, image_sizes, images, cfg = ready

        def forward() -> None:
            model(batch, image_sizes, [1.0, 1.0])

        def syncs(before: bool) -> tuple[float, str, str]:
            with reference.valid_masks_before() if before else contextlib.nullcontext():
                forward()  # warm-up
                n, how = count_syncs(forward, dev)
                t = min(timed(forward, dev) for _ in range(2))
            return n, "syncs", f"{1000 * t:.1f} ms per fp32 forward of 2 images ({how})"

        part.run(cases[3], lambda: syncs(True), on_error=dev.clear)
        part.run(cases[4], lambda: syncs(False), on_error=dev.clear)

        def prepare_batch(before: bool) -> tuple[float, str, str]:
            from lighthead.extract.regions.batching import pad_batch

            many = (images * (c.pin_batch // 2 + 1))[: c.pin_batch]

            def run() -> None:
                if before:
                    reference.pad_then_pin(many, cfg.size_divisibility, dev.cuda)
                else:
                    pad_batch(many, cfg.size_divisibility, pin_memory=dev.cuda)

            run()
            t = min(timed(run, dev) for _ in range(3))
            return (
                1000 * t,
                "ms/batch",
                f"{c.pin_batch} images of {c.image_hw[0]}x{c.image_hw[1]}, best of 3"
                + ("" if dev.cuda else "; no page-locked memory on a CPU: a clone stands in for the second copy"),
            )

        part.run(cases[5], lambda: prepare_batch(True), on_error=dev.clear)
        part.run(cases[6], lambda: prepare_batch(False), on_error=dev.clear)
        del model, batch
        dev.clear()

    # ---- scoring: host syncs, and TF32 ----
    rev = load_bench("retrieval_eval")
    info = sizes.score_info

    def encoded(n_i: int, n_t: int) -> tuple[Any, Any, Any]:
        from lighthead.heads.build import build_head
        from lighthead.pipelines.tasks.scoring import cat_padded, encode

        torch.manual_seed(0)
        over = {**sizes.score_overrides.get("scan", {}), "direction": "both"}
        head = build_head("scan", info, over).to(dev.device).eval()
        images, texts = rev.random_data(n_i, n_t, info["num_labels"], info["token_dim"])
        images["regions"] = images["regions"][..., : info["region_dim"]].contiguous()
        with torch.no_grad():
            img = cat_padded(encode(head.encode_image, rev.batches(images, 256), dev.device))
            chunks = encode(head.encode_text, rev.batches(texts, 256), dev.device)
        return head, img, chunks

    def scoring_syncs(before: bool) -> tuple[float, str, str]:
        from lighthead.pipelines.tasks.scoring import score_blocks

        head, img, chunks = encoded(*c.score_size)
        if before:
            n, how = count_syncs(lambda: reference.score_blocks_before(head, img, chunks), dev)
        else:
            n, how = count_syncs(lambda: score_blocks(head, img, chunks), dev)
        return n, "syncs", f"{c.score_size[0]:,} x {c.score_size[1]:,} pairs, fp32 ({how})"

    part.run(cases[7], lambda: scoring_syncs(True), on_error=dev.clear)
    part.run(cases[8], lambda: scoring_syncs(False), on_error=dev.clear)

    def tf32() -> tuple[float, str, str]:
        from lighthead.pipelines.tasks.scoring import score_blocks

        flags = {
            "matmul": torch.backends.cuda.matmul,
            "conv": torch.backends.cudnn.conv,
            "rnn": torch.backends.cudnn.rnn,
        }
        try:
            default = {k: f.fp32_precision for k, f in flags.items()}
        except AttributeError:
            raise Skip("this torch has no per-op fp32_precision flags") from None

        def scores(setting: dict[str, str]) -> torch.Tensor:
            for k, f in flags.items():
                f.fp32_precision = setting[k]
            head, img, chunks = encoded(*c.tf32_size)  # the GRU encodes the captions under the setting
            return score_blocks(head, img, chunks)

        t0 = time.perf_counter()
        try:
            base = scores(default)
            ieee = scores({k: "ieee" for k in flags})
            all_tf32 = scores({k: "tf32" for k in flags})
        finally:
            for k, f in flags.items():
                f.fp32_precision = default[k]
        diff = float((base - ieee).abs().max())
        return (
            diff,
            "max abs score difference",
            (
                f"defaults: matmul {default['matmul']}, cuDNN conv {default['conv']}, RNN {default['rnn']}; "
                f"TF32 everywhere vs IEEE: {float((all_tf32 - ieee).abs().max()):.1e}; "
                f"{c.tf32_size[0]:,} x {c.tf32_size[1]:,} pairs, {time.perf_counter() - t0:.1f} s"
            ),
        )

    part.run(cases[9], tf32, on_error=dev.clear)
    dev.clear()
