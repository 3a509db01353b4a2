"""`lighthead train heads HEAD`: train a head from cached features."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Train heads from cached features.", no_args_is_help=True)


@app.command("heads")
def heads(
    head: str = typer.Argument(
        ..., metavar="HEAD", help="head name (casc, scan, vsepp, mmca, mfsr, itin, itm, text-only)"
    ),
    store: Path = typer.Option(..., metavar="DIR", help="store directory holding the dataset's features"),
    out: Path = typer.Option(..., metavar="DIR", help="run directory: checkpoints, config.json, metrics.json"),
    dataset: str | None = typer.Option(
        None, metavar="NAME", help="dataset name (default: the one recorded in the store)"
    ),
    epochs: int | None = typer.Option(None, help="epochs (default: the paper's)"),
    set_: list[str] = typer.Option(
        [],
        "--set",
        metavar="KEY=VALUE",
        help="config override key=value (repeatable; an unknown key lists the valid ones)",
    ),
    device: str | None = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda (default: cuda when available)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in --out"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars and one line per epoch"),
    threads: int | None = typer.Option(
        None,
        min=1,
        metavar="N",
        help="torch CPU threads (default: $OMP_NUM_THREADS if set, else min(4, half "
        "the physical cores): more stall small heads on a busy machine)",
    ),
) -> None:
    """Train HEAD on cached features; writes config.json, metrics.json and checkpoints to --out."""
    from lighthead.pipelines.threads import default_threads
    from lighthead.pipelines.training.evaluate import markdown_table
    from lighthead.pipelines.training.loop import train

    metrics = train(
        head,
        store,
        out,
        dataset=dataset,
        epochs=epochs,
        overrides=set_,
        device=device,
        resume=resume,
        progress=progress,
        threads=threads or default_threads(),
    )
    if metrics.get("val") is None:  # an empty validation split: nothing chose an epoch
        typer.echo(
            f"no validation (the store has no val split): kept the last epoch, {metrics['epochs_done']}; run in {out}"
        )
    else:
        typer.echo(
            f"best epoch {metrics['best_epoch']} of {metrics['epochs_done']} "
            f"({metrics['selection_metric']}); run in {out}"
        )
    if metrics.get("test"):
        typer.echo(markdown_table({"head": head, "dataset": metrics["dataset"], **metrics["test"]}))
