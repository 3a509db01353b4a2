"""bench/gpu.py: its dry run on the CPU writes a table with a numeric figure for every planned case
of every part and lists what it could not exercise; without a GPU it fails with one line; its
time limits stop a case and list the cases left as skipped; the table is written part by part."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.bench_helpers import load_bench_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu():
    return load_bench_script("gpu")


def table_rows(text: str) -> list[list[str]]:
    """The cells of the table's body rows (header and rule left out)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")][1:]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, str]:
    out = tmp_path_factory.mktemp("gpu") / "table.md"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert time.perf_counter() - t0 < 150, "the dry run must stay under two minutes"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out.read_text()


@pytest.mark.slow
def test_dry_run_measures_every_part(dry_run):
    proc, table = dry_run
    assert table in proc.stdout  # the same table on stdout
    assert "torch " + torch.__version__ in table and "transformers " in table and "device: CPU" in table
    assert "fp32 precision: matmul " in table and "cuDNN RNN " in table
    # what the CPU could not exercise, per part, on stdout and in the table's head
    listed = proc.stdout.split("not exercised by this dry run (CUDA only):\n")[1].split("[self-check]")[0]
    for part in ("self-check", "gpu tests", "detector", "text", "scoring", "training"):
        assert f"  - {part}: " in listed, part
    assert "- not exercised by this dry run (CUDA only): self-check: " in table
    rows = table_rows(table)
    cases: dict[str, list[str]] = {}
    for part, case, figure, unit, peak, note in rows:
        assert not note.startswith(("skipped", "stopped", "error", "out of memory")), (part, case, note)
        assert float(figure.replace(",", "")) >= 0 and unit, (part, case, figure)
        assert peak == "-"  # no GPU memory on a CPU
        cases.setdefault(part, []).append(case)
    assert list(cases) == ["self-check", "gpu tests", "detector", "text", "scoring", "training"]
    assert cases["self-check"] == [
        "GRU output under bf16 autocast",
        "per-class NMS, one image at a time (before)",
        "per-class NMS, 2 images at once (after)",
        "host syncs per detector forward (before: sizes copied per masked layer)",
        "host syncs per detector forward (after)",
        "batch preparation: pad, then pin (before)",
        "batch preparation: pad into page-locked memory (after)",
        "host syncs scoring SCAN (before: 1 GiB blocks, masks asked per block, a copy per block)",
        "host syncs scoring SCAN (after)",
        "TF32 score difference, SCAN fp32: torch's defaults vs IEEE",
    ]
    check = {case: float(figure.replace(",", "")) for part, case, figure, *_ in rows if part == "self-check"}
    assert (
        check["host syncs per detector forward (after)"]
        < check["host syncs per detector forward (before: sizes copied per masked layer)"]
    )
    assert (
        check["host syncs scoring SCAN (after)"]
        < check["host syncs scoring SCAN (before: 1 GiB blocks, masks asked per block, a copy per block)"]
    )
    assert len(cases["gpu tests"]) == 1
    assert {c for c in cases["detector"] if "boxes, batch" in c} == {
        f"{p}, {k} boxes, batch {b}" for p in ("fp32", "bf16") for k in (36, 100) for b in (1, 2)
    }
    assert any(c.startswith("whole extract loop") for c in cases["detector"])
    assert sum(c.startswith("encode") for c in cases["text"]) == 4
    assert sum(c.startswith("forward only") for c in cases["text"]) == 2
    before = "fp32, before: 1 GiB blocks, masks asked and scores copied per block"
    assert cases["scoring"] == [
        f"{h}, {n}, {p}"
        for h in ("casc", "scan", "mmca")
        for n in ("6 x 30", "12 x 60")
        for p in ("fp32", "bf16") + ((before,) if n == "6 x 30" and h != "mmca" else ())
    ]
    # fp32 and what `lighthead train` runs (bf16 autocast; here on the CPU); on a GPU every registered head
    assert cases["training"] == [f"{h}, {p}" for h in ("casc", "mmca", "itin") for p in ("fp32", "bf16")]
    units = {part: {r[3] for r in rows if r[0] == part} for part in cases}
    assert units == {
        "self-check": {"bits", "ms/image", "syncs", "ms/batch", "max abs score difference"},
        "gpu tests": {"tests passed"},
        "detector": {"images/s"},
        "text": {"tokens/s"},
        "scoring": {"pairs/s"},
        "training": {"samples/s"},
    }
    assert table.rstrip().splitlines()[-1].startswith("time: ")  # after the rows: the time taken


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_one_line_error(gpu, capsys, tmp_path):
    assert gpu.main(["--out", str(tmp_path / "t.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no CUDA device") and err.count("\n") == 1
    assert not (tmp_path / "t.md").exists()


def test_bad_arguments_are_one_line_errors(gpu, capsys):
    assert gpu.main(["--dry-run", "--parts", "detector,nope"]) == 2
    assert gpu.main(["--dry-run", "--budget", "-5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: --parts nope: unknown part; known: check, tests, detector, text, scoring, training",
        "error: --budget -5: must be a positive number of seconds",
    ]


def test_a_case_past_its_limit_is_stopped_and_the_cases_left_are_skipped(gpu):
    part = gpu.Part("demo", seconds=0.5)
    part.plan(["first", "second", "third"])

    def busy():
        while True:  # a Python loop: the alarm interrupts it
            pass

    t0 = time.perf_counter()
    part.run("first", busy)
    assert time.perf_counter() - t0 < 2
    rows = part.finish()
    assert [r.case for r in rows] == ["first", "second", "third"]
    assert rows[0].note.startswith("stopped: time limit") and rows[0].figure is None
    assert all(r.note.startswith("skipped: the time budget of this part") for r in rows[1:])
    assert part.errors == 0


def test_a_case_limit_shorter_than_the_part(gpu):
    part = gpu.Part("demo", seconds=60)
    row = part.run("slow", lambda: time.sleep(5) or (1.0, "x/s", ""), limit=0.3)
    assert row.note.startswith("stopped") and part.left() > 50
    assert part.run("quick", lambda: (2.5, "x/s", "ok")).figure == 2.5  # the part goes on


def test_skips_errors_and_failed_set_up(gpu):
    part = gpu.Part("demo", seconds=60)

    def too_big():
        raise gpu.Skip("needs 9 GiB, 2 GiB free")

    class OutOfMemoryError(RuntimeError):  # the name torch.cuda's error has
        pass

    def oom():
        raise OutOfMemoryError("CUDA out of memory")

    def broken():
        raise ValueError("bad shape\nsecond line")

    assert part.run("a", too_big).note == "skipped: needs 9 GiB, 2 GiB free"
    assert part.run("b", oom).note == "out of memory"
    assert part.run("c", broken).note == "error: ValueError: bad shape"
    assert part.errors == 1  # only the real error counts toward the exit status
    setup = gpu.Part("other", seconds=60)
    setup.plan(["x", "y"])
    assert setup.prepare("the model", broken) is None
    rows = setup.finish()
    assert [r.note for r in rows] == ["skipped: the model: set-up failed: ValueError: bad shape"] * 2
    assert setup.errors == 1


def test_table_cells_and_figures(gpu):
    assert [gpu.budget.format_figure(v) for v in (0.04567, 12.345, 1234567.8, None)] == [
        "0.0457",
        "12.3",
        "1,234,568",
        "-",
    ]
    rows = [gpu.budget.Row("detector", "fp32 | b1", 12.345, "images/s", 2048.4, "a note")]
    text = gpu.markdown("GPU benchmark: X", ["device: X"], rows)
    assert text.startswith("# GPU benchmark: X\n\n- device: X\n")
    assert table_rows(text) == [["detector", "fp32 / b1", "12.3", "images/s", "2,048", "a note"]]
    assert gpu.device_slug("NVIDIA H200") == "nvidia-h200"
    assert gpu.device_slug("NVIDIA GeForce RTX 4090 (24GB)") == "nvidia-geforce-rtx-4090-24gb"


def test_gpu_test_files_and_junit_counts(gpu, tmp_path):
    files = gpu.gpu_test_files(ROOT / "tests")
    assert "tests/pipelines/sweep/test_gpu.py" in files and "tests/test_bench_gpu.py" not in files
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.a" name="ok"/><testcase classname="tests.a" name="bad"><failure/></testcase>'
        '<testcase classname="tests.b" name="s"><skipped/></testcase><testcase classname="tests.b" name="ok"/>'
        "</testsuite></testsuites>"
    )
    counts, failed = gpu.junit_counts(xml)
    assert counts == {"tests": 4, "failures": 1, "errors": 0, "skipped": 1} and failed == ["tests.a.bad"]


def test_real_sizes_are_the_ones_the_table_claims(gpu):
    real = gpu.REAL
    assert real.detector == "r101" and real.detector_overrides == {}  # ResNet-101, 600/1000, 300 ROIs
    assert real.detector_batches == (1, 4, 8, 16) and real.boxes == (36, 100)
    assert real.bert == {}  # transformers' BertConfig defaults: BERT-base (768 wide, 12 layers, 12 heads)
    assert real.score_sizes == ((1000, 5000), (5000, 25000)) and real.score_overrides == {}
    assert real.train_heads == () and real.train_extra == {} and real.train_batch is None  # every head, paper sizes
    assert real.check.detector == "r101" and real.check.nms == (8, 300, 1601)  # the real NMS: 300 ROIs, 1601 classes
    assert sum(gpu.SHARES.values()) == pytest.approx(1) and sum(gpu.DRY_SHARES.values()) == pytest.approx(1)
    assert gpu.CHECK_SECONDS == 30 and gpu.CHECK_SECONDS < gpu.TOTAL_SECONDS
    assert gpu.TOTAL_SECONDS + 30 <= 8 * 60
    assert set(gpu.CUDA_ONLY) == set(gpu.PARTS) and all(gpu.CUDA_ONLY.values())


def test_precision_flags_are_read_per_op_even_when_they_differ(gpu):
    """torch raises on the legacy `cudnn.allow_tf32` once cuDNN's conv and RNN precisions differ;
    the table's header reads the per-op flags instead."""
    rnn, conv = torch.backends.cudnn.rnn.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    other = "ieee" if conv != "ieee" else "tf32"
    torch.backends.cudnn.rnn.fp32_precision = other
    try:
        with pytest.raises(RuntimeError):
            torch.backends.cudnn.allow_tf32  # noqa: B018 - the legacy flag, as the header read it before
        line = gpu.precision_line()
    finally:
        torch.backends.cudnn.rnn.fp32_precision = rnn
    assert line.startswith("fp32 precision: matmul ") and f"cuDNN conv {conv}, cuDNN RNN {other}" in line


def test_the_table_is_written_part_by_part(gpu, tmp_path, monkeypatch, capsys):
    """A part that fails becomes a row and the others run; a run stopped late (here: interrupted
    in its last part) leaves the table's head and every finished part's rows in the file."""

    def measured(part, dev, sizes):
        part.run("first figure", lambda: (12.5, "x/s", "measured"))

    def broken(part, dev, sizes):
        part.plan(["never"])
        raise ValueError("a bug in the part")

    def interrupted(part, dev, sizes):
        raise KeyboardInterrupt

    monkeypatch.setitem(gpu.PARTS, "check", measured)
    monkeypatch.setitem(gpu.PARTS, "text", broken)
    monkeypatch.setitem(gpu.PARTS, "training", interrupted)
    out = tmp_path / "table.md"
    assert gpu.main(["--dry-run", "--out", str(out), "--parts", "check,text"]) == 1  # the broken part counts
    rows = table_rows(out.read_text())
    assert [r[:4] for r in rows] == [["self-check", "first figure", "12.5", "x/s"], ["text", "never", "-", ""]]
    assert rows[1][5] == "skipped: the part failed: ValueError: a bug in the part"
    with pytest.raises(KeyboardInterrupt):
        gpu.main(["--dry-run", "--out", str(out), "--parts", "check,training"])
    text = out.read_text()
    assert text.startswith("# GPU benchmark: cpu dry run\n") and "- fp32 precision: " in text
    assert [r[1] for r in table_rows(text)] == ["first figure"]
