"""Part 1: the gpu-marked tests, run by pytest in a subprocess killed at the part's time limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.gpu_parts.common import ROOT, Device, Part, Skip
from bench.gpu_parts.sizes import Sizes

# What a CPU (the dry run) cannot exercise in this part.
CUDA_ONLY = ("the gpu-marked tests themselves (each skips without CUDA)",)


def gpu_test_files(tests: Path) -> list[str]:
    """Test files (relative to the repository) that carry the gpu mark; a conftest.py that
    carries it brings its whole folder."""
    out = []
    for path in sorted(tests.rglob("*.py")):
        if "mark.gpu" not in path.read_text(encoding="utf-8", errors="replace"):
            continue
        target = path.parent if path.name == "conftest.py" else path
        out.append(str(target.relative_to(ROOT)))
    return sorted(set(out))


def junit_counts(path: Path) -> tuple[dict[str, int], list[str]]:
    """(tests/failures/errors/skipped counts, names of the failed tests) of a pytest junit XML."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{c.get('classname', '')}.{c.get('name', '')}"
        for c in root.iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    ]
    return counts, failed


def tests_part(part: Part, dev: Device, sizes: Sizes) -> None:
    files = gpu_test_files(ROOT / "tests")
    case = f"pytest -m gpu ({len(files)} files)"

    def run() -> tuple[float, str, str]:
        if not files:
            raise Skip("no test file carries the gpu mark")
        with tempfile.TemporaryDirectory(prefix="lighthead-gpu-tests-") as tmp:
            xml = Path(tmp) / "junit.xml"
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                "gpu",
                f"--junitxml={xml}",
                *files,
            ]
            t0 = time.perf_counter()
            # own session: at the time limit the whole group (dask workers included) is killed
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
            try:
                out, _ = proc.communicate(timeout=max(1.0, part.left() - 3))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise Skip(f"pytest stopped at the time limit after {time.perf_counter() - t0:.0f} s") from None
            finally:
                if proc.poll() is None:  # interrupted some other way: leave no test run behind
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            seconds = time.perf_counter() - t0
            if not xml.is_file():
                tail = " / ".join(out.strip().splitlines()[-2:])
                raise RuntimeError(f"pytest exited {proc.returncode} without results: {tail}")
            counts, failed = junit_counts(xml)
        bad = counts["failures"] + counts["errors"]
        passed = counts["tests"] - bad - counts["skipped"]
        note = (
            f"{counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped of "
            f"{counts['tests']} in {seconds:.0f} s"
        )
        if failed:
            note += "; failed: " + ", ".join(failed[:4]) + (" ..." if len(failed) > 4 else "")
        part.errors += bad
        return passed, "tests passed", note

    part.run(case, run).peak_mib = None  # the tests ran in another process
