"""Part 4: pairs/s of `score_blocks` for the cross-attention heads, per size and precision."""

from __future__ import annotations

import math
import time
from typing import Any

from bench.gpu_parts.common import Device, Part, Skip, load_bench, timed
from bench.gpu_parts.reference import score_blocks_before
from bench.gpu_parts.sizes import Sizes

SCORING_HEADS = ("casc", "scan", "mmca")
BEFORE_HEADS = ("casc", "scan")  # heads whose scoring the host-sync fixes changed: a "before" row each
BEFORE = "fp32, before: 1 GiB blocks, masks asked and scores copied per block"

# What a CPU (the dry run) cannot exercise in this part.
CUDA_ONLY = (
    "blocks sized from the free GPU memory (a CPU's are cache-sized)",
    "bf16 products on tensor cores",
    "memory peaks and memory-based skips",
)


def scoring_part(part: Part, dev: Device, sizes: Sizes) -> None:
    import torch

    from lighthead.heads.build import build_head, head_class
    from lighthead.pipelines.tasks.scoring import PRECISIONS, cat_padded, encode, score_blocks

    rev = load_bench("retrieval_eval")
    heads = []
    for name in SCORING_HEADS:
        try:
            head_class(name)
            heads.append(name)
        except KeyError:
            part.skip(f"{name}", "head not registered")
    first = sizes.score_sizes[0]
    case_names = {}
    for h in heads:
        for s in sizes.score_sizes:
            case_names.update({(h, s, p): f"{h}, {s[0]:,} x {s[1]:,}, {p}" for p in PRECISIONS})
            if s == first and h in BEFORE_HEADS:
                case_names[(h, s, BEFORE)] = f"{h}, {s[0]:,} x {s[1]:,}, {BEFORE}"
    part.plan(list(case_names.values()))
    info = sizes.score_info

    for i, name in enumerate(heads):
        deadline = time.perf_counter() + part.left() / (len(heads) - i)  # this head's share of the time left
        # the head, the current size's encodings and set-up seconds, and the last size's costs
        state: dict[str, Any] = {}

        def setup(n_img: int, n_txt: int) -> None:
            torch.manual_seed(0)
            if "head" not in state:
                state["head"] = build_head(name, info, sizes.score_overrides.get(name, {})).to(dev.device).eval()
            head = state["head"]
            images, texts = rev.random_data(n_img, n_txt, info["num_labels"], info["token_dim"])
            if info["region_dim"] != images["regions"].shape[-1]:
                images["regions"] = images["regions"][..., : info["region_dim"]].contiguous()
            with torch.no_grad():
                img = cat_padded(encode(head.encode_image, rev.batches(images, 256), dev.device))
                chunks = encode(head.encode_text, rev.batches(texts, 256), dev.device)
            state["enc"] = (img, chunks)

        def first_case(n_img: int, n_txt: int) -> None:
            """Before the first precision of a size: skip it when the last size scales past the
            time or memory left, else make the data and encode it (not timed)."""
            state.pop("enc", None)
            dev.clear()
            last = state.get("last")  # (pairs, set-up s, scoring s per run, peak bytes) of the smaller size
            if last is not None:
                grow = n_img * n_txt / last[0]  # pairs; the encodings grow as its square root
                predicted = last[1] * math.sqrt(grow) + last[2] * grow
                left = deadline - time.perf_counter()
                if predicted > left:
                    raise Skip(f"would take about {predicted:.0f} s, {left:.0f} s of this head's share left")
                if last[3] is not None:
                    dev.fits(last[3] * math.sqrt(grow), "this size")
            t0 = time.perf_counter()
            setup(n_img, n_txt)
            dev.sync()
            state["setup"], state["scored"] = time.perf_counter() - t0, 0.0

        for n_img, n_txt in sizes.score_sizes:
            for p in PRECISIONS:

                def case(n_img=n_img, n_txt=n_txt, p=p) -> tuple[float, str, str]:
                    if p == PRECISIONS[0]:
                        first_case(n_img, n_txt)
                    img, chunks = state["enc"]
                    head = state["head"]
                    with torch.no_grad():
                        t = timed(lambda: score_blocks(head, img, chunks, None, p), dev)
                        state["scored"] += t
                        rounds = 1
                        if time.perf_counter() + t < deadline - 1:  # a second run when there is time for it
                            t, rounds = min(t, timed(lambda: score_blocks(head, img, chunks, None, p), dev)), 2
                    return (
                        n_img * n_txt / t,
                        "pairs/s",
                        f"best of {rounds}; encoding both sides "
                        f"({state['setup']:.1f} s with the random data) not counted",
                    )

                key = case_names[(name, (n_img, n_txt), p)]
                if p != PRECISIONS[0] and "enc" not in state:
                    part.skip(key, f"as {PRECISIONS[0]}: no data for this size")
                    continue
                part.run(key, case, limit=max(0.0, deadline - time.perf_counter()), on_error=dev.clear)
            if (name, (n_img, n_txt), BEFORE) in case_names:

                def before(n_img=n_img, n_txt=n_txt) -> tuple[float, str, str]:
                    img, chunks = state["enc"]
                    t = timed(lambda: score_blocks_before(state["head"], img, chunks), dev)
                    return (
                        n_img * n_txt / t,
                        "pairs/s",
                        (
                            "the earlier scoring loop (bench/gpu_parts/reference.py), "
                            f"one run; compare the {PRECISIONS[0]} row above"
                        ),
                    )

                key = case_names[(name, (n_img, n_txt), BEFORE)]
                if "enc" not in state:
                    part.skip(key, f"as {PRECISIONS[0]}: no data for this size")
                else:
                    part.run(key, before, limit=max(0.0, deadline - time.perf_counter()), on_error=dev.clear)
            if "enc" in state:
                peaks = [r.peak_mib for r in part.rows if r.case.startswith(f"{name}, {n_img:,} x") and r.peak_mib]
                peak = max(peaks) * 2**20 if peaks else None
                state["last"] = (n_img * n_txt, state["setup"], state["scored"], peak)
        state.clear()
        dev.clear()
