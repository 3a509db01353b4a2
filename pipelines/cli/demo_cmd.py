"""`lighthead demo`."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-out"), help="folder for the demo data, store and runs"),
    n_images: int = typer.Option(300, help="images to generate"),
    seed: int = typer.Option(0, help="generator seed"),
) -> None:
    """Generate the demo dataset and run the whole pipeline on it (CPU, minutes)."""
    from pipelines.demo import run_demo

    run_demo(out, n_images=n_images, seed=seed)
