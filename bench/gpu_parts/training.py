"""Part 5: samples/s of each head's training step on bench/train.py's synthetic store, in fp32 and
under the autocast `lighthead train` runs on the GPU (bf16, or fp16 with a GradScaler): one row each.
The dry run times bf16 under CPU autocast, for the code path only."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.gpu_parts.common import Device, Part, load_bench
from bench.gpu_parts.sizes import Sizes

# What a CPU (the dry run) cannot exercise in this part.
CUDA_ONLY = ("CUDA kernels of the heads' training steps (cuDNN GRUs, SDPA) and their memory peaks",)


def training_part(part: Part, dev: Device, sizes: Sizes) -> None:
    from lighthead.heads.base import HEADS

    train_bench = load_bench("train")
    names = list(sizes.train_heads or HEADS.names())
    precisions = train_bench.default_precisions(dev.device) if dev.cuda else ["fp32", "bf16"]
    cases = [(name, p) for name in names for p in precisions]
    part.plan([f"{name}, {p}" for name, p in cases])
    with tempfile.TemporaryDirectory(prefix="lighthead-gpu-bench-") as tmp:

        def setup():
            from tests.conftest_helpers import build_retrieval_store

            store = build_retrieval_store(Path(tmp) / "store", **sizes.train_store)
            return train_bench.add_sentiment(store, **sizes.train_sentiment)

        store = part.prepare(f"synthetic store of {sizes.train_store['n_images']} images", setup)
        if store is None:
            return
        for i, (name, p) in enumerate(cases):

            def case(name=name, p=p) -> tuple[float, str, str]:
                res = train_bench.bench_head(
                    name, store, dev.device, False, sizes.train_batch, sizes.train_steps, sizes.train_extra, precision=p
                )
                batch = "each head's batch size" if sizes.train_batch is None else f"batch {sizes.train_batch}"
                amp = (
                    "fp32"
                    if p == "fp32"
                    else f"{p} autocast" + (" (CPU: code path only)" if not dev.cuda else ", as `lighthead train` runs")
                )
                return (
                    res["step"],
                    "samples/s",
                    f"forward + backward + step in {amp}, median of up to "
                    f"{sizes.train_steps} steps, {batch}; loader {res['loader']:,.0f} samples/s",
                )

            part.run(f"{name}, {p}", case, limit=part.left() / (len(cases) - i), on_error=dev.clear)
            dev.clear()
