"""Stand-in `sbatch`/`qsub`/`scancel`/`qdel` on PATH, so the SLURM/PBS path runs up to the
submission on a machine without a batch system: each submitted job script is kept, no job
runs. The real scheduler is tested by the `slurm` tests (tests/cluster)."""

from __future__ import annotations

import os
from pathlib import Path

SUBMIT = """#!/bin/sh
# keeps the job script, answers like the real command (or refuses, when told to)
if [ -n "$FAKE_BATCH_REFUSE" ]; then
    printf '%s\\n' "$FAKE_BATCH_REFUSE" >&2
    exit 1
fi
cp "$1" "$FAKE_BATCH_DIR/job-$$.sh"  # several submit at once: the process id names each
echo "{answer}"
"""


def install(tmp_path: Path, monkeypatch, refuse: str | None = None) -> Path:
    """Put the fake commands first on PATH; returns the folder the job scripts land in
    (job-PID.sh). `refuse`: the submit commands fail with this text on stderr."""
    bin_dir = tmp_path / "fake-bin"
    jobs = tmp_path / "fake-jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    for name, answer in (("sbatch", "Submitted batch job $$"), ("qsub", "$$.pbs-server")):
        (bin_dir / name).write_text(SUBMIT.format(answer=answer))
    for name in ("scancel", "qdel"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BATCH_DIR", str(jobs))
    if refuse is not None:
        monkeypatch.setenv("FAKE_BATCH_REFUSE", refuse)
    return jobs


def scripts(jobs: Path) -> list[str]:
    """The job scripts submitted so far."""
    return [p.read_text() for p in sorted(jobs.glob("job-*.sh"))]
