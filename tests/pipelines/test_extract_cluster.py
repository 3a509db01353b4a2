"""`extract --slurm/--pbs`: region jobs on a dask cluster through the sweep's cluster code."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lighthead.pipelines.datasets.demo import generate, load
from lighthead.pipelines.features import FEATURES, ExtractOptions, load_all
from lighthead.store import open_store, verify
from tests.pipelines import fake_batch


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("demo") / "demo", n_images=6, size=96)
    return root, load(root)


@pytest.mark.parametrize("flag", ["--slurm", "--pbs"])
def test_batch_options_reach_the_job_script_and_each_job_gets_one_part(demo, tmp_path, monkeypatch, flag):
    """The command line's batch options are in the scripts submitted (to a stand-in sbatch/qsub:
    no job runs), one per worker, and the parts cover every image once."""
    pytest.importorskip("dask_jobqueue")
    import lighthead.pipelines.features.regions as regions
    from lighthead.pipelines.cli import app
    from lighthead.pipelines.cli.common import run_app

    jobs = fake_batch.install(tmp_path, monkeypatch)
    seen: dict = {}

    def fake_submit(client, job, specs, resources, progress, ended=None):
        seen.update(specs=specs, resources=resources)
        return []

    monkeypatch.setattr(regions, "submit_parts", fake_submit)
    root, records = demo
    directive = "--gres=gpu:1" if flag == "--slurm" else "-l ngpus=1"
    rc = run_app(
        app,
        [
            "extract",
            "--dataset",
            "demo",
            "--root",
            str(root),
            "--store",
            str(tmp_path / "s"),
            "--features",
            "regions36",
            "--random-weights",
            "-o",
            "detector=tiny",
            "--no-progress",
            flag,
            "--workers",
            "3",
            "--cores",
            "4",
            "--memory",
            "16GB",
            "--walltime",
            "02:00:00",
            "--queue",
            "gpu",
            "--account",
            "proj",
            f"--job-directive={directive}",
            "--device",
            "cuda",
        ],
    )
    assert rc == 0
    submitted = fake_batch.scripts(jobs)
    assert len(submitted) == 3  # three batch jobs: --workers 3
    script = submitted[0]
    assert "--nthreads 4" in script and "trial=1,GPU=1" in script  # one part at a time per job, one GPU
    assert "export DASK_DISTRIBUTED__WORKER__DAEMON=False" in script
    if flag == "--slurm":
        for line in (
            "#SBATCH --gres=gpu:1",
            "#SBATCH -p gpu",
            "#SBATCH -A proj",
            "#SBATCH -t 02:00:00",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --mem=15G",
        ):
            assert line in script, line
    else:
        for line in (
            "#PBS -l ngpus=1",
            "#PBS -q gpu",
            "#PBS -A proj",
            "#PBS -l walltime=02:00:00",
            "#PBS -l select=1:ncpus=4:mem=15GB",
        ):
            assert line in script, line
    specs = seen["specs"]
    assert len(specs) == 3 and seen["resources"] == {"GPU": 1, "trial": 1}
    assert all(s[5] == "cuda" and s[6] == 4 and s[4].cluster is None for s in specs)  # device, threads
    parts = [image_id for s in specs for image_id, _ in s[2]]
    assert sorted(parts) == sorted({r.image_id for r in records})


def test_slurm_and_pbs_exclude_each_other(tmp_path, capsys):
    from lighthead.pipelines.cli import app
    from lighthead.pipelines.cli.common import run_app

    rc = run_app(app, ["extract", "--dataset", "demo", "--store", str(tmp_path / "s"), "--slurm", "--pbs"])
    assert rc == 1 and capsys.readouterr().err.strip() == "error: --slurm and --pbs exclude each other"


def test_a_local_cluster_resumes_by_ids_and_stores_every_id_once(demo, tmp_path, capsys):
    """... and its progress counts the images the parts report, not finished parts: the last line
    reads `regions36 (parts): 4/4 (100%), X items/s`, a rate of images."""
    import re

    from lighthead.pipelines.sweep import ClusterOptions

    load_all()
    _, records = demo
    images = sorted({r.image_id for r in records})
    store = open_store(tmp_path / "store", create=True)
    base = dict(
        random_weights=True,
        batch_size=4,
        loader_workers=0,
        progress=False,
        job_options={"detector": "tiny", "shard_items": 1},
    )
    FEATURES.get("regions36").run([r for r in records if r.image_id in images[:2]], store, ExtractOptions(**base))
    opts = ExtractOptions(**{**base, "progress": True}, cluster=ClusterOptions(workers=2, dashboard=None))
    capsys.readouterr()
    summary = FEATURES.get("regions36").run(records, store, opts)
    assert summary.already_done == 2 and summary.written == len(images) - 2 and not summary.skipped
    fs = open_store(tmp_path / "store")["regions/butd-r101-vg-36"]
    assert sorted(fs.ids) == images  # every id exactly once
    assert verify(tmp_path / "store") == []
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("regions36 (parts)")]
    last = re.match(r"regions36 \(parts\): (\d+)/(\d+) \(100%\), ([\d.]+) items/s, done in", lines[-1])
    assert last and last.group(1) == last.group(2) == str(len(images) - 2), lines
    assert float(last.group(3)) > 0.0


def test_a_part_reports_its_progress_as_events(demo, tmp_path):
    """The worker side: a part sends (part, images done) events, the already stored ones included."""
    from distributed import Client, LocalCluster

    from lighthead.pipelines.features.regions import run_part

    load_all()
    _, records = demo
    items = sorted({(r.image_id, r.image_path) for r in records})
    opts = ExtractOptions(
        random_weights=True, batch_size=2, loader_workers=0, progress=False, job_options={"detector": "tiny"}
    )
    open_store(tmp_path / "store", create=True)
    run_part("regions36", str(tmp_path / "store"), items[:2], None, opts, "cpu")  # two already stored
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        seen: list = []
        client.subscribe_topic("t", lambda event: seen.append(list(event[1])))
        res = client.submit(
            run_part, "regions36", str(tmp_path / "store"), items, None, opts, "cpu", report=("t", 3)
        ).result()
        import time

        deadline = time.monotonic() + 10
        while (not seen or seen[-1] != [3, 6]) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert res["written"] == 4
    assert seen[0] == [3, 2] and seen[-1] == [3, 6], seen


def test_the_summary_counts_what_a_part_that_lost_its_job_committed(demo, tmp_path, monkeypatch):
    """A part whose batch job ends mid-way is retried; the retry reports only the ids it wrote
    itself, so the summary counts what the feature set gained instead."""
    import lighthead.pipelines.features.regions as regions

    load_all()
    _, records = demo
    images = sorted({r.image_id for r in records})

    def parts_with_one_lost_attempt(job, store_path, items, boxes, options):
        quiet = replace(options, workers=1, cluster=None, progress=False)
        regions.run_part(job, store_path, items[:2], boxes, quiet, "cpu")  # the attempt whose job ended
        return [regions.run_part(job, store_path, items, boxes, quiet, "cpu")]  # its retry

    monkeypatch.setattr(regions, "_run_parallel", parts_with_one_lost_attempt)
    store = open_store(tmp_path / "store", create=True)
    opts = ExtractOptions(
        random_weights=True, batch_size=4, loader_workers=0, progress=False, workers=2, job_options={"detector": "tiny"}
    )
    summary = FEATURES.get("regions36").run(records, store, opts)
    assert summary.written == len(images) and summary.already_done == 0
    assert sorted(open_store(tmp_path / "store")["regions/butd-r101-vg-36"].ids) == images
