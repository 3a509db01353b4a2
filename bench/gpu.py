"""One command for a GPU: a self-check, the gpu-marked tests, then the throughput and memory peak of each stage.

    make bench-gpu                                   # python -m bench.gpu: one CUDA device, under 8 minutes
    python -m bench.gpu --device cuda:1 --parts detector,text --budget 200
    python -m bench.gpu --dry-run --out /tmp/gpu.md  # every part on the CPU at tiny sizes (the tests run this)

Each part is one module of bench/gpu_parts/ (common.py: the device, the timer, loading the other
bench scripts; sizes.py: what is measured on a GPU and in the dry run).

Parts (`--parts` ids), in order; the self-check gets a fixed 30 s, the others a share of the rest
of the total time budget (default 450 s, so that start-up and writing fit in 8 minutes), and
time a part leaves unused goes to the later ones:
0. check: the self-check, whose rows head the table (bench/gpu_parts/check.py): the GRU's
   dtype under bf16 autocast, per-class NMS per image one image at a time and a batch at once,
   host syncs per detector forward and batch preparation before and after the host-sync fixes,
   host syncs while scoring SCAN before and after, and SCAN's score difference between
   torch's default per-op TF32 settings and IEEE fp32.
1. tests: `pytest -m gpu` on the test files that carry the mark, in a subprocess that is
   killed when the part's time is spent; passed / failed / skipped counts.
2. detector: images/s of the ResNet-101 detector (random weights) at the 600/1000 test scale
   with 300 ROIs, for batch 1/4/8/16, fp32 and bf16 autocast (fp16 on a GPU without bf16), 36
   and 100 boxes: forward + box selection + the kept features copied to the host, on images
   decoded and resized beforehand (bench/extract.py's 480x640 JPEGs); then the whole
   `lighthead extract` loop (JPEG decoding in DataLoader workers, the runner's autocast) at
   batch 8 through bench/extract.py.
3. text: tokens/s of a BERT-base-size random model (transformers' BertConfig defaults, the
   bundled MiniLM's uncased WordPiece vocabulary) through TextEncoder (tokenising, forward,
   copying out: bench/text.py's `rate`) in fp32 and fp16 autocast, and of its forward pass alone.
4. scoring: pairs/s of `score_blocks` for CASC, SCAN and MMCA at 1,000 x 5,000 and 5,000 x
   25,000 (bench/retrieval_eval.py's paper-size heads and random data), fp32 and bf16 products;
   for CASC and SCAN also the earlier scoring loop (bench/gpu_parts/reference.py) at 1,000 x 5,000.
5. training: samples/s of each head's training step (bench/train.py's `bench_head` on its
   synthetic store, paper sizes, median over steps).

The memory peak of each figure is torch.cuda.max_memory_allocated, reset before it. A size
that would not fit in the free memory (torch.cuda.mem_get_info, scaled from the smallest size
measured) or in the time left (scaled likewise) is skipped, a case still running when its
part's time is spent is stopped, and the cases left are listed as skipped; the table says
which and why. The table (device, versions, one row per figure) goes to
bench/results/<device>.md part by part (its head first, each part's rows as the part ends), so a
run stopped late keeps what it measured, and in the end to stdout. Exit status: 0; 1 when a gpu
test failed or a case raised an error; 2 when there is no CUDA device or an argument is wrong
(`error: ...`). `--dry-run` runs the same code on the CPU with tiny sizes, one torch thread and a
110 s budget, lists the CUDA-only branches it could not exercise, and writes its table to the
temp folder unless `--out` says where.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # the budget counts from here: imports and CUDA start-up included

import argparse  # noqa: E402
import datetime  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = Path(__file__).resolve().parent


from bench.gpu_parts import check, detector, pytest_part, scoring, text, training  # noqa: E402
from bench.gpu_parts.common import ROOT, Device, Part, Skip, budget, load_bench, timed  # noqa: E402,F401
from bench.gpu_parts.pytest_part import gpu_test_files, junit_counts  # noqa: E402,F401
from bench.gpu_parts.scoring import SCORING_HEADS  # noqa: E402,F401
from bench.gpu_parts.sizes import DRY, REAL, Sizes  # noqa: E402,F401

markdown = budget.markdown

TOTAL_SECONDS = 450  # default budget: 8 minutes less half a minute for start-up and writing
DRY_SECONDS = 110  # --dry-run: under two minutes whatever the machine
CHECK_SECONDS = 30  # the self-check's fixed budget, taken first
DRY_CHECK_SECONDS = 15  # the same in the dry run
# Share of the budget per part; a part gets its share of the time left over the shares left,
# so time one part leaves unused goes to the later ones. The dry run's parts are all quick but
# the pytest run, whose start-up (imports) a busy machine slows most.
SHARES = {"tests": 0.18, "detector": 0.28, "text": 0.08, "scoring": 0.26, "training": 0.20}
DRY_SHARES = {"tests": 0.40, "detector": 0.15, "text": 0.10, "scoring": 0.15, "training": 0.20}
TITLES = {"tests": "gpu tests", "check": "self-check"}  # a part's name in the table, where it differs from its id

# Each part's function (part, device, sizes) and what its dry run cannot exercise, in order.
PARTS = {
    "check": check.check_part,
    "tests": pytest_part.tests_part,
    "detector": detector.detector_part,
    "text": text.text_part,
    "scoring": scoring.scoring_part,
    "training": training.training_part,
}
CUDA_ONLY = {
    "check": check.CUDA_ONLY,
    "tests": pytest_part.CUDA_ONLY,
    "detector": detector.CUDA_ONLY,
    "text": text.CUDA_ONLY,
    "scoring": scoring.CUDA_ONLY,
    "training": training.CUDA_ONLY,
}


# ---- the table -----------------------------------------------------------------------------


def device_slug(name: str) -> str:
    """File name of a device: "NVIDIA H200" -> "nvidia-h200"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def precision_line() -> str:
    """The per-op float32 precisions (torch >= 2.9 flags; "tf32" = TensorFloat-32). The legacy
    `allow_tf32` flags raise once cuDNN's conv and RNN settings differ, so they are not read."""
    import torch

    try:
        flags = (
            f"matmul {torch.backends.cuda.matmul.fp32_precision}, cuDNN conv "
            f"{torch.backends.cudnn.conv.fp32_precision}, cuDNN RNN {torch.backends.cudnn.rnn.fp32_precision}"
        )
    except (AttributeError, RuntimeError) as e:  # an older torch, or flags it refuses to report
        flags = f"unknown ({type(e).__name__})"
    return f"fp32 precision: {flags} (torch's defaults, as lighthead runs)"


