"""Dask clusters for trials and extraction workers: start one (local processes, SLURM/PBS batch
jobs) or join a running scheduler.

A `LocalCluster` (worker processes, one thread each) when no address is given; an
existing scheduler (`tcp://host:8786`); or SLURM/PBS batch jobs through `dask-jobqueue`.
Dask traps handled here (see the distributed docs on worker processes and the nanny):
- worker processes are daemonic by default and a daemonic process may not start children,
  so a `DataLoader` with workers inside a trial would fail: the clusters we start set
  `distributed.worker.daemon: False`, and workers of an existing scheduler are checked;
- the nanny pins OMP/MKL threads to 1: each trial sets its own thread count (trial.py);
- a long-lived worker keeps CUDA memory cached: each trial empties it when done (trial.py);
- a worker that dies mid-trial: the scheduler re-runs the task on another worker, up to
  `retries` times (`distributed.scheduler.allowed-failures` on the clusters we start);
  exceptions inside a trial are retried by `client.submit(..., retries=)`; batch jobs that
  have all ended stop the wait with one line (batch.py);
- a cluster we start without a dashboard still serves the scheduler's HTTP routes, by default
  on :8787: it gets a free local port instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from lighthead.pipelines.cluster import batch as batch_jobs


@dataclass
class ClusterOptions:
    """Where trials run."""

    scheduler: str | None = None  # address of a running scheduler; None: start a cluster
    workers: int = 2  # local worker processes, or batch jobs with `batch`
    threads: int | None = None  # torch threads per trial; None: the cores a worker owns
    batch: str | None = None  # "slurm" or "pbs": workers as batch jobs (dask-jobqueue)
    # Batch jobs; None leaves a setting to dask-jobqueue's config (~/.config/dask/jobqueue.yaml).
    cores: int | None = None  # cores per batch job (one trial at a time per job)
    memory: str | None = None  # memory per batch job, e.g. "16GB"
    queue: str | None = None  # batch queue / partition
    account: str | None = None  # batch account / project
    walltime: str | None = None  # batch job time limit, e.g. "04:00:00"
    job_directives: list[str] = field(default_factory=list)  # extra #SBATCH/#PBS lines, e.g. "--gres=gpu:1"
    dashboard: str | None = ":8787"  # dashboard address of a cluster we start; None: no dashboard
    # Where batch jobs write their output (slurm-*.out, *.o<id>); None: the folder the command runs from.
    log_directory: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.batch not in (None, "slurm", "pbs"):
            raise ValueError(f"batch must be slurm or pbs, got {self.batch!r}")
        if self.batch and self.scheduler:
            raise ValueError("--scheduler and --slurm/--pbs exclude each other")
        batch_jobs.check_options(self)  # before any job script is written


@dataclass
class Connection:
    """A client plus what tasks must ask for on its cluster."""

    client: Any  # distributed.Client
    threads: int | None  # torch threads per trial
    resources: dict[str, float]  # worker resources each trial task asks for
    dashboard: str | None  # dashboard URL, when the scheduler serves one
    ended: Callable[[], str | None] | None = None  # batch jobs: why no worker will come back, else None


def _is_daemon() -> bool:
    return multiprocessing.current_process().daemon


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def dashboard_url(client: Any) -> str | None:
    """The dashboard URL when the scheduler serves one (its HTTP server needs bokeh for it)."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return client.dashboard_link if client.run_on_scheduler(_has_bokeh) else None
    except Exception:  # a scheduler that does not answer now fails later with a clear error
        return None


@contextmanager
def connect(opts: ClusterOptions, gpu: bool = False, retries: int = 1, console: Any = None) -> Iterator[Connection]:
    """Start (or join) the cluster trials run on; closes what it started on exit."""
    import dask
    from distributed import Client

    resources: dict[str, float] = {"GPU": 1} if gpu else {}
    config = {
        "distributed.worker.daemon": False,
        "distributed.scheduler.allowed-failures": retries,
    }
    if opts.scheduler:
        try:
            client = Client(opts.scheduler, timeout="10s")
        except OSError as e:  # reported as bad input: one line, no traceback
            raise ValueError(f"cannot reach the dask scheduler at {opts.scheduler}: {e}") from None
        try:
            daemonic = sorted(a for a, d in client.run(_is_daemon).items() if d)
            if daemonic and console is not None:
                console.print(
                    f"[yellow]warning[/yellow]: {len(daemonic)} worker(s) run as daemonic processes, so a "
                    "DataLoader with workers inside a trial fails there; start workers with "
                    "DASK_DISTRIBUTED__WORKER__DAEMON=False"
                )
            yield Connection(client, opts.threads, resources, dashboard_url(client))
        finally:
            client.close()
        return
    if opts.batch:
        cluster, threads = batch_jobs.start_cluster(opts, gpu, config)
        resources["trial"] = 1  # a job's worker has `cores` threads but runs one trial at a time
    else:
        from distributed import LocalCluster

        threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.workers)
        with dask.config.set(config):
            cluster = LocalCluster(
                n_workers=opts.workers,
                threads_per_worker=1,  # one trial per worker process at a time
                processes=True,
                dashboard_address=opts.dashboard or "127.0.0.1:0",
                scheduler_kwargs=None if opts.dashboard else {"dashboard": False},
                resources=resources or None,
            )
    try:
        client = Client(cluster)
        try:
            ended = (
                batch_jobs.JobWatch(client, opts.workers, batch_jobs.SYSTEMS[opts.batch][0], logs=opts.log_directory)
                if opts.batch
                else None
            )
            yield Connection(client, threads, resources, dashboard_url(client) if opts.dashboard else None, ended)
        finally:
            client.close()
    finally:
        # Every trial is over by now: a worker slow to exit (torch, a busy machine) is killed
        # by its nanny, which warns for each; that is expected here, not worth a line.
        nanny_log = logging.getLogger("distributed.nanny")
        level = nanny_log.level
        nanny_log.setLevel(logging.ERROR)
        try:
            cluster.close()
        finally:
            nanny_log.setLevel(level)
