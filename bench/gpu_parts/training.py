"""Part 5: samples/s of each head's training step on bench/train.py's synthetic store."""

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
    part.plan(names)
    with tempfile.TemporaryDirectory(prefix="lighthead-gpu-bench-") as tmp:
        def setup():
            from tests.conftest_helpers import build_retrieval_store

            store = build_retrieval_store(Path(tmp) / "store", **sizes.train_store)
            return train_bench.add_sentiment(store, **sizes.train_sentiment)

        store = part.prepare(f"synthetic store of {sizes.train_store['n_images']} images", setup)
        if store is None:
            return
        for i, name in enumerate(names):
            def case(name=name) -> tuple[float, str, str]:
                res = train_bench.bench_head(name, store, dev.device, False, sizes.train_batch, sizes.train_steps,
                                             sizes.train_extra)
                batch = "each head's batch size" if sizes.train_batch is None else f"batch {sizes.train_batch}"
                return (res["step"], "samples/s", f"forward + backward + step, median of up to "
                                                  f"{sizes.train_steps} steps, {batch}; loader {res['loader']:,.0f} samples/s")

            part.run(name, case, limit=part.left() / (len(names) - i), on_error=dev.clear)
            dev.clear()
