"""`extract --slurm` and `sweep --slurm` on a real SLURM (tests/cluster/slurm.sh start).

One node, 1-core jobs. Each test runs `lighthead` as a user would (a subprocess, from its own
folder) and asks SLURM what ran: `scontrol`'s next job id, `squeue`, and the jobcomp log with
each ended job's state.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lighthead.store import open_store, verify
from tests.cluster.conftest import Slurm

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(400)]

JOB = ["--cores", "1", "--memory", "2GB"]  # a one-core job: two fit the test node at once
REGIONS = "regions/butd-r101-vg-36"


def lighthead(slurm: Slurm, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`lighthead ARGS` as a user runs it, from `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "lighthead", *map(str, args)],
        cwd=cwd,
        env=slurm.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def extract_args(root: Path, store: Path, *more: str) -> list[str]:
    return [
        "extract",
        "--dataset",
        "demo",
        "--root",
        root,
        "--store",
        store,
        "--features",
        "regions36",
        "--random-weights",
        "--loader-workers",
        "0",
        "--no-progress",
        "--slurm",
        *JOB,
        *more,
    ]


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error")]


def summary(store: Path) -> dict:
    """The last run's row of the extraction summary stored in the store."""
    return open_store(store).read_json("extract_summary")[-1]["jobs"][0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[str]]:
    from lighthead.pipelines.datasets.demo import generate, load

    root = generate(tmp_path_factory.mktemp("demo") / "demo", n_images=48, size=160)
    return root, sorted({r.image_id for r in load(root)})


def test_extract_on_two_jobs_stores_every_id_once_and_a_rerun_submits_nothing(slurm, demo, tmp_path):
    root, images = demo
    first = slurm.next_job_id()
    res = lighthead(
        slurm,
        tmp_path,
        *extract_args(root, tmp_path / "store", "--workers", "2", "--walltime", "00:10:00", "-o", "detector=tiny"),
    )
    assert res.returncode == 0, res.stderr
    assert sorted(open_store(tmp_path / "store")[REGIONS].ids) == images
    assert verify(tmp_path / "store") == []
    row = summary(tmp_path / "store")
    assert (row["written"], row["already_done"], row["skipped"]) == (len(images), 0, [])
    # Two batch jobs ran the two parts; closing the cluster cancelled them, nothing is left queued.
    assert slurm.next_job_id() - first == 2
    assert set(slurm.wait_ended(first, 2).values()) <= {"CANCELLED", "COMPLETED"}
    assert slurm.queue() == []
    assert len(list((tmp_path / "store" / ".jobs").glob("*.out"))) == 2  # the jobs' logs, in the store's .jobs/
    assert not list(tmp_path.glob("slurm-*.out"))  # not in the folder the command ran from

    again = lighthead(slurm, tmp_path, *extract_args(root, tmp_path / "store", "--workers", "2"))
    assert again.returncode == 0, again.stderr
    assert slurm.next_job_id() - first == 2  # everything stored: no job submitted
    assert (summary(tmp_path / "store")["written"], summary(tmp_path / "store")["already_done"]) == (0, len(images))


def _rows_by_tag(store: Path) -> dict[str, int]:
    """Committed rows per writer tag, from the feature set's manifest (safe to read mid-write)."""
    import re

    try:
        shards = json.loads((store / REGIONS / "manifest.json").read_text())["shards"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    rows: dict[str, int] = {}
    for s in shards:
        tag = re.match(r"shard-(.+)-\d{5,}\.h5$", s["file"])[1]
        rows[tag] = rows.get(tag, 0) + s["rows"]
    return rows


def test_a_job_cancelled_mid_part_is_retried_and_every_id_is_stored_once(slurm, demo, tmp_path):
    """scancel the job of a part that has committed some of its images: the part resumes on the
    other job, skipping what the cancelled one committed."""
    root, images = demo
    store = tmp_path / "store"
    first = slurm.next_job_id()
    # One image per shard: progress is visible in the manifest as it happens.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lighthead",
            *map(
                str,
                extract_args(
                    root,
                    store,
                    "--workers",
                    "2",
                    "--walltime",
                    "00:10:00",
                    "--batch-size",
                    "1",
                    "-o",
                    "detector=slim",
                    "-o",
                    "shard_items=1",
                ),
            ),
        ],
        cwd=tmp_path,
        env=slurm.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        part = len(images) // 2
        deadline = time.monotonic() + 240
        victim = None
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            for tag, rows in _rows_by_tag(store).items():
                if 0 < rows < part // 2:  # under way, with time left before it is done
                    victim = slurm.job_holding(store / REGIONS / f".writer-{tag}.lock")
                    break
            time.sleep(0.05)
        if victim is None:
            pytest.fail(f"never saw a part under way in its job: {_rows_by_tag(store)}, rc {proc.poll()}")
        slurm.scancel(victim)
        before_cancel = sum(_rows_by_tag(store).values())
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert error_lines(err) == []
    fs = open_store(store)[REGIONS]
    assert sorted(fs.ids) == images and len(fs.ids) == len(images)  # every id exactly once
    assert verify(store) == []
    # The summary counts what the set gained, the cancelled job's commits included.
    row = summary(store)
    assert (row["written"], row["already_done"], row["skipped"]) == (len(images), 0, [])
    assert f"│ regions36 │ {REGIONS} │  {len(images)} │   0 │" in out
    assert 0 < before_cancel < len(images)
    ended = slurm.wait_ended(first, 2)
    assert ended[victim] == "CANCELLED" and len(ended) == 2 and slurm.queue() == []


