"""`lighthead evaluate RUN`."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    run: Path = typer.Argument(..., metavar="RUN", help="run directory written by `lighthead train heads`"),
    split: str = typer.Option("test", metavar="NAME", help="split to evaluate"),
    protocol: str = typer.Option(
        "1k", metavar="1k|5k", help="COCO protocol of retrieval runs: 1k (mean of five folds) or 5k"
    ),
    examples: int = typer.Option(0, help="save a figure with this many examples (examples-<split>.png)"),
    device: str | None = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda (default: cuda when available)"),
    precision: str | None = typer.Option(
        None,
        metavar="fp32|bf16",
        help="retrieval scoring products: fp32 (exact) or bf16 (2-4x faster where the CPU or GPU "
        "has bf16 units; scores within ~1e-3). Default: the run's eval_precision, fp32",
    ),
    threads: int | None = typer.Option(
        None,
        min=1,
        metavar="N",
        help="torch CPU threads (default: $OMP_NUM_THREADS if set, else min(4, half the physical cores))",
    ),
) -> None:
    """Evaluate a trained run; writes JSON, a markdown table and figures into the run directory."""
    from lighthead.pipelines.threads import use_threads
    from lighthead.pipelines.training.evaluate import evaluate_run, markdown_table, wrote_line

    use_threads(threads)

    metrics = evaluate_run(run, split=split, protocol=protocol, examples=examples, device=device, precision=precision)
    typer.echo(markdown_table(metrics))
    typer.echo(wrote_line(metrics["files"], run))
