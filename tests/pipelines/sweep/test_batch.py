"""--slurm/--pbs on a machine without a batch system: the values are checked before any job script
is written, a refused submission is one line, and clusters we start keep off port 8787.

Submissions go to stand-in sbatch/qsub commands (tests/pipelines/fake_batch.py); the real
SLURM runs are in tests/cluster (marker `slurm`)."""

from __future__ import annotations

import warnings

import pytest

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from tests.pipelines import fake_batch

pytest.importorskip("dask_jobqueue")

GOOD = ["--cores", "1", "--memory", "2GB"]


def extract(tmp_path, *args: str) -> int:
    return run_app(
        app,
        [
            "extract",
            "--dataset",
            "demo",
            "--root",
            str(tmp_path / "demo"),
            "--store",
            str(tmp_path / "store"),
            "--features",
            "regions36",
            "--random-weights",
            "--no-progress",
            *args,
        ],
    )


def sweep(tmp_path, *args: str) -> int:
    (tmp_path / "store").mkdir(exist_ok=True)
    return run_app(
        app,
        [
            "sweep",
            "itin",
            "--store",
            str(tmp_path / "store"),
            "--out",
            str(tmp_path / "sw"),
            "--grid",
            "lam=0.2,0.5",
            "--no-progress",
            "--dashboard",
            "",
            *args,
        ],
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--walltime", "abc"], "--walltime 'abc': expected HH:MM:SS"),
        (["--walltime", "00:00:00"], "--walltime '00:00:00': must be longer than 0"),
        (["--walltime", "1:60:00"], "--walltime '1:60:00'"),
        (["--walltime", "90"], "--walltime '90'"),  # minutes to SLURM, seconds to PBS: refused
        (["--memory", "-5GB"], "--memory '-5GB': expected a size of at least 1MB"),
        (["--memory", "abc"], "--memory 'abc'"),
        (["--memory", "GB"], "--memory 'GB'"),
        (["--memory", "100"], "--memory '100'"),  # 100 bytes
        (["--queue", "gpu\n#SBATCH --wrap=id"], "--queue 'gpu\\n#SBATCH --wrap=id'"),
        (["--queue", "gpu --wrap=id"], "--queue 'gpu --wrap=id': expected a name"),
        (["--queue", ""], "--queue ''"),
        (["--account", "proj\rx"], "--account 'proj\\rx'"),
        (["--job-directive", "--gres=gpu:1\nrm -rf ~"], "--job-directive '--gres=gpu:1\\nrm -rf ~'"),
        (["--job-directive", "--gres=gpu:1\x00"], "--job-directive"),
        (["--job-directive", "gres=gpu:1"], "expected one option such as --gres=gpu:1"),
    ],
)
def test_bad_batch_values_are_refused_before_any_job_script(tmp_path, monkeypatch, capsys, args, expect):
    jobs = fake_batch.install(tmp_path, monkeypatch)
    rc = extract(tmp_path, "--slurm", *GOOD, *args)
    err = one_line_error(capsys)
    assert rc == 1 and expect in err
    assert fake_batch.scripts(jobs) == [] and not (tmp_path / "store").exists()


def test_pbs_walltime_has_no_days_and_sweep_checks_the_same(tmp_path, monkeypatch, capsys):
    jobs = fake_batch.install(tmp_path, monkeypatch)
    assert sweep(tmp_path, "--pbs", *GOOD, "--walltime", "1-00:00:00") == 1
    assert "--walltime '1-00:00:00': expected HH:MM:SS, e.g. 08:00:00" in one_line_error(capsys)
    assert sweep(tmp_path, "--slurm", *GOOD, "--queue", "a\nb") == 1
    assert "--queue 'a\\nb'" in one_line_error(capsys)
    assert fake_batch.scripts(jobs) == [] and not (tmp_path / "sw").exists()


@pytest.mark.parametrize("args", [["--cores", "0"], ["--cores", "-2"], ["--workers", "0"]])
def test_zero_cores_or_workers_are_usage_errors(tmp_path, monkeypatch, capsys, args):
    jobs = fake_batch.install(tmp_path, monkeypatch)
    rc = extract(tmp_path, "--slurm", "--memory", "2GB", *(["--cores", "1"] if "--cores" not in args else []), *args)
    err = one_line_error(capsys)
    assert rc == 2 and args[0] in err
    assert fake_batch.scripts(jobs) == []


