"""`lighthead extract`: run feature jobs on a dataset into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipelines.cli.common import not_built


def extract(
    dataset: str = typer.Option(..., help="dataset adapter name (coco, f30k, twitter15, twitter17, itm, mvsa-single, mvsa-multiple, demo)"),
    store: Path = typer.Option(..., help="store directory (one per dataset)"),
    root: Optional[Path] = typer.Option(None, help="dataset folder; default $LIGHTHEAD_DATA/<dataset>"),
    features: Optional[str] = typer.Option(None, help="comma-separated feature jobs; default: every job the dataset's heads need"),
    weights: Optional[Path] = typer.Option(None, help="checkpoint for the model of the job(s)"),
    random_weights: bool = typer.Option(False, "--random-weights", help="random model weights (tests, demo); recorded in the store"),
    batch_size: int = typer.Option(8, help="items per forward pass"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    workers: int = typer.Option(1, help="processes/GPUs sharing the work"),
) -> None:
    """Extract features of a dataset into a store (resumable; skipped inputs are listed)."""
    raise not_built("extract")
