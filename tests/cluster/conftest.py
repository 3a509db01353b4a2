"""The `slurm` tests: a reachable SLURM, or a skip that says how to start one.

`tests/cluster/slurm.sh start` starts a one-node SLURM and writes its config's path into
$LIGHTHEAD_SLURM_DIR/env (default /tmp/lighthead-slurm); $SLURM_CONF, when set, wins. The
tests never start SLURM themselves.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository: the job's Python imports tests.* from it
STATE_DIR = Path(os.environ.get("LIGHTHEAD_SLURM_DIR", "/tmp/lighthead-slurm"))


def _conf() -> Path | None:
    if os.environ.get("SLURM_CONF"):
        return Path(os.environ["SLURM_CONF"])
    env = STATE_DIR / "env"
    if env.is_file():
        m = re.search(r"SLURM_CONF=(\S+)", env.read_text())
        if m:
            return Path(m[1])
    return None


def _run(conf: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env={**os.environ, "SLURM_CONF": str(conf)}, capture_output=True, text=True, timeout=30)


@dataclass
class Slurm:
    """The SLURM the tests submit to, and what they ask it."""

    conf: Path  # slurm.conf the daemons run with

    def env(self) -> dict[str, str]:
        """The environment of a `lighthead` command: this SLURM, and the repository importable
        in the jobs (sbatch passes the environment on)."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "SLURM_CONF": str(self.conf), "PYTHONPATH": path}

    def next_job_id(self) -> int:
        out = _run(self.conf, "scontrol", "show", "config").stdout
        return int(re.search(r"NEXT_JOB_ID\s*=\s*(\d+)", out)[1])

    def queue(self) -> list[tuple[int, str]]:
        """(job id, state) of the jobs queued or running."""
        out = _run(self.conf, "squeue", "-h", "-o", "%i %T").stdout
        return [(int(i), s) for i, s in (line.split() for line in out.splitlines())]

    def ended(self, since: int, ran: bool = False) -> dict[int, str]:
        """job id -> final state (COMPLETED, CANCELLED, TIMEOUT, ...) of the jobs from id `since` on;
        ran: only those that started on the node (a refused request is logged as FAILED too)."""
        log = self.conf.parent / "jobcomp.log"
        text = log.read_text() if log.is_file() else ""
        jobs = re.finditer(r"JobId=(\d+) .*?JobState=(\S+) .*?NodeList=(\S+)", text)
        return {int(m[1]): m[2] for m in jobs if int(m[1]) >= since and not (ran and m[3] == "(null)")}

    def wait_ended(self, since: int, n: int, timeout: float = 60) -> dict[int, str]:
        """The end states once `n` jobs from id `since` on have ended (jobcomp logs them then)."""
        deadline = time.monotonic() + timeout
        while len(self.ended(since)) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.ended(since)

    @staticmethod
    def job_holding(path: Path) -> int | None:
        """The SLURM job whose process has `path` open (from /proc: this node, and root or the
        job's own user), or None."""
        target = str(path)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if not any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                    continue
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile, or not ours to read
                continue
            for var in env:
                if var.startswith(b"SLURM_JOB_ID="):
                    return int(var.split(b"=", 1)[1])
        return None

    def scancel(self, job: int) -> None:
        _run(self.conf, "scancel", str(job)).check_returncode()


@pytest.fixture(scope="session")
def slurm() -> Slurm:
    conf = _conf()
    if conf is None or not conf.is_file():
        pytest.skip("no SLURM to submit to: run tests/cluster/slurm.sh start (or set SLURM_CONF)")
    try:
        res = _run(conf, "sinfo", "-h", "-N", "-o", "%t")
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"no SLURM reachable with {conf}: {e}")
    states = res.stdout.split()
    if res.returncode != 0 or not any(s in ("idle", "mix", "alloc") for s in states):
        why = (res.stderr.strip().splitlines() or [f"node state {states}"])[-1]
        pytest.skip(f"no SLURM reachable with {conf}: {why}")
    return Slurm(conf)