def test_sweep_trains_its_trials_on_two_jobs(slurm, tmp_path):
    from tests.conftest_helpers import TINY, build_small_retrieval_store

    store = build_small_retrieval_store(tmp_path / "store", seed=0)
    first = slurm.next_job_id()
    res = lighthead(
        slurm,
        tmp_path,
        "sweep",
        "vsepp",
        "--store",
        store,
        "--out",
        tmp_path / "sw",
        "--grid",
        "lr=1e-3,1e-2",
        *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")],
        "--set",
        "test=false",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--dashboard",
        "",
        "--slurm",
        "--workers",
        "2",
        *JOB,
        "--walltime",
        "00:10:00",
    )
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((tmp_path / "sw" / "summary.csv").open()))
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    assert {r["lr"] for r in rows} == {"1e-3", "1e-2"}
    assert json.loads((tmp_path / "sw" / "best.json").read_text())["trial"] == rows[0]["trial"]
    assert "2/2 trials finished (2 now, 0 before)" in res.stdout
    assert slurm.next_job_id() - first == 2
    slurm.wait_ended(first, 2)
    assert slurm.queue() == []


def test_a_job_killed_by_its_walltime_ends_the_command_with_one_line(slurm, tmp_path):
    """The only job reaches its 1-minute limit mid-trial: SLURM ends it (TIMEOUT) and no worker
    will come back, so the sweep stops with one line saying so instead of waiting forever; the
    unfinished trial is left to a rerun."""
    store = tmp_path / "store"
    store.mkdir()
    first = slurm.next_job_id()
    res = lighthead(
        slurm,
        tmp_path,
        "sweep",
        "itin",
        "--store",
        store,
        "--out",
        tmp_path / "sw",
        "--grid",
        "lam=0.5",
        "--no-progress",
        "--dashboard",
        "",
        "--slurm",
        "--workers",
        "1",
        *JOB,
        "--walltime",
        "00:01:00",
        "--train-fn",
        "tests.cluster.fakes:sleepy_train",
        timeout=360,
    )
    assert res.returncode == 1
    assert error_lines(res.stderr) == [
        "error: all 1 SLURM job(s) ended before the work was done (time limit reached, cancelled or a node "
        f"failed; see their logs in {tmp_path / 'sw' / 'jobs'}); what finished is kept: rerun the same command "
        "to resume (with a longer --walltime if the time limit ended them)"
    ]
    [log] = (tmp_path / "sw" / "jobs").glob("*.err")  # SLURM's own word on the kill is there
    assert "DUE TO TIME LIMIT" in log.read_text()
    assert (store / "started").is_file()  # the trial ran, and was cut short
    assert slurm.wait_ended(first, 1) == {first: "TIMEOUT"}
    assert slurm.queue() == []
    assert not list((tmp_path / "sw" / "trials").glob("*/metrics.json"))


@pytest.mark.parametrize(
    "bad, expect",
    [
        (["--walltime", "abc"], "error: --walltime 'abc': expected HH:MM:SS or D-HH:MM:SS, e.g. 08:00:00"),
        (["--queue", "debug\n#SBATCH --wrap=id"], "error: --queue 'debug\\n#SBATCH --wrap=id': expected a name"),
        (
            ["--queue", "nosuch"],
            "error: --slurm: sbatch refused the job: sbatch: error: Batch job submission "
            "failed: Invalid partition name specified",
        ),
        (
            ["--memory", "100TB"],
            "error: --slurm: sbatch refused the job: sbatch: error: Batch job submission "
            "failed: Requested node configuration is not available",
        ),
    ],
)
def test_a_bad_option_submits_no_job(slurm, demo, tmp_path, bad, expect):
    """Checked values never reach SLURM; what SLURM itself refuses is its own reason in one line."""
    root, _ = demo
    first = slurm.next_job_id()
    res = lighthead(slurm, tmp_path, *extract_args(root, tmp_path / "store", "--workers", "2", *bad), timeout=120)
    assert res.returncode == 1
    [line] = error_lines(res.stderr)
    assert line.startswith(expect), line
    if "refused" not in expect:  # ours: sbatch never ran
        assert slurm.next_job_id() == first
    # SLURM may spend a job id on a request it refuses (too much memory), but no job ever ran.
    assert slurm.queue() == [] and slurm.ended(first, ran=True) == {}
    assert not list(tmp_path.glob("slurm-*.out")) and not list((tmp_path / "store").glob(".jobs/*.out"))
