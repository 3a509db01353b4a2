"""Run a sweep on a dask cluster: one task per trial, finished trials skipped, a ranked summary.

Clusters: a `LocalCluster` (worker processes, one thread each) when no address is given; an
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
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lighthead.pipelines.sweep import batch as batch_jobs
from lighthead.pipelines.sweep import report
from lighthead.pipelines.sweep.spec import Range, SweepSpec, Trial
from lighthead.pipelines.sweep.trial import (
    DEFAULT_TRAIN, TMP_PREFIX, TRIALS, TrainFn, is_finished, resolve_train_fn, run_trial,
    trial_dir,
)
from lighthead.pipelines.training.run_folder import atomic_json, run_lock


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


@dataclass
class SweepResult:
    """What `run_sweep` did and found."""

    out: Path  # the sweep directory
    store: Path  # the store the trials read
    rows: list[report.Row]  # every trial of the sweep, ranked (best first)
    metric: str | None  # the metric key trials were ranked by
    best: dict[str, Any] | None  # best.json's content
    ran: int = 0  # trials trained in this run
    skipped: int = 0  # trials already finished by an earlier run
    failed: list[str] = field(default_factory=list)  # ids that ran out of retries
    dashboard: str | None = None  # dask dashboard URL, if one was served


def check_spec(spec: SweepSpec, dataset: str | None = None) -> list[Trial]:
    """Every trial's overrides checked the way the trainer checks them, before anything runs.

    Keys go to the head's config or the training loop's (`lighthead.pipelines.training.loop.split_overrides`);
    an unknown head or key raises KeyError naming the valid ones, a value the config rejects
    raises ValueError naming the trial.
    """
    from lighthead.heads.build import head_class, make_config
    from lighthead.pipelines.training.loop import LoopConfig, split_overrides

    cls = head_class(spec.head)
    trials = spec.trials()
    for t in trials:
        head_over, loop_over = split_overrides(cls.config_class, dict(t.overrides), spec.head)
        try:
            make_config(cls.config_class, head_over, spec.dataset or dataset, what=spec.head)
            make_config(LoopConfig, loop_over, what="loop")
        except (TypeError, ValueError) as e:
            raise ValueError(f"trial {t.params or dict(t.overrides)}: {e}") from None
    return trials


def _is_daemon() -> bool:
    return multiprocessing.current_process().daemon


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _dashboard(client: Any) -> str | None:
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
            yield Connection(client, opts.threads, resources, _dashboard(client))
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
            ended = batch_jobs.JobWatch(client, opts.workers, batch_jobs.SYSTEMS[opts.batch][0]) if opts.batch else None
            yield Connection(client, threads, resources, _dashboard(client) if opts.dashboard else None, ended)
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


def _store_dataset(store: Path) -> str | None:
    """The dataset name recorded in the store (for the config's dataset defaults)."""
    from lighthead.store import open_store

    try:
        return open_store(store).read_json("dataset").get("name")
    except Exception:  # a store without the artifact: the trainer reports that properly
        return None


def run_sweep(
    spec: SweepSpec,
    store: Path | str,
    out: Path | str,
    *,
    cluster: ClusterOptions | None = None,
    client: Any = None,
    retries: int = 1,
    device: str | None = None,
    train_fn: TrainFn = DEFAULT_TRAIN,
    validate: bool = True,
    progress: bool = True,
    console: Any = None,
) -> SweepResult:
    """Run every unfinished trial of `spec` and write the summary into `out`.

    store: the store directory; trials receive its path and open it on the worker, so with
    a remote cluster it must be a path the workers see (a shared filesystem).
    client: an existing `distributed.Client` to use (tests reuse one cluster); otherwise
    `cluster` says what to start or join. device "cuda" makes every trial ask for a GPU.
    validate: check every trial's overrides against the head's config first (turn off only
    for a training function that does not build a head). `out` is locked while the sweep
    runs (`run_lock`): a second sweep into it is refused.
    """
    from lighthead.pipelines.console import console as make_console

    console = console or make_console(stderr=True)
    store = Path(store).resolve()
    out = Path(out).resolve()
    if not store.exists():
        raise FileNotFoundError(f"store not found: {store}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if device is not None and device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if validate and spec.dataset:  # a --dataset the store does not hold fails here, not in every trial
        from lighthead.pipelines.training.loop import dataset_name
        from lighthead.store import open_store

        dataset_name(open_store(store), spec.dataset)
    trials = check_spec(spec, _store_dataset(store)) if validate else spec.trials()
    resolve_train_fn(train_fn)  # a missing training module fails here, not on every worker
    with run_lock(out):  # a second sweep into `out` would run trials twice and miscount them
        (out / TRIALS).mkdir(parents=True, exist_ok=True)
        atomic_json(out / "sweep.json", spec.to_json() | {"store": str(store), "trials": [t.id for t in trials]})
        _remove_stale(out)

        pending = [t for t in trials if not is_finished(trial_dir(out, t.id))]
        result = SweepResult(out, store, [], None, None, skipped=len(trials) - len(pending))
        if result.skipped:
            console.print(f"{result.skipped} of {len(trials)} trials already finished in {out / TRIALS}")
        if pending:
            local = client is None and not (cluster and (cluster.scheduler or cluster.batch))
            if device is None and local:
                import torch  # usually imported already (check_spec builds the head's config)

                device = "cuda" if torch.cuda.is_available() else None  # so trials ask for a GPU each
            gpu = device is not None and device.startswith("cuda")
            submit = (pending, len(trials), store, out, train_fn, device, retries, progress, console, result)
            if client is not None:
                conn = Connection(client, cluster.threads if cluster else None, {"GPU": 1} if gpu else {},
                                  _dashboard(client))
                _submit_all(conn, *submit)
            else:
                with connect(cluster or ClusterOptions(), gpu=gpu, retries=retries, console=console) as conn:
                    _submit_all(conn, *submit)
            _remove_stale(out)
        return _finish(spec, trials, out, result, console)


def _submit_all(conn: Connection, pending: list[Trial], total: int, store: Path, out: Path,
                train_fn: TrainFn, device: str | None, retries: int, progress: bool, console: Any,
                result: SweepResult) -> None:
    from lighthead.pipelines.console import progress as progress_lines

    result.dashboard = conn.dashboard
    if conn.dashboard:
        console.print(f"dask dashboard: {conn.dashboard}")
    workers = conn.client.scheduler_info().get("workers", {})
    for name in conn.resources:
        if workers and not any(w.get("resources", {}).get(name) for w in workers.values()):
            # Tasks wait for such a worker rather than fail; say so instead of hanging silently.
            console.print(f"[yellow]warning[/yellow]: no worker offers the resource {name}; trials wait "
                          f"until one joins (start workers with --resources {name}=1)")
    futures = {}
    for t in pending:
        f = conn.client.submit(
            run_trial, t.to_json(), str(store), str(out), train_fn, device, conn.threads,
            key=f"trial-{t.id}-{uuid.uuid4().hex[:6]}",  # readable on the dashboard
            pure=False, retries=retries, resources=conn.resources or None,
        )
        futures[f] = t
    with progress_lines("sweep", total, progress, unit="trials", completed=total - len(pending),
                        extra="{failed}", out=console) as bar:
        try:
            for f in batch_jobs.completed(list(futures), conn.ended):
                t = futures[f]
                try:
                    rec = f.result()
                except Exception as e:  # the trial ran out of retries: record it, go on
                    msg = f"{type(e).__name__}: {e}".splitlines()[0][:500]
                    (out / report.FAILED).mkdir(exist_ok=True)
                    atomic_json(out / report.FAILED / f"{t.id}.json", t.to_json() | {"error": msg})
                    result.failed.append(t.id)
                    bar.print(f"[red]trial {t.id} failed[/red] {t.params}: {msg}")
                else:
                    result.ran += rec.get("status") == "done"
                    (out / report.FAILED / f"{t.id}.json").unlink(missing_ok=True)
                bar.advance(1, failed=f", {len(result.failed)} failed" if result.failed else "")
        except BaseException:
            conn.client.cancel(list(futures))  # Ctrl-C: finished trials stay on disk
            raise


def _remove_stale(out: Path) -> None:
    """Folders of trials whose worker died mid-training (nothing else writes `.tmp-*`)."""
    for p in (out / TRIALS).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def _finish(spec: SweepSpec, trials: list[Trial], out: Path, result: SweepResult, console: Any) -> SweepResult:
    rows = report.collect(out, trials)
    metric = report.pick_metric(rows, spec.metric)
    maximise = spec.maximise(metric or "")
    rows = report.rank(rows, metric, maximise)
    report.write_csv(rows, metric, out / "summary.csv")
    best = report.write_best(rows, metric, out / "best.json")
    sampled = [k for k, v in spec.grid.items() if isinstance(v, Range)]
    report.plot(rows, metric, out / "sweep.png", maximise, sampled)
    result.rows, result.metric, result.best = rows, metric, best
    return result


def print_result(result: SweepResult, console: Any) -> None:
    """The ranked table, the best config and where the outputs are."""
    report.print_table(result.rows, result.metric, console)
    if result.best:
        b = result.best
        args = [f"--store {result.store}", "--out RUN"] + ([f"--epochs {b['epochs']}"] if b.get("epochs") else [])
        args += [f"--set {k}={v}" for k, v in b["overrides"].items()]
        console.print(f"[bold]best[/bold] {b['trial']}: {result.metric} = {report.fmt_metric(b['value'])}")
        console.print(f"  lighthead train heads {b['head']} {' '.join(args)}", soft_wrap=True)
    done = sum(r.status == "done" for r in result.rows)
    console.print(
        f"{done}/{len(result.rows)} trials finished ({result.ran} now, {result.skipped} before)"
        f"{f', {len(result.failed)} failed' if result.failed else ''}; "
        f"{result.out / 'summary.csv'}, {result.out / 'best.json'}"
        + (f", {result.out / 'sweep.png'}" if (result.out / 'sweep.png').exists() else "")
    )