def test_workers_zero_is_refused_without_a_cluster_too(tmp_path, capsys):
    assert extract(tmp_path, "--workers", "0") == 2
    assert "--workers" in one_line_error(capsys) and not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--walltime", "01:00:00"],
        ["--cores", "4"],
        ["--memory", "8GB"],
        ["--queue", "gpu"],
        ["--account", "proj"],
        ["--job-directive", "--gres=gpu:1"],
    ],
)
def test_batch_values_without_slurm_or_pbs_are_refused(tmp_path, capsys, args):
    assert extract(tmp_path, *args) == 1
    assert one_line_error(capsys) == f"error: {args[0]} sets a batch job: add --slurm or --pbs"
    assert not (tmp_path / "store").exists()
    assert sweep(tmp_path, *args) == 1
    assert one_line_error(capsys) == f"error: {args[0]} sets a batch job: add --slurm or --pbs"


def test_missing_cores_or_memory_is_one_line(tmp_path, monkeypatch, capsys):
    """dask-jobqueue's own message spans lines and shows Python code."""
    import dask

    jobs = fake_batch.install(tmp_path, monkeypatch)
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        assert extract(tmp_path, "--slurm", "--cores", "2") == 1
    err = one_line_error(capsys)
    assert err == (
        "error: --slurm needs --cores and --memory per job (or jobqueue.slurm.cores in the dask config "
        "(~/.config/dask/jobqueue.yaml) and .memory)"
    )
    with dask.config.set({"jobqueue.slurm.cores": 0, "jobqueue.slurm.memory": "4GB"}):
        assert extract(tmp_path, "--slurm") == 1
    assert "jobqueue.slurm.cores in the dask config" in one_line_error(capsys)
    assert fake_batch.scripts(jobs) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [extract, sweep])
def test_a_refused_submission_is_one_line_not_a_hang(tmp_path, monkeypatch, capsys, command):
    """sbatch's own reason, once, exit 1; dask-jobqueue alone logged tracebacks and waited forever."""
    refusal = (
        "sbatch: error: invalid partition specified: nosuch\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )
    fake_batch.install(tmp_path, monkeypatch, refuse=refusal)
    if command is extract:
        from lighthead.pipelines.datasets.demo import generate

        generate(tmp_path / "demo", n_images=2, size=64)
    assert command(tmp_path, "--slurm", *GOOD, "--queue", "nosuch", "--workers", "2") == 1
    err = capsys.readouterr().err  # extract's own progress lines come first
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "error: --slurm: sbatch refused the job: "
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )
    assert sum(line.startswith("error") for line in err.splitlines()) == 1


def test_no_sbatch_is_one_line(tmp_path, monkeypatch, capsys):
    from lighthead.pipelines.cluster.batch import BatchError, start_cluster
    from lighthead.pipelines.cluster.client import ClusterOptions

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BatchError, match=r"^--slurm: sbatch not found: run on a machine that submits SLURM jobs$"):
        start_cluster(ClusterOptions(batch="slurm", cores=1, memory="1GB", dashboard=None), False, {})


def _no_8787_warnings(record: list) -> list[str]:
    return [str(w.message) for w in record if "8787" in str(w.message)]


def test_a_local_cluster_without_dashboard_keeps_off_8787(monkeypatch):
    """Before: dashboard=None still bound the scheduler's HTTP routes to :8787 (or warned over
    three lines that it was taken)."""
    from lighthead.pipelines.sweep import ClusterOptions, connect

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with connect(ClusterOptions(workers=1, dashboard=None)) as conn:
            port = conn.client.scheduler_info()["services"].get("dashboard")
            host = conn.client.run_on_scheduler(_http_host)
    assert port != 8787 and host == "127.0.0.1" and _no_8787_warnings(record) == []
    assert conn.dashboard is None


