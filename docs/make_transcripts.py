"""Run the commands the documentation shows and keep what they printed in docs/transcripts/.

Every transcript on a page is one of these files, embedded with a snippet line
(`--8<-- "transcripts/NAME.txt"`), so a page never shows output that was not produced by the
command above it. The first line of each file says when, on which machine and at which commit
it was made.

    python docs/make_transcripts.py                 # every transcript (tens of minutes on 2 cores)
    python docs/make_transcripts.py train-casc ...  # some of them
    python docs/make_transcripts.py --list

Commands run in a scratch folder (`--workdir`, default a new temporary one) with this checkout
first on PYTHONPATH; `lighthead ...` runs the console script's entry point and `python` this
interpreter. Output is stdout and stderr together, as a terminal-less log shows it (plain
progress lines). A command whose exit status is not the expected one stops the script and
writes nothing. `tests/docs/test_transcripts.py` checks that each file's commands are the ones
listed here and that every transcript a page shows is one of these files.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
OUT = DOCS / "transcripts"
DEMO = "demo-out"  # the demo folder inside the working folder
CODE = ("lighthead", "store", "extract", "heads", "pipelines", "bench", "pyproject.toml")  # what the commands run
HEADS = ("vsepp", "scan", "casc", "mmca", "mfsr", "itin", "itm", "text-only")
# Real files beside the checkout (../shared, or shared/ inside it), as tests/realdata finds them.
REALDATA = next(
    (p for p in (ROOT.parent / "shared" / "realdata", ROOT / "shared" / "realdata") if p.is_dir()),
    ROOT.parent / "shared" / "realdata",
)
COCO_IMAGE = "COCO_train2014_000000573195"  # a cat in a car window: the README's picture


@dataclass
class Transcript:
    """Commands whose output one transcript file keeps."""

    name: str  # file name without .txt
    commands: list[str]  # shown as `$ command`, run in the working folder
    exit_codes: list[int] = field(default_factory=list)  # expected status per command (missing: 0)
    needs_demo: bool = True  # the commands read demo-out/ (built quietly first when absent)
    fresh: list[str] = field(default_factory=list)  # removed first, so the output is a first run's
    keep: dict[str, str] = field(default_factory=dict)  # working-folder file -> docs/ path to copy it to
    links: dict[str, Path] = field(default_factory=dict)  # working-folder name -> folder it links to (read only)
    palette: bool = False  # kept PNGs saved with 256 colours: a photo's PNG stays small enough for the README


def _head(head: str) -> Transcript:
    examples = " --examples 4" if head in ("itin", "itm") else ""
    keep = {f"runs/{head}/examples-test.png": f"img/{head}-examples.png"} if examples else {}
    return Transcript(
        f"train-{head}",
        [
            f"lighthead train heads {head} --store {DEMO}/store --out runs/{head}",
            f"lighthead evaluate runs/{head}{examples}",
        ],
        fresh=[f"runs/{head}"],
        keep=keep,
    )


TRANSCRIPTS: list[Transcript] = [
    Transcript("demo", [f"lighthead demo --out {DEMO}"], needs_demo=False, fresh=[DEMO]),
    Transcript("store", [f"lighthead store info {DEMO}/store", f"lighthead store verify {DEMO}/store"]),
    Transcript(
        "show",
        [f"lighthead show {DEMO}/store demo00000 --out regions.png --features regions/butd-r101-vg-given"],
        fresh=["regions.png"],
        keep={"regions.png": "img/demo-regions.png"},
    ),
    Transcript(
        "precomp",
        [
            f"lighthead store export precomp {DEMO}/store precomp",
            "lighthead store import precomp precomp stores/precomp --dataset demo",
            "lighthead store info stores/precomp",
        ],
        fresh=["precomp", "stores/precomp"],
    ),
    Transcript(
        "show-coco",
        [
            "lighthead store import tsv coco10/train2014_obj36.tsv stores/coco10",
            f"lighthead show stores/coco10 {COCO_IMAGE} --image coco10/images/{COCO_IMAGE}.jpg "
            "--out coco-regions.png --top 10",
        ],
        needs_demo=False,
        fresh=["stores/coco10", "coco-regions.png"],
        links={"coco10": REALDATA / "pba-coco10"},
        keep={"coco-regions.png": "img/coco-regions.png"},
        palette=True,
    ),
    Transcript(
        "errors",
        [
            "lighthead extract --dataset demo --store st --bach-size 4",
            f"lighthead train heads casc --store {DEMO}/store --out runs/x --set nonsense=1",
        ],
        exit_codes=[2, 1],
        needs_demo=True,
    ),
    *[_head(head) for head in HEADS],
    Transcript(
        "sweep",
        [
            f"lighthead sweep vsepp --store {DEMO}/store --out sweeps/vsepp-lr --grid lr=1e-3,2e-3,5e-3 "
            "--epochs 2 --workers 2"
        ],
        fresh=["sweeps/vsepp-lr"],
    ),
    Transcript("bench-store", ["python -m bench.store --quick"], needs_demo=False),
    Transcript("bench-text", ["python -m bench.text --quick"], needs_demo=False),
    Transcript("bench-extract", ["python -m bench.extract --quick"], needs_demo=False),
    Transcript("bench-retrieval-eval", ["python -m bench.retrieval_eval --quick"], needs_demo=False),
    Transcript("bench-train", ["python -m bench.train --quick"], needs_demo=False),
    Transcript("bench-sweep", ["python -m bench.sweep --quick"], needs_demo=False),
]
BY_NAME = {t.name: t for t in TRANSCRIPTS}


# The `lighthead` console script's entry point, named `lighthead` in usage lines and errors as it is there.
LIGHTHEAD = "import sys; sys.argv[0] = 'lighthead'; from lighthead.pipelines.cli import main; main()"


def argv_of(command: str) -> list[str]:
    """What runs for a shown command: this checkout's lighthead and this interpreter."""
    argv = shlex.split(command)
    if argv[0] == "lighthead":
        return [sys.executable, "-c", LIGHTHEAD, *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise ValueError(f"{command!r}: transcripts run lighthead or python only")


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "LIGHTHEAD_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as they were written
    return env


def machine() -> str:
    """One line about this machine: cores, CPU, GPU, load, versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), {gpu}{load}; {platform.system()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def commit() -> str:
    """The code's commit, marked `+changes` when the code that runs (the packages, bench/) differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--", *CODE) else "")


def run(t: Transcript, workdir: Path) -> str:
    if t.needs_demo and not (workdir / DEMO / "store" / "meta" / "records.json").exists():
        print(f"{t.name}: building {DEMO}/ first", file=sys.stderr)
        subprocess.run(
            argv_of(f"lighthead demo --out {DEMO} --stages data,extract"),
            cwd=workdir,
            env=environment(),
            check=True,
            capture_output=True,
        )
    for path in t.fresh:
        target = workdir / path
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    for name, folder in t.links.items():
        if not folder.is_dir():
            raise SystemExit(f"error: {t.name}: {folder} is absent (real files beside the checkout)")
        (workdir / name).unlink(missing_ok=True)
        (workdir / name).symlink_to(folder, target_is_directory=True)
    header = f"# made {datetime.date.today().isoformat()} by docs/make_transcripts.py on {machine()}; code {commit()}"
    lines = [header]
    for i, command in enumerate(t.commands):
        print(f"{t.name}: $ {command}", file=sys.stderr)
        proc = subprocess.run(
            argv_of(command),
            cwd=workdir,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=3600,
        )
        want = t.exit_codes[i] if i < len(t.exit_codes) else 0
        if proc.returncode != want:
            sys.stderr.write(proc.stdout)
            raise SystemExit(f"error: {t.name}: `{command}` exited {proc.returncode}, expected {want}")
        output = proc.stdout.replace(f"{workdir}{os.sep}", "").replace(str(workdir), ".")
        lines += [f"$ {command}"] + [line.rstrip() for line in output.rstrip("\n").splitlines()]
    for src, dest in t.keep.items():
        if t.palette:
            from PIL import Image

            with Image.open(workdir / src) as image:
                image.convert("RGB").quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(DOCS / dest, optimize=True)
        else:
            shutil.copyfile(workdir / src, DOCS / dest)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="transcripts to make (default: all)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (kept; default: a temporary one)")
    parser.add_argument("--list", action="store_true", help="list the transcripts and their commands")
    args = parser.parse_args(argv)
    if args.list:
        for t in TRANSCRIPTS:
            print(f"{t.name}: " + " && ".join(t.commands))
        return 0
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        print(f"error: unknown transcript {', '.join(unknown)}; known: {', '.join(BY_NAME)}", file=sys.stderr)
        return 2
    chosen = [BY_NAME[n] for n in args.names] if args.names else TRANSCRIPTS
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lighthead-transcripts-"))
    workdir.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(exist_ok=True)
    for t in chosen:
        (OUT / f"{t.name}.txt").write_text(run(t, workdir.resolve()), encoding="utf-8")
        print(f"wrote docs/transcripts/{t.name}.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
