"""`lighthead extract`: run feature jobs on a dataset into a store."""

from __future__ import annotations

from pathlib import Path

import typer

from lighthead.pipelines.cli import batch_options


def parse_job_options(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings -> dict of strings; each job's settings give their types
    (`features.runner.check_job_options`)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--job-option expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def extract(
    dataset: str = typer.Option(
        ...,
        metavar="NAME",
        help="dataset adapter name (coco, f30k, twitter15, twitter17, itm, mvsa-single, mvsa-multiple, images, demo)",
    ),
    store: Path = typer.Option(..., metavar="DIR", help="store directory (one per dataset)"),
    root: Path | None = typer.Option(None, metavar="DIR", help="dataset folder; default $LIGHTHEAD_DATA/<dataset>"),
    features: str | None = typer.Option(
        None, metavar="a,b,...", help="comma-separated feature jobs; default: every job the dataset's heads need"
    ),
    weights: Path | None = typer.Option(None, help="checkpoint for the model of the job(s)"),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="random model weights (tests, demo); recorded in the store"
    ),
    batch_size: int = typer.Option(8, min=1, help="items per forward pass"),
    device: str = typer.Option("cpu", metavar="cpu|cuda", help="cpu or cuda"),
    workers: int = typer.Option(1, min=1, help="processes/GPUs sharing the work, or batch jobs with --slurm/--pbs"),
    loader_workers: int = typer.Option(2, min=0, help="DataLoader workers decoding images (0: in the main process)"),
    scheduler: str | None = typer.Option(
        None,
        metavar="ADDRESS",
        help="dask scheduler address (tcp://host:8786): spread the region jobs over its workers",
    ),
    dtype: str = typer.Option(
        "float16", metavar="float16|float32", help="storage dtype of feature fields (float16 or float32)"
    ),
    text_model: str | None = typer.Option(
        None, metavar="PATH|ID", help="folder or cached Hugging Face id for the text job (bert/roberta/minilm)"
    ),
    job_option: list[str] = typer.Option(
        [],
        "--job-option",
        "-o",
        metavar="KEY=VALUE",
        help="per-job setting KEY=VALUE or JOB.KEY=VALUE, e.g. resnet152.weights=PATH, bert.layer=-2, text_max_length=128, precision=fp32 (repeatable)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    slurm: bool = typer.Option(
        False, "--slurm", help="region jobs on SLURM batch jobs, one part per job (dask-jobqueue)"
    ),
    pbs: bool = typer.Option(False, "--pbs", help="region jobs on PBS batch jobs, one part per job (dask-jobqueue)"),
    cores: int | None = batch_options.CORES,
    memory: str | None = batch_options.MEMORY,
    queue: str | None = batch_options.QUEUE,
    account: str | None = batch_options.ACCOUNT,
    walltime: str | None = batch_options.WALLTIME,
    job_directive: list[str] = batch_options.JOB_DIRECTIVE,
) -> None:
    """Extract features of a dataset into a store (resumable; skipped inputs are listed)."""
    from lighthead.pipelines.features import ExtractOptions
    from lighthead.pipelines.features.runner import run_extract

    if weights is not None and random_weights:
        raise ValueError("--weights and --random-weights exclude each other")
    cluster = None
    batch = batch_options.batch_kind(slurm, pbs)
    job_settings = {
        "cores": cores,
        "memory": memory,
        "queue": queue,
        "account": account,
        "walltime": walltime,
        "job_directives": list(job_directive),
    }
    if batch or any(v not in (None, []) for v in job_settings.values()):
        from lighthead.pipelines.cluster import ClusterOptions
        from lighthead.pipelines.cluster.batch import job_log_directory

        # Checks every batch value (and refuses them without --slurm/--pbs) before any work.
        cluster = ClusterOptions(
            scheduler=scheduler,
            workers=workers,
            batch=batch,
            dashboard=None,
            log_directory=job_log_directory(Path(store) / ".jobs") if batch else None,  # job output beside the data
            **job_settings,
        )
    job_options = parse_job_options(job_option)
    if text_model:
        job_options["text_model"] = text_model
    options = ExtractOptions(
        weights=weights,
        random_weights=random_weights,
        batch_size=batch_size,
        device=device,
        workers=workers,
        loader_workers=loader_workers,
        scheduler=scheduler,
        cluster=cluster,
        dtype=dtype,
        progress=progress,
        job_options=job_options,
    )
    names = [f.strip() for f in features.split(",") if f.strip()] if features else None
    run_extract(dataset, root, store, names, options)
