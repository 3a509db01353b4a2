"""`lighthead sweep` through the CLI, joined to the test cluster with --scheduler."""

from __future__ import annotations

import csv
import sys

import pytest

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from tests.pipelines import fake_batch
from tests.pipelines.sweep import fakes


def lighthead(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["lighthead", *map(str, args)])
    return run_app(app)


def test_sweep_file_against_an_existing_scheduler(dask_client, tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "sweep.yaml").write_text(
        "head: itin\nmetric: macro_f1\ngrid:\n  lam: [0.2, 0.5]\n  lr: [1.0e-3, 1.0e-2]\nset:\n  d: 32\n"
    )
    rc = lighthead(
        monkeypatch,
        "sweep",
        "--file",
        tmp_path / "sweep.yaml",
        "--store",
        store,
        "--out",
        tmp_path / "sw",
        "--grid",
        "lam=0.2,0.5,0.8",  # the command line widens the file's grid
        "--scheduler",
        dask_client.scheduler.address,
        "--no-progress",
        "--train-fn",
        "tests.pipelines.sweep.fakes:quadratic_train",
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert len(fakes.calls(store)) == 6
    rows = list(csv.DictReader((tmp_path / "sw" / "summary.csv").open()))
    assert len(rows) == 6 and rows[0]["lam"] == "0.5" and rows[0]["lr"] == "0.001"
    assert "best" in out and "--set lam=0.5" in out and "val/macro_f1" in out

    # Same command again: nothing trains.
    rc = lighthead(
        monkeypatch,
        "sweep",
        "itin",
        "--file",
        tmp_path / "sweep.yaml",
        "--store",
        store,
        "--out",
        tmp_path / "sw",
        "--grid",
        "lam=0.2,0.5,0.8",
        "--scheduler",
        dask_client.scheduler.address,
        "--no-progress",
        "--train-fn",
        "tests.pipelines.sweep.fakes:quadratic_train",
    )
    assert rc == 0 and len(fakes.calls(store)) == 6
    assert "6 before" in capsys.readouterr().out


def test_bad_grid_key_is_one_line_naming_the_valid_keys(tmp_path, monkeypatch, capsys):
    (tmp_path / "store").mkdir()
    rc = lighthead(
        monkeypatch,
        "sweep",
        "itin",
        "--store",
        tmp_path / "store",
        "--out",
        tmp_path / "sw",
        "--grid",
        "lr=1e-3,1e-4",
        "--grid",
        "nonsense=1,2",
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("error: ") and "\n" not in err
    assert "'nonsense'" in err and "keys: " in err and "lr" in err
    assert not (tmp_path / "sw").exists()


def test_nothing_to_sweep_and_head_mismatch_fail_cleanly(tmp_path, monkeypatch, capsys):
    (tmp_path / "store").mkdir()
    assert lighthead(monkeypatch, "sweep", "itin", "--store", tmp_path / "store", "--out", tmp_path / "o") != 0
    assert "nothing to sweep" in capsys.readouterr().err
    (tmp_path / "s.toml").write_text('head = "mmca"\n[grid]\nalpha = [0.1, 0.2]\n')
    assert (
        lighthead(
            monkeypatch,
            "sweep",
            "itin",
            "--file",
            tmp_path / "s.toml",
            "--store",
            tmp_path / "store",
            "--out",
            tmp_path / "o",
        )
        != 0
    )
    assert "differs" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--slurm", "--pbs"])
def test_batch_cluster_writes_a_job_script_with_the_daemon_fix(flag, tmp_path, monkeypatch):
    """The jobqueue cluster is built and its job submitted (to a stand-in sbatch/qsub: no job runs)."""
    pytest.importorskip("dask_jobqueue")
    from lighthead.pipelines.cluster.batch import start_cluster
    from lighthead.pipelines.cluster.client import ClusterOptions

    jobs = fake_batch.install(tmp_path, monkeypatch)
    opts = ClusterOptions(
        batch=flag[2:],
        workers=1,
        cores=3,
        memory="4GB",
        queue="gpu",
        walltime="01:00:00",
        job_directives=["--gres=gpu:1"] if flag == "--slurm" else [],
        dashboard=None,
    )
    cluster, threads = start_cluster(opts, gpu=True, config={"distributed.worker.daemon": False})
    cluster.close()
    [script] = fake_batch.scripts(jobs)
    assert threads == 3
    assert "export DASK_DISTRIBUTED__WORKER__DAEMON=False" in script
    assert "trial=1,GPU=1" in script and "--nthreads 3" in script
    assert ("#SBATCH --gres=gpu:1" in script) if flag == "--slurm" else ("#PBS -q gpu" in script)
