"""Training throughput: samples/s of each head's training step and of the data loader.

    python bench/train.py [--quick] [--store PATH] [--heads casc,scan,vsepp] [--device cpu|cuda]

Without `--store`, a synthetic retrieval store (regions 36 x 2048, global 2048, word ids,
token features) is written to a temporary folder; with `--store` (e.g. the demo's), every
head whose task and feature sets the store holds is timed. Per head: the loader alone
(`task.train_batches`, features preloaded as in training), then forward + backward +
optimiser steps on batches already in memory (the loop's work without the loader); each is
the median over batches. Paper sizes by default; `--quick` uses width 256 and fewer steps.

The last line is for scripts: `train_loader_vs_step: <loader / step samples/s>` for CASC;
above 1 the loader keeps up with the training step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lighthead.heads.base import HEADS  # noqa: E402
from lighthead.heads.build import construct, head_class  # noqa: E402
from lighthead.pipelines.train import prepare  # noqa: E402

QUICK = {"embed_size": "256", "embed_dim": "256", "label_hidden": "256"}  # keys a head lacks are dropped


def overrides_for(name: str, store: Path, quick: bool, batch_size: int | None) -> dict[str, str]:
    """Quick widths, the batch size, and a text feature set the store holds if the default is absent."""
    from lighthead.heads.build import config_fields
    from lighthead.store import open_store

    cls = head_class(name)
    keys = config_fields(cls.config_class)
    out = {k: v for k, v in QUICK.items() if k in keys} if quick else {}
    default_text = getattr(cls.config_class(), "text", None)
    names = open_store(store).names()
    if isinstance(default_text, str) and default_text.startswith("text/") and default_text not in names:
        other = next((n for n in names if n.startswith("text/")), None)
        if other:
            out["text"] = other
    if batch_size:
        out["batch_size"] = str(batch_size)
    return out


def _size(batch: dict) -> int:
    return len(next(v for v in batch.values() if torch.is_tensor(v)))


def bench_head(name: str, store: Path, device: torch.device, quick: bool, batch_size: int | None,
               steps: int) -> dict[str, float]:
    ctx = prepare(name, store, None, overrides_for(name, store, quick, batch_size))
    cfg, task = ctx["cfg"], ctx["task"]
    torch.manual_seed(0)
    head = construct(ctx["cls"], cfg, task.data_info()).to(device)
    bs = int(getattr(cfg, "batch_size", 128))
    # loader alone
    t0 = time.perf_counter()
    loader = task.train_batches(tuple(head.inputs), bs, seed=0, epoch=0)  # builds (and preloads) tables
    t_setup = time.perf_counter() - t0
    batches, load_rates = [], []
    it = iter(loader)
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            break
        load_rates.append(_size(batch) / (time.perf_counter() - t0))
        batches.append(batch)
    # training step alone
    optimizers = head.optimizers()
    head.train()

    def step(batch):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}  # "phase" is a str
        for opt, _ in optimizers:
            opt.zero_grad(set_to_none=True)
        head.loss(batch)["loss"].backward()
        for opt, _ in optimizers:
            opt.step()
        return _size(batch)

    step(batches[0])  # warm-up
    step_rates = []
    for b in batches[1:]:
        t0 = time.perf_counter()
        n = step(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_rates.append(n / (time.perf_counter() - t0))
    # medians over batches: robust to other jobs on a shared machine
    res = {"loader": statistics.median(load_rates), "step": statistics.median(step_rates), "setup": t_setup}
    print(f"{name:10s} batch {bs:4d}  loader {res['loader']:9.0f} samples/s (setup {t_setup:.1f}s)  "
          f"step {res['step']:8.1f} samples/s")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="width 256, few steps (well under a minute on a CPU)")
    ap.add_argument("--store", type=Path, default=None, help="store to read (default: a synthetic one)")
    ap.add_argument("--heads", default=None, help="comma-separated heads (default: every head the store serves)")
    ap.add_argument("--batch-size", type=int, default=None, help="override every head's batch size")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps per head")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    steps = args.steps or (3 if args.quick else 10)
    batch_size = args.batch_size or (32 if args.quick else None)
    print(f"device {device} ({torch.get_num_threads()} threads), {'quick' if args.quick else 'paper sizes'}")
    with tempfile.TemporaryDirectory(prefix="lighthead-bench-") as tmp:
        store = args.store
        if store is None:
            from tests.conftest_helpers import build_retrieval_store

            n = 200 if args.quick else 1000
            store = build_retrieval_store(Path(tmp) / "store", n_images=n, splits=(n - 20, 10, 10))
        names = args.heads.split(",") if args.heads else HEADS.names()
        results = {}
        for name in names:
            try:
                results[name] = bench_head(name, store, device, args.quick, batch_size, steps)
            except (KeyError, ValueError) as e:  # the store lacks this head's task or features
                print(f"{name:10s} skipped: {str(e).splitlines()[0][:120]}")
    casc = results.get("casc")
    print(f"train_loader_vs_step: {casc['loader'] / casc['step'] if casc else float('nan'):.2f}")


if __name__ == "__main__":
    main()
