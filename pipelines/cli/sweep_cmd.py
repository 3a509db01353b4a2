"""`lighthead sweep HEAD`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pipelines.cli.common import not_built


def sweep(
    head: str = typer.Argument(..., help="head name"),
    store: Path = typer.Option(..., help="store directory"),
    out: Path = typer.Option(..., help="sweep directory (trials/<id>/, summary.csv)"),
    grid: List[str] = typer.Option([], help="key=v1,v2 (repeatable)"),
    scheduler: Optional[str] = typer.Option(None, help="dask scheduler address (default: a local cluster)"),
    workers: int = typer.Option(2, help="local cluster workers"),
) -> None:
    """Run a grid or random search over a head's config on a dask cluster."""
    raise not_built("sweep")
