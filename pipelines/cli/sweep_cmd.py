"""`lighthead sweep HEAD`."""

from __future__ import annotations

from pathlib import Path

import typer

from lighthead.pipelines.cli import batch_options
from lighthead.pipelines.cli.common import fail


def sweep(
    head: str | None = typer.Argument(None, metavar="HEAD", help="head name (or `head:` in --file)"),
    store: Path = typer.Option(..., metavar="DIR", help="store directory (workers open it by path)"),
    out: Path = typer.Option(
        ..., metavar="DIR", help="sweep directory: trials/<id>/, summary.csv, best.json, sweep.png"
    ),
    grid: list[str] = typer.Option(
        [],
        metavar="KEY=V1,V2",
        help="key=v1,v2 to try, or key=low..high / key=log:low..high with --random (repeatable)",
    ),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="fixed override key=value for every trial (repeatable)"
    ),
    file: Path | None = typer.Option(
        None, "--file", metavar="FILE", help="sweep file (.yaml/.toml): head, grid, set, random, seed, metric, epochs"
    ),
    random: int | None = typer.Option(None, "--random", help="sample N trials instead of the full grid"),
    seed: int | None = typer.Option(None, help="random search seed (default 0)"),
    metric: str | None = typer.Option(
        None, metavar="NAME", help="validation metric to rank by (default: rsum, macro_f1 or accuracy)"
    ),
    mode: str | None = typer.Option(
        None, metavar="max|min", help="max or min (default: min for *loss / *kl, else max)"
    ),
    epochs: int | None = typer.Option(None, help="epochs per trial (default: the head's)"),
    dataset: str | None = typer.Option(
        None, metavar="NAME", help="dataset name (default: the one recorded in the store)"
    ),
    scheduler: str | None = typer.Option(
        None, metavar="ADDRESS", help="dask scheduler address (default: a local cluster)"
    ),
    workers: int = typer.Option(2, min=1, help="local worker processes, or batch jobs with --slurm/--pbs"),
    threads: int | None = typer.Option(None, help="torch threads per trial (default: cores / workers)"),
    device: str | None = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda (cuda: each trial asks for a GPU)"),
    retries: int = typer.Option(1, help="extra attempts of a trial that raises or whose worker dies"),
    slurm: bool = typer.Option(False, "--slurm", help="start workers as SLURM jobs (dask-jobqueue)"),
    pbs: bool = typer.Option(False, "--pbs", help="start workers as PBS jobs (dask-jobqueue)"),
    cores: int | None = batch_options.CORES,
    memory: str | None = batch_options.MEMORY,
    queue: str | None = batch_options.QUEUE,
    account: str | None = batch_options.ACCOUNT,
    walltime: str | None = batch_options.WALLTIME,
    job_directive: list[str] = batch_options.JOB_DIRECTIVE,
    dashboard: str = typer.Option(
        ":8787", metavar="ADDRESS", help="dashboard address of a started cluster ('' for none)"
    ),
    train_fn: str = typer.Option(
        "lighthead.pipelines.training.loop:train",
        "--train-fn",
        metavar="MODULE:FUNCTION",
        hidden=True,
        help="module:function each trial calls",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar"),
) -> None:
    """Run a grid or random search over HEAD's config on a dask cluster.

    Each trial trains into DIR/trials/<id>/; rerunning the same sweep skips finished trials.

    Ends with the trials ranked by the validation metric: DIR/summary.csv, best.json, sweep.png.
    """
    from lighthead.pipelines.cluster.batch import job_log_directory
    from lighthead.pipelines.console import console as make_console
    from lighthead.pipelines.sweep import ClusterOptions, from_args, load_sweep_file, print_result, run_sweep
    from lighthead.pipelines.sweep.spec import parse_grid_arg, parse_set_arg

    batch = batch_options.batch_kind(slurm, pbs)
    if file is not None:
        spec = load_sweep_file(file)
        if head and head != spec.head:
            raise ValueError(f"HEAD {head!r} differs from head {spec.head!r} in {file}")
        spec.grid.update(parse_grid_arg(a) for a in grid)
        spec.fixed.update(parse_set_arg(a) for a in set_)
        for name, value in (
            ("random", random),
            ("seed", seed),
            ("metric", metric),
            ("mode", mode),
            ("epochs", epochs),
            ("dataset", dataset),
        ):
            if value is not None:
                setattr(spec, name, value)
        spec.__post_init__()  # re-validate the merged spec
    else:
        if not head:
            raise ValueError("give a HEAD or a --file with `head:`")
        if not grid and not random:
            raise ValueError("nothing to sweep: give --grid key=v1,v2 (or --file)")
        spec = from_args(
            head,
            grid,
            set_,
            random=random,
            seed=seed or 0,
            metric=metric,
            mode=mode or "auto",
            epochs=epochs,
            dataset=dataset,
        )
    cluster = ClusterOptions(
        scheduler=scheduler,
        workers=workers,
        threads=threads,
        batch=batch,
        cores=cores,
        memory=memory,
        queue=queue,
        account=account,
        walltime=walltime,
        job_directives=list(job_directive),
        dashboard=dashboard or None,
        log_directory=job_log_directory(Path(out) / "jobs") if batch else None,  # job output in the sweep's folder
    )
    console = make_console(stderr=True)
    result = run_sweep(
        spec,
        store,
        out,
        cluster=cluster,
        retries=retries,
        device=device,
        train_fn=train_fn,
        progress=progress,
        console=console,
    )
    print_result(result, make_console())  # piped (a log, CI): a wide table, not rich's 80 columns
    if result.failed:
        raise fail(
            f"{len(result.failed)} of {len(result.rows)} trials failed after {retries} retries; see {out / 'failed'}"
        )
