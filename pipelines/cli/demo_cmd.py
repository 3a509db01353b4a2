"""`lighthead demo`."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-out"), metavar="DIR", help="folder for the demo data, store and runs"),
    n_images: int = typer.Option(300, help="images to generate"),
    seed: int = typer.Option(0, help="generator seed"),
    stages: str = typer.Option(
        "data,extract,train", metavar="a,b,...", help="comma-separated stages to run: data, extract, train"
    ),
    threads: int | None = typer.Option(
        None,
        min=1,
        metavar="N",
        help="torch CPU threads (default: $OMP_NUM_THREADS if set, else 1: the demo's models are small)",
    ),
) -> None:
    """Generate the demo dataset and run the whole pipeline on it (CPU, minutes).

    Extracts region features (the shapes' boxes and the 36 most confident ROIs of a detector
    with random weights), MiniLM token features, word ids, ResNet-18 features and thumbnails,
    then trains and evaluates CASC (retrieval), ITIN and ITM (sentiment) and prints their tables.
    """
    from lighthead.pipelines.demo import STAGES, run_demo
    from lighthead.pipelines.threads import default_threads

    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise typer.BadParameter(f"unknown stage(s) {', '.join(unknown)}; valid: {', '.join(STAGES)}")
    run_demo(out, n_images=n_images, seed=seed, stages=chosen, threads=threads or default_threads(cap=1))
