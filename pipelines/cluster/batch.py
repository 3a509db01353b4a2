"""SLURM/PBS batch jobs as the dask workers of a sweep or an extraction (dask-jobqueue).

- `check_options`: every batch value (cores, memory, queue, account, walltime, directives) is
  checked before a job script is written. dask-jobqueue pastes them into `#SBATCH`/`#PBS` lines
  unchecked: a newline in one would add shell lines to the script, a space more scheduler options.
- `start_cluster`: the jobqueue cluster, its jobs submitted before it is returned. A submission
  the batch system refuses (unknown partition, a GPU the cluster lacks) stops the command with
  the system's own reason in one line; dask-jobqueue alone logs tracebacks from its event loop
  and waits for workers forever.
- `JobWatch`: a job that ends (time limit, `scancel`, a failed node) takes its worker with it;
  the task it ran is retried on the workers left (the scheduler's allowed-failures). When every
  job has ended while work remains, no worker will come back: the command stops with one line
  instead of waiting. What the tasks committed stays (a rerun resumes).
Tested against SLURM 22.05 (tests/cluster, marker `slurm`); PBS on its job scripts only.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from lighthead.pipelines.cluster.client import ClusterOptions

SYSTEMS = {"slurm": ("SLURM", "sbatch"), "pbs": ("PBS", "qsub")}  # batch -> (name, submit command)
# [D-]HH:MM:SS: one format for both systems (a bare number is minutes to SLURM, seconds to PBS).
_WALLTIME = {
    "slurm": re.compile(r"(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)"),
    "pbs": re.compile(r"()(\d+):([0-5]\d):([0-5]\d)"),
}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,:@+-]*")  # a queue/partition or account (lists: a,b)
_SIZE = re.compile(r"\d+(\.\d+)?\s*[A-Za-z]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BatchError(Exception):
    """The batch system refused the jobs, or they all ended before the work was done."""


def check_options(opts: ClusterOptions) -> None:
    """ValueError, one line naming the flag, for a batch value that cannot go into a job script;
    also for batch values without --slurm/--pbs, and for cores/memory given nowhere."""
    if opts.batch is None:
        given = [
            flag
            for flag, value in (
                ("--cores", opts.cores),
                ("--memory", opts.memory),
                ("--queue", opts.queue),
                ("--account", opts.account),
                ("--walltime", opts.walltime),
                ("--job-directive", opts.job_directives),
            )
            if value not in (None, [])
        ]
        if given:
            raise ValueError(f"{given[0]} sets a batch job: add --slurm or --pbs")
        return
    import dask

    flag = f"--{opts.batch}"
    for name, value in (("queue", opts.queue), ("account", opts.account)):
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError(
                f"--{name} {value!r}: expected a name of letters, digits and _.,:@+- (no spaces or control characters)"
            )
    if opts.walltime is not None:
        _walltime_seconds(opts.batch, opts.walltime)
    for d in opts.job_directives:
        if _CONTROL.search(d) or not d.startswith("-"):
            raise ValueError(
                f"--job-directive {d!r}: expected one option such as "
                f"{'--gres=gpu:1' if opts.batch == 'slurm' else '-l ngpus=1'} "
                "(no newline or other control characters)"
            )
    cores, memory = opts.cores, opts.memory
    where = f"jobqueue.{opts.batch}.%s in the dask config (~/.config/dask/jobqueue.yaml)"
    if cores is None:
        cores = dask.config.get(f"jobqueue.{opts.batch}.cores", None)
    if memory is None:
        memory = dask.config.get(f"jobqueue.{opts.batch}.memory", None)
    if cores is None or memory is None:
        raise ValueError(f"{flag} needs --cores and --memory per job (or {where % 'cores'} and .memory)")
    what = "--cores" if opts.cores is not None else where % "cores"
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
        raise ValueError(f"{what}: expected a whole number >= 1, got {cores!r}")
    memory_bytes(memory, "--memory" if opts.memory is not None else where % "memory")


def job_log_directory(folder: Path) -> str | None:
    """`folder` (absolute) for the batch jobs' output files, or None (the folder the command runs
    from) when its path cannot go into a job script's directives (spaces, `%`, control characters)."""
    path = str(Path(folder).resolve())
    return None if re.search(r"[\s%]", path) or _CONTROL.search(path) else path


def memory_bytes(memory: Any, what: str = "--memory") -> int:
    """A memory size such as "16GB" in bytes; ValueError naming `what` unless it is >= 1 MB."""
    from dask.utils import parse_bytes

    text = str(memory)
    try:
        size = parse_bytes(text) if _SIZE.fullmatch(text.strip()) else None
    except ValueError:
        size = None
    if size is None or size < 10**6:
        raise ValueError(f"{what} {text!r}: expected a size of at least 1MB such as 16GB")
    return size


def _walltime_seconds(batch: str, walltime: str) -> int:
    m = _WALLTIME[batch].fullmatch(walltime)
    form = "HH:MM:SS or D-HH:MM:SS" if batch == "slurm" else "HH:MM:SS"
    if m is None:
        raise ValueError(f"--walltime {walltime!r}: expected {form}, e.g. 08:00:00")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total == 0:
        raise ValueError(f"--walltime {walltime!r}: must be longer than 0")
    return total


