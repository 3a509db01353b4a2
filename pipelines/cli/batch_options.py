"""The batch-job options `extract` and `sweep` share (--slurm/--pbs through dask-jobqueue).

Their values are checked before any job script is written (`cluster.batch.check_options`, from
`ClusterOptions`); given without --slurm/--pbs they are refused.
"""

from __future__ import annotations

import importlib.util

import typer

# One declaration each, used as the default of both commands' parameters.
CORES: int | None = typer.Option(None, min=1, help="cores per batch job (default: jobqueue.yaml)")
MEMORY: str | None = typer.Option(None, metavar="SIZE", help="memory per batch job, e.g. 32GB (default: jobqueue.yaml)")
QUEUE: str | None = typer.Option(None, metavar="NAME", help="batch queue / partition")
ACCOUNT: str | None = typer.Option(None, metavar="NAME", help="batch account / project")
WALLTIME: str | None = typer.Option(
    None, metavar="HH:MM:SS", help="batch job time limit, e.g. 08:00:00 (SLURM also D-HH:MM:SS)"
)
JOB_DIRECTIVE: list[str] = typer.Option(
    [], metavar="DIRECTIVE", help="extra batch directive, e.g. --gres=gpu:1 (repeatable)"
)


def batch_kind(slurm: bool, pbs: bool) -> str | None:
    """ "slurm", "pbs" or None; both flags, or either without dask-jobqueue installed, is a ValueError."""
    if slurm and pbs:
        raise ValueError("--slurm and --pbs exclude each other")
    kind = "slurm" if slurm else "pbs" if pbs else None
    if kind and importlib.util.find_spec("dask_jobqueue") is None:
        raise ValueError(f"--{kind} needs dask-jobqueue: pip install 'lighthead[jobqueue]'")
    return kind
