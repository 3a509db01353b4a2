"""Training throughput: samples/s of each head's training step and of the data loader.

    python -m bench.train [--quick] [--store PATH] [--heads casc,scan,vsepp] [--device cpu|cuda] [--threads N]

Without `--store`, a synthetic store serving every registered head is written to a temporary
folder: the retrieval one of the tests (regions 36 x 2048, global 2048, thumbnails, word ids)
plus sentiment records (a post and a target per image, ITM's relevance and box annotations)
and the feature sets the sentiment heads read at their real widths (768-d BERT / RoBERTa
tokens, 100 regions with boxes, ResNet-18's 512-d vector). A head that the store cannot serve
is an error, so no head goes unmeasured. With `--store` (e.g. the demo's), every head whose
task and feature sets the store holds is timed and the others are listed as skipped. A
feature set a head names but the store lacks is replaced by one of the same kind (printed). Per head: the loader alone
(`task.train_batches`, features preloaded as in training), then forward + backward +
optimiser steps on batches already in memory (the loop's work without the loader), timed
in interleaved rounds (bench/ratio.py: at least 5, and 10 s per side, 3 s with `--quick`; a
fast side repeats within its turn); rates are medians over the rounds, and the ratio loader /
step is the median of the per-round ratios with its min-max. Paper sizes by default;
`--quick` uses width 256 and fewer seconds.
The step is timed in fp32 and, on CUDA, also under the autocast `lighthead train` runs there
(bf16, or fp16 with a GradScaler on a GPU without bf16), each line labelled; `--precision
fp32,bf16` picks them (bf16 on a CPU: CPU autocast, which `lighthead train` does not use).

The last line is for scripts: `train_loader_vs_step: <median loader / step samples/s>` for
CASC (the lines above give the other heads); above 1 the loader keeps up with the training step.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.ratio import add_arguments, interleave, options, report, timed_rate
from lighthead.heads.base import HEADS, SOURCE_PREFIXES, DataInfo, feature_sources
from lighthead.heads.build import head_class, make_config
from lighthead.pipelines.threads import use_threads
from lighthead.pipelines.training.loop import prepare

# Quick widths (keys a head lacks are dropped); 8 attention heads divide 256.
QUICK = {"embed_size": "256", "embed_dim": "256", "label_hidden": "256", "d": "256", "heads": "8", "ff": "1024"}
SENTIMENT_IMAGES = 200  # images that get a post and a target (bounds the 100-region set's size)
TOKEN_DIM = 768  # BERT-base / RoBERTa-base hidden size


def overrides_for(name: str, store: Path, quick: bool, batch_size: int | None) -> dict[str, str]:
    """Quick widths, the batch size, and for every feature set the head names but the store
    lacks, one of the same kind that it holds."""
    from lighthead.heads.build import config_fields
    from lighthead.store import open_store

    cls = head_class(name)
    keys = config_fields(cls.config_class)
    out = {k: v for k, v in QUICK.items() if k in keys} if quick else {}
    names = open_store(store).names()
    # the names the head reads on this store (its dataset defaults included)
    cfg = make_config(cls.config_class, {}, _dataset(store))
    for key, (kind, value) in feature_sources(cfg).items():
        if value not in names:
            other = next((n for n in names if n.startswith(SOURCE_PREFIXES[kind])), None)
            if other:
                out[key] = other
                print(f"{name:10s} reads {other} for {key} (the store has no {value})")
    if batch_size:
        out["batch_size"] = str(batch_size)
    return out


def _dataset(store: Path) -> str | None:
    from lighthead.store import open_store

    s = open_store(store)
    return str(s.read_json("dataset")["name"]) if s.has_json("dataset") else None


def add_sentiment(
    store_path: Path,
    n_images: int = SENTIMENT_IMAGES,
    token_dim: int = TOKEN_DIM,
    region_dim: int = 2048,
    seed: int = 0,
) -> Path:
    """Give the synthetic retrieval store what ITIN, ITM and text-only read.

    The first `n_images` images get a post (its first caption, a label) and a target (a
    sentence with $T$ and the target word; related or not, with a box when related: ITM's
    annotations). Feature sets: text/bert-base-uncased (captions and sentiment texts, so
    MMCA reads it too) and text/roberta-base (sentiment texts), 768-d tokens;
    regions/butd-r101-vg-100 (100 regions with boxes) and global/resnet18 (512-d) for those
    images. Random values: the bench measures speed, not learning.
    """
    import numpy as np

    from lighthead.pipelines.datasets.base import Record
    from lighthead.store import Field, open_store

    store = open_store(store_path)
    rng = np.random.default_rng(seed)
    records = [Record.from_json(o) for o in store.read_json("records")]
    images = [r for r in records if r.kind == "image"][:n_images]
    added = []
    for i, r in enumerate(images):
        label = int(rng.integers(3))
        related = bool(i % 2)
        x, y = rng.uniform(0, 300, 2)
        added.append(
            Record(
                id=f"post{i:04d}",
                image_id=r.image_id,
                image_path=r.image_path,
                texts=[r.texts[0]],
                split=r.split,
                kind="post",
                label=label,
            )
        )
        added.append(
            Record(
                id=f"target{i:04d}",
                image_id=r.image_id,
                image_path=r.image_path,
                texts=[f"what a day for the $T$ in {r.texts[1]}"],
                split=r.split,
                kind="target",
                label=label,
                target=r.texts[0].split()[-1],
                extra={"relevance": int(related), "box": [x, y, x + 60, y + 60] if related else None},
            )
        )
    store.write_json("records", [r.to_json() for r in records + added])

    def tokens(n: int) -> np.ndarray:
        return rng.standard_normal((n, token_dim)).astype(np.float32)

    caption_ids = [
        (tid, len(text.split()) + 2) for r in records if r.kind == "image" for tid, text in zip(r.text_ids(), r.texts)
    ]
    sentiment_ids = [(f"{r.id}#0", len(r.texts[0].split()) + 4) for r in added]
    for name, ids in (("text/bert-base-uncased", caption_ids + sentiment_ids), ("text/roberta-base", sentiment_ids)):
        with store.writer(
            name,
            [Field("features", (None, token_dim)), Field("length", (), "int32")],
            {"extractor": "synthetic"},
            fsync=False,
        ) as w:
            for tid, n in ids:
                w.add(tid, {"features": tokens(n), "length": n})
    with store.writer(
        "regions/butd-r101-vg-100",
        [Field("features", (100, region_dim)), Field("boxes", (100, 4), "float32")],
        {"extractor": "synthetic"},
        fsync=False,
    ) as w:
        for r in images:
            xy = rng.uniform(0, 300, (100, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(20, 120, (100, 2))], 1).astype(np.float32)
            w.add(r.image_id, {"features": rng.standard_normal((100, region_dim)).astype(np.float32), "boxes": boxes})
    with store.writer("global/resnet18", [Field("features", (512,))], {"extractor": "synthetic"}, fsync=False) as w:
        for r in images:
            w.add(r.image_id, {"features": rng.standard_normal(512).astype(np.float32)})
    return store_path


def _size(batch: dict) -> int:
    return len(next(v for v in batch.values() if torch.is_tensor(v)))


AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # step precision -> autocast dtype


def default_precisions(device: torch.device) -> list[str]:
    """fp32, and on CUDA the autocast `lighthead train` runs there (bf16, else fp16)."""
    if device.type != "cuda":
        return ["fp32"]
    return ["fp32", "bf16" if torch.cuda.is_bf16_supported() else "fp16"]


def bench_head(
    name: str,
    store: Path,
    device: torch.device,
    quick: bool,
    batch_size: int | None,
    steps: int,
    extra: dict[str, str] | None = None,
    seconds: float = 0.0,
    precision: str = "fp32",
) -> dict:
    """Loader and training-step samples/s of head `name` (medians), timed in interleaved rounds
    (at least `steps` of them, and `seconds` per side); "ratio": loader / step (bench.ratio.Ratio).
    `extra` overrides (keys the head lacks are dropped); the step in `precision` (fp32, or bf16 /
    fp16 autocast as the training loop runs it)."""
    from lighthead.heads.build import config_fields

    over = overrides_for(name, store, quick, batch_size)
    keys = config_fields(head_class(name).config_class)
    over.update({k: v for k, v in (extra or {}).items() if k in keys})
    ctx = prepare(name, store, None, over)
    cfg, task = ctx["cfg"], ctx["task"]
    torch.manual_seed(0)
    head = ctx["cls"].from_config(cfg, DataInfo.of(task.data_info())).to(device)
    bs = int(getattr(cfg, "batch_size", 128))
    t0 = time.perf_counter()
    loader = task.train_batches(tuple(head.inputs), bs, seed=0, epoch=0)  # builds (and preloads) tables
    t_setup = time.perf_counter() - t0
    state = {"it": iter(loader), "epoch": 0, "kept": [], "next": 0}

    def load_one() -> int:
        """Samples of the loader's next batch (a new epoch when one ends); keeps a few for the steps."""
        batch = next(state["it"], None)
        if batch is None:
            state["epoch"] += 1
            state["it"] = iter(task.train_batches(tuple(head.inputs), bs, seed=0, epoch=state["epoch"]))
            batch = next(state["it"])
        if len(state["kept"]) < 8:
            state["kept"].append(batch)
        return _size(batch)

    # training step alone, on batches already in memory
    optimizers = head.optimizers()
    head.train()
    amp = AMP[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)  # as the loop: fp16 only

    def step(batch) -> int:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}  # "phase" is a str
        for opt, _ in optimizers:
            opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            loss = head.loss(batch)["loss"]
        scaler.scale(loss).backward()
        for opt, _ in optimizers:
            scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return _size(batch)

    def step_one() -> int:
        batch = state["kept"][state["next"] % len(state["kept"])]
        state["next"] += 1
        return step(batch)

    load_one()
    step(state["kept"][0])  # warm-up
    per_call = seconds / max(1, steps)  # a fast side repeats for about this long per round
    rounds = interleave(
        {"loader": lambda: timed_rate(load_one, None, per_call), "step": lambda: timed_rate(step_one, None, per_call)},
        min_rounds=steps,
        min_seconds=seconds,
    )
    res = {
        "loader": rounds.median("loader"),
        "step": rounds.median("step"),
        "setup": t_setup,
        "ratio": rounds.ratio("loader", "step"),
    }
    print(
        f"{name:10s} batch {bs:4d}  loader {res['loader']:9.0f} samples/s (setup {t_setup:.1f}s)  "
        f"step {precision} {res['step']:8.1f} samples/s  (medians of {len(rounds)} rounds; loader / step {res['ratio']})"
    )
    return res