def test_a_batch_cluster_without_dashboard_keeps_off_8787(tmp_path, monkeypatch):
    from lighthead.pipelines.cluster.batch import start_cluster
    from lighthead.pipelines.cluster.client import ClusterOptions

    fake_batch.install(tmp_path, monkeypatch)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cluster, _ = start_cluster(ClusterOptions(batch="slurm", cores=1, memory="1GB", dashboard=None), False, {})
        try:
            http = cluster.scheduler.http_server
            host, port = http.address, http.port
        finally:
            cluster.close()
    assert port != 8787 and host == "127.0.0.1" and _no_8787_warnings(record) == []


def _http_host(dask_scheduler) -> str:
    return dask_scheduler.http_server.address


class _Scheduler:
    """A client whose scheduler reports the worker names of `steps`, one step per look."""

    def __init__(self, *steps: list[str]) -> None:
        self.steps = list(steps)

    def scheduler_info(self) -> dict:
        names = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        return {"workers": {f"tcp://w/{n}": {"name": n} for n in names}}


def test_the_jobs_count_as_ended_once_each_joined_and_none_is_left():
    from lighthead.pipelines.cluster.batch import JobWatch

    # One job still queued (never joined) while the other left: wait for it.
    watch = JobWatch(_Scheduler(["job-0"], [], []), jobs=2, system="SLURM", grace=0, every=0)
    assert [watch(), watch(), watch()] == [None, None, None]
    # Both joined, then both left: no worker will come back.
    watch = JobWatch(_Scheduler(["job-0"], ["job-0", "job-1"], ["job-1"], []), jobs=2, system="SLURM", grace=0, every=0)
    assert [watch(), watch(), watch()] == [None, None, None]
    assert watch().startswith("all 2 SLURM job(s) ended before the work was done")
    assert "see their logs);" in watch()
    logs = JobWatch(_Scheduler(["job-0"], []), jobs=1, system="PBS", grace=0, every=0, logs="/runs/sw/jobs")
    assert logs() is None and "see their logs in /runs/sw/jobs);" in logs()


def test_waiting_on_results_stops_when_the_jobs_have_ended(dask_client):
    """Without the watch, a task no worker can run is waited for forever."""
    from lighthead.pipelines.cluster.batch import BatchError, completed

    stuck = dask_client.submit(sum, [1, 2], resources={"no-such-resource": 1}, pure=False)
    try:
        with pytest.raises(BatchError, match="^all 1 SLURM job"):
            list(completed([stuck], lambda: "all 1 SLURM job(s) ended"))
    finally:
        stuck.cancel()
    done = dask_client.submit(sum, [1, 2], pure=False)
    assert [f.result() for f in completed([done], lambda: None)] == [3]


@pytest.mark.parametrize("command", ["sweep", "extract"])
def test_batch_job_output_goes_to_the_commands_folder(tmp_path, monkeypatch, command):
    """Job logs (slurm-*.out) land in the sweep's `jobs/` or the store's `.jobs/`, not in
    whatever folder the command runs from; a path a job directive cannot hold keeps them there."""
    from lighthead.pipelines.cluster.batch import job_log_directory

    jobs = fake_batch.install(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    if command == "extract":
        from lighthead.pipelines.datasets.demo import generate

        generate(tmp_path / "demo", n_images=2, size=64)
    run = sweep if command == "sweep" else extract
    # the stand-in sbatch runs no job, so the command cannot finish: the script is what counts
    monkeypatch.setattr("lighthead.pipelines.cluster.batch._wait_submitted", _stop_after_submit)
    assert run(tmp_path, "--slurm", "--workers", "1", *GOOD) == 1  # stopped once the job was submitted
    [script] = fake_batch.scripts(jobs)
    folder = (tmp_path / "sw" / "jobs") if command == "sweep" else (tmp_path / "store" / ".jobs")
    assert f"#SBATCH -o {folder.resolve()}/" in script and f"#SBATCH -e {folder.resolve()}/" in script
    assert folder.is_dir()
    assert job_log_directory(tmp_path / "a b") is None and job_log_directory(tmp_path / "x%j") is None


class _Submitted(Exception):
    pass


def _stop_after_submit(*args, **kwargs):
    raise _Submitted
