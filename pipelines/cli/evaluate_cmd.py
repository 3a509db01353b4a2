"""`lighthead evaluate RUN`."""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.cli.common import not_built


def evaluate(
    run: Path = typer.Argument(..., help="run directory written by `lighthead train heads`"),
    split: str = typer.Option("test", help="split to evaluate"),
    protocol: str = typer.Option("1k", help="COCO protocol: 1k (mean of five folds) or 5k"),
    examples: int = typer.Option(0, help="save a figure with this many retrieval examples"),
) -> None:
    """Evaluate a trained run; writes JSON and a markdown table into the run directory."""
    raise not_built("evaluate")