def measure(
    names: list[str],
    store: Path,
    device: torch.device,
    quick: bool,
    batch_size: int | None,
    steps: int,
    extra: dict[str, str] | None = None,
    skip_unserved: bool = False,
    seconds: float = 0.0,
    precisions: list[str] | None = None,
) -> dict[str, dict]:
    """`bench_head` for every name, in each of `precisions` (default: fp32); "step" is the first
    precision's figure, "step_<p>" each other's. With `skip_unserved`, a head the store cannot
    serve is listed as skipped instead of raising."""
    results = {}
    first, *others = precisions or ["fp32"]
    for name in names:
        try:
            results[name] = bench_head(name, store, device, quick, batch_size, steps, extra, seconds, first)
            for p in others:
                results[name][f"step_{p}"] = bench_head(
                    name, store, device, quick, batch_size, steps, extra, seconds, p
                )["step"]
        except (KeyError, ValueError) as e:  # the store lacks this head's task or features
            if not skip_unserved:
                raise
            print(f"{name:10s} skipped: {str(e).splitlines()[0][:120]}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="width 256, fewer seconds (a few minutes on a CPU)")
    ap.add_argument("--store", type=Path, default=None, help="store to read (default: a synthetic one)")
    ap.add_argument("--heads", default=None, help="comma-separated heads (default: every head the store serves)")
    ap.add_argument("--batch-size", type=int, default=None, help="override every head's batch size")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: as `lighthead train`: $OMP_NUM_THREADS, else min(4, half the cores))",
    )
    ap.add_argument(
        "--precision",
        default=None,
        metavar="fp32,bf16",
        help="training-step precisions (default: fp32, plus on CUDA what `lighthead train` runs there)",
    )
    add_arguments(ap)
    args = ap.parse_args()
    names = args.heads.split(",") if args.heads else HEADS.names()
    unknown = [n for n in names if n not in HEADS.names()]
    if unknown:  # before the synthetic store is written, and not a "skipped" with --store
        sys.exit(f"error: --heads {','.join(unknown)}: unknown head; known: {', '.join(HEADS.names())}")
    device = torch.device(args.device)
    precisions = args.precision.split(",") if args.precision else default_precisions(device)
    if any(p not in AMP for p in precisions):
        sys.exit(f"error: --precision {args.precision}: use {', '.join(AMP)} (comma-separated)")
    use_threads(args.threads)
    opts = options(args)
    batch_size = args.batch_size or (32 if args.quick else None)
    sizes = (
        "quick (width 256)"
        if args.quick
        else ("the heads' defaults for the store's dataset" if args.store else "paper sizes")
    )
    print(f"device {device} ({torch.get_num_threads()} threads), {sizes}")
    with tempfile.TemporaryDirectory(prefix="lighthead-bench-") as tmp:
        store = args.store
        if store is None:
            from tests.conftest_helpers import build_retrieval_store

            n = 200 if args.quick else 1000
            store = add_sentiment(build_retrieval_store(Path(tmp) / "store", n_images=n, splits=(n - 20, 10, 10)))
        # the synthetic store serves every head: there a failure is a bug, not a skip
        results = measure(
            names,
            store,
            device,
            args.quick,
            batch_size,
            opts["min_rounds"],
            skip_unserved=args.store is not None,
            seconds=opts["min_seconds"],
            precisions=precisions,
        )
    figures = {f"train_loader_vs_step_{name}": r["ratio"] for name, r in results.items() if name != "casc"}
    if "casc" in results:
        figures["train_loader_vs_step"] = results["casc"]["ratio"]
    report(figures)


if __name__ == "__main__":
    main()