def start_cluster(opts: ClusterOptions, gpu: bool, config: dict[str, Any]) -> tuple[Any, int]:
    """A dask-jobqueue SLURM/PBS cluster with `opts.workers` jobs submitted, and the torch threads
    per task. BatchError, one line, when the submit command is missing or refuses the jobs."""
    import dask

    try:
        import dask_jobqueue
    except ImportError:
        raise ImportError(f"--{opts.batch} needs dask-jobqueue: pip install 'lighthead[jobqueue]'") from None
    system, submit = SYSTEMS[opts.batch]
    if shutil.which(submit) is None:
        raise BatchError(f"--{opts.batch}: {submit} not found: run on a machine that submits {system} jobs")
    base = dask_jobqueue.SLURMCluster if opts.batch == "slurm" else dask_jobqueue.PBSCluster
    refusals: list[str] = []
    given = {
        "cores": opts.cores,
        "memory": opts.memory,
        "queue": opts.queue,
        "account": opts.account,
        "walltime": opts.walltime,
    }
    resources = "trial=1,GPU=1" if gpu else "trial=1"
    # dask-jobqueue's scheduler serves its HTTP routes on :8787 unless told otherwise, even with
    # no dashboard wanted: then a free local port and no dashboard pages.
    dashboard = (
        {"dashboard_address": opts.dashboard}
        if opts.dashboard
        else {"dashboard_address": "127.0.0.1:0", "dashboard": False}
    )
    with dask.config.set(config):
        cluster = base(
            job_cls=_recording(base.job_cls, refusals),
            processes=1,
            job_extra_directives=list(opts.job_directives),
            # Batch workers start their own nanny: the flag must be in their environment.
            job_script_prologue=["export DASK_DISTRIBUTED__WORKER__DAEMON=False"],
            worker_extra_args=["--resources", resources],
            scheduler_options=dashboard,
            log_directory=opts.log_directory,
            **{k: v for k, v in given.items() if v is not None},
        )
    try:
        cluster.scale(jobs=opts.workers)
        _wait_submitted(cluster, opts.workers, refusals, f"--{opts.batch}: {submit}")
    except BaseException:
        cluster.close()
        raise
    cores = opts.cores or dask.config.get(f"jobqueue.{opts.batch}.cores", None)
    return cluster, opts.threads or cores


def _recording(job_cls: type, refusals: list[str]) -> type:
    """`job_cls` whose failed submission is appended to `refusals` as one line, not raised."""
    from distributed.core import Status

    class RecordingJob(job_cls):  # type: ignore[misc, valid-type]
        async def start(self) -> None:
            try:
                await super().start()
            except (RuntimeError, ValueError, OSError) as e:  # the submit command's exit or output
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                refusals.append(lines[-1] if lines else type(e).__name__)
                # The cluster is closed as soon as the refusal is read; until then the spec
                # cluster expects a started job (it has no job id, so closing cancels nothing).
                self.status = Status.running

    RecordingJob.__name__ = job_cls.__name__
    return RecordingJob


def _wait_submitted(cluster: Any, n: int, refusals: list[str], what: str, timeout: float = 300) -> None:
    """Until the cluster has submitted its `n` jobs (each submit command returned)."""
    deadline = time.monotonic() + timeout
    while len(cluster.workers) < n and not refusals:
        if time.monotonic() > deadline:
            raise BatchError(f"{what} did not return within {timeout:.0f} s")
        time.sleep(0.05)
    if refusals:
        raise BatchError(f"{what} refused the job: {refusals[0]}")


class JobWatch:
    """Whether every batch job of a cluster has ended; call it while waiting for results.

    A job counts as ended once its worker joined and then left for `grace` seconds (a worker
    the nanny restarts comes back under the same name within that). A job still queued has
    not joined, so it is waited for.
    """

    def __init__(
        self, client: Any, jobs: int, system: str, grace: float = 10.0, every: float = 2.0, logs: str | None = None
    ) -> None:
        self.client = client  # distributed.Client of the cluster
        self.jobs = jobs  # batch jobs submitted
        self.system = system  # "SLURM" or "PBS", for the message
        self.logs = logs  # the folder of the jobs' output files, named in the message (None: not known)
        self.grace = grace  # seconds without any worker before the jobs count as ended
        self.every = every  # seconds between two looks at the scheduler
        self._seen: set[str] = set()  # worker names (one per job) that have joined
        self._empty_since: float | None = None
        self._last = 0.0

    def __call__(self) -> str | None:
        """None while a job runs or may still start; else why no worker will come back."""
        now = time.monotonic()
        if now - self._last < self.every:
            return None
        self._last = now
        try:
            workers = self.client.scheduler_info().get("workers", {})
        except Exception:  # a scheduler that does not answer: the result loop reports that
            return None
        names = {str(w.get("name")) for w in workers.values()}
        self._seen |= names
        if names or len(self._seen) < self.jobs:
            self._empty_since = None
            return None
        self._empty_since = self._empty_since or now
        if now - self._empty_since < self.grace:
            return None
        return (
            f"all {self.jobs} {self.system} job(s) ended before the work was done (time limit reached, "
            f"cancelled or a node failed; see their logs{f' in {self.logs}' if self.logs else ''}); "
            "what finished is kept: rerun the same "
            "command to resume (with a longer --walltime if the time limit ended them)"
        )


def completed(futures: list[Any], ended: Callable[[], str | None] | None = None) -> Any:
    """`distributed.as_completed(futures)`, raising BatchError with `ended()`'s reason when it
    reports that no worker will come back (the futures would wait forever)."""
    from distributed import as_completed

    pending = as_completed(futures)
    if ended is None:
        yield from pending
        return
    while not pending.is_empty():
        if pending.has_ready():
            yield from pending.next_batch(block=False)
            continue
        reason = ended()
        if reason:
            raise BatchError(reason)
        time.sleep(0.2)
