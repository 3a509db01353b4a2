"""Run a sweep on a dask cluster: one task per trial, finished trials skipped, a ranked summary.

Trials run on the cluster code shared with extraction (`lighthead.pipelines.cluster`): each
trial is one dask task; finished trials are skipped; exceptions inside a trial are retried by
`client.submit(..., retries=)`.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lighthead.pipelines.cluster import batch as batch_jobs
from lighthead.pipelines.cluster.client import ClusterOptions, Connection, connect, dashboard_url
from lighthead.pipelines.json_files import atomic_json
from lighthead.pipelines.sweep import report
from lighthead.pipelines.sweep.spec import Range, SweepSpec, Trial
from lighthead.pipelines.sweep.trial import (
    DEFAULT_TRAIN,
    TMP_PREFIX,
    TRIALS,
    TrainFn,
    is_finished,
    resolve_train_fn,
    run_trial,
    trial_dir,
)
from lighthead.pipelines.training.run_folder import run_lock


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
                conn = Connection(
                    client, cluster.threads if cluster else None, {"GPU": 1} if gpu else {}, dashboard_url(client)
                )
                _submit_all(conn, *submit)
            else:
                with connect(cluster or ClusterOptions(), gpu=gpu, retries=retries, console=console) as conn:
                    _submit_all(conn, *submit)
            _remove_stale(out)
        return _finish(spec, trials, out, result, console)


def _submit_all(
    conn: Connection,
    pending: list[Trial],
    total: int,
    store: Path,
    out: Path,
    train_fn: TrainFn,
    device: str | None,
    retries: int,
    progress: bool,
    console: Any,
    result: SweepResult,
) -> None:
    from lighthead.pipelines.console import progress as progress_lines

    result.dashboard = conn.dashboard
    if conn.dashboard:
        console.print(f"dask dashboard: {conn.dashboard}")
    workers = conn.client.scheduler_info().get("workers", {})
    for name in conn.resources:
        if workers and not any(w.get("resources", {}).get(name) for w in workers.values()):
            # Tasks wait for such a worker rather than fail; say so instead of hanging silently.
            console.print(
                f"[yellow]warning[/yellow]: no worker offers the resource {name}; trials wait "
                f"until one joins (start workers with --resources {name}=1)"
            )
    futures = {}
    for t in pending:
        f = conn.client.submit(
            run_trial,
            t.to_json(),
            str(store),
            str(out),
            train_fn,
            device,
            conn.threads,
            key=f"trial-{t.id}-{uuid.uuid4().hex[:6]}",  # readable on the dashboard
            pure=False,
            retries=retries,
            resources=conn.resources or None,
        )
        futures[f] = t
    with progress_lines(
        "sweep", total, progress, unit="trials", completed=total - len(pending), extra="{failed}", out=console
    ) as bar:
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
        + (f", {result.out / 'sweep.png'}" if (result.out / "sweep.png").exists() else "")
    )
