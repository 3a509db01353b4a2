"""One process at a time writes a run or sweep folder: the second is refused in one line.

Two `train heads` into one `--out` started together could leave one run's config.json beside
the other's checkpoints; two sweeps into one folder ran trials twice. The folder's lock is
held by another process here (a child that took it and waits), as a first command would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.pipelines.sweep import from_args, run_sweep
from tests.conftest_helpers import TINY, build_small_retrieval_store
from tests.store.helpers import ROOT


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_small_retrieval_store(tmp_path_factory.mktemp("lock") / "store", seed=6)


def hold_lock(folder) -> subprocess.Popen:
    """A child process that takes the folder's lock, says "ready" and waits to be killed."""
    code = textwrap.dedent(f"""
        import time
        from lighthead.pipelines.training.run_folder import run_lock
        with run_lock({str(folder)!r}):
            print("ready", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"the lock holder did not start: {line}{proc.stderr.read()}")
    return proc


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_second_train_into_a_held_run_folder_is_refused_and_a_dead_holder_blocks_nothing(store, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "heads", "vsepp", "--store", str(store), "--out", str(out), "--epochs", "1", "--no-progress"]
    args += [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    holder = hold_lock(out)
    try:
        assert run_app(app, args) == 1
        lines = error_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}: in use by pid {holder.pid} on "), lines
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written beside the holder's files
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: its lock file stays, the lock goes with it
        holder.wait()
    assert (out / ".lock").exists()
    assert run_app(app, args) == 0
    assert (out / "config.json").is_file() and not (out / ".lock").exists()


def test_a_failed_train_leaves_no_folder_behind(store, tmp_path, capsys):
    out = tmp_path / "runs" / "run"
    assert (
        run_app(app, ["train", "heads", "vsepp", "--store", str(store), "--out", str(out), "--set", "no_such_key=1"])
        == 1
    )
    assert len(error_lines(capsys)) == 1
    assert not (tmp_path / "runs").exists()


def test_a_second_sweep_into_a_held_folder_is_refused(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    out = tmp_path / "sweep"
    holder = hold_lock(out)
    try:
        with pytest.raises(ValueError, match=f"^{out}: in use by pid {holder.pid} on "):
            run_sweep(
                from_args("itin", ["lr=1e-3,1e-4"]),
                store,
                out,
                train_fn="tests.pipelines.sweep.fakes:quadratic_train",
                progress=False,
            )
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no sweep.json, no trials
    finally:
        holder.kill()
        holder.wait()