def header_lines(dev: Device, args: argparse.Namespace) -> list[str]:
    import torch
    import transformers

    if dev.cuda:
        props = torch.cuda.get_device_properties(dev.device)
        device = (
            f"device: {props.name} ({dev.device}), {props.total_memory / 2**30:.1f} GiB, "
            f"compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs"
        )
    else:
        device = f"device: CPU, {torch.get_num_threads()} threads (--dry-run: tiny sizes, the figures mean nothing)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        commit = (
            subprocess.run(
                ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return [
        device,
        f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, cuDNN {cudnn or 'none'}, "
        f"transformers {transformers.__version__}, Python {sys.version.split()[0]}",
        precision_line(),
        f"code: {commit}; command: python -m bench.gpu {' '.join(args.argv)}".rstrip(),
        f"started: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"budget {args.budget:.0f} s; the parts' budgets and the time taken follow the table",
    ] + ([f"not exercised by this dry run (CUDA only): {'; '.join(not_exercised(args.parts))}"] if args.dry_run else [])


def not_exercised(parts: list[str]) -> list[str]:
    """The CUDA-only branches of `parts` that a dry run on the CPU cannot exercise."""
    return [f"{TITLES.get(p, p)}: {what}" for p in parts for what in CUDA_ONLY[p]]


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="every part on the CPU at tiny sizes (under two minutes)")
    ap.add_argument("--device", default="cuda", help="the CUDA device to measure (cuda, cuda:1, ...)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the table goes (default bench/results/<device>.md; --dry-run: the temp folder)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help=f"total seconds (default {TOTAL_SECONDS}; --dry-run {DRY_SECONDS}); parts share it",
    )
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS))
    args = ap.parse_args(argv)
    args.argv = argv
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.budget = args.budget or (DRY_SECONDS if args.dry_run else TOTAL_SECONDS)
    return args


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown or not args.parts:
        return fail(f"--parts {','.join(unknown)}: unknown part; known: {', '.join(PARTS)}")
    if args.budget <= 0:
        return fail(f"--budget {args.budget:g}: must be a positive number of seconds")
    import torch

    if args.dry_run:
        torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other on a busy machine
        dev, sizes, name = Device(torch.device("cpu")), DRY, "cpu dry run"
    else:
        if not torch.cuda.is_available():
            return fail(
                f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none'}) "
                "sees no GPU; run this on a machine with an NVIDIA GPU, or `python -m bench.gpu --dry-run`"
            )
        try:
            device = torch.device(args.device)
            if device.type != "cuda" or (device.index or 0) >= torch.cuda.device_count():
                raise ValueError
        except (RuntimeError, ValueError):
            return fail(
                f"--device {args.device}: not one of the {torch.cuda.device_count()} CUDA device(s) "
                "(cuda, cuda:0, cuda:1, ...)"
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)  # CUDA start-up, so that it counts before the first part
        dev, sizes, name = Device(device), REAL, torch.cuda.get_device_name(device)
    out = args.out or (
        Path(tempfile.gettempdir()) / "lighthead-bench-gpu-dry-run.md"
        if args.dry_run
        else BENCH / "results" / f"{device_slug(name)}.md"
    )
    print(f"bench/gpu.py on {name}: {', '.join(args.parts)} in {args.budget:.0f} s at most", flush=True)
    if args.dry_run:
        print(
            "not exercised by this dry run (CUDA only):\n" + "".join(f"  - {w}\n" for w in not_exercised(args.parts)),
            end="",
            flush=True,
        )

    budgets, errors = {}, 0
    shared = [p for p in args.parts if p != "check"]
    shares = [(DRY_SHARES if args.dry_run else SHARES)[p] for p in shared]
    out.parent.mkdir(parents=True, exist_ok=True)
    # The table is written as it grows: its head now, each part's rows when the part ends, so that
    # a run stopped late (a crash, the machine taken back) keeps what it measured.
    with out.open("w", encoding="utf-8") as table_file:
        table_file.write(budget.markdown_head(f"GPU benchmark: {name}", header_lines(dev, args)))
        table_file.flush()
        for part_id in args.parts:
            left = args.budget - (time.perf_counter() - START)
            if part_id == "check":
                seconds = max(0.0, min(DRY_CHECK_SECONDS if args.dry_run else CHECK_SECONDS, left))
            else:
                i = shared.index(part_id)
                seconds = max(0.0, left * shares[i] / sum(shares[i:]))
            title = TITLES.get(part_id, part_id)
            budgets[title] = seconds
            part = Part(title, seconds, peak=dev.peak, reset=dev.reset, log=True)
            print(f"[{title}] budget {seconds:.0f} s, starting {time.perf_counter() - START:.0f} s in", flush=True)
            try:
                PARTS[part_id](part, dev, sizes)
            except Exception as e:  # noqa: BLE001 - a broken part is a row; the other parts still run
                part.errors += 1
                part.reason = f"the part failed: {budget._message(e)}"
                print(f"[{title}] {part.reason}", flush=True)
            table_file.write(budget.markdown_rows(part.finish()))
            table_file.flush()
            errors += part.errors
            dev.clear()
        table_file.write(
            f"\ntime: {time.perf_counter() - START:.0f} s of a {args.budget:.0f} s budget ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in budgets.items())
            + ")\n"
        )
    table = out.read_text(encoding="utf-8")
    print()
    print(table, end="", flush=True)
    print(f"written to {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
