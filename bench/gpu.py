"""One command for a GPU: the gpu-marked tests, then the throughput and memory peak of each stage.

    make bench-gpu                                   # python bench/gpu.py: one CUDA device, under 8 minutes
    python bench/gpu.py --device cuda:1 --parts detector,text --budget 200
    python bench/gpu.py --dry-run --out /tmp/gpu.md  # every part on the CPU at tiny sizes (the tests run this)

Parts (`--parts` ids), in order; each gets a share of the total time budget (default 450 s, so
that start-up and writing fit in 8 minutes), and time a part leaves unused goes to the later ones:
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
   25,000 (bench/retrieval_eval.py's paper-size heads and random data), fp32 and bf16 products.
5. training: samples/s of each head's training step (bench/train.py's `bench_head` on its
   synthetic store, paper sizes, median over steps).

The memory peak of each figure is torch.cuda.max_memory_allocated, reset before it. A size
that would not fit in the free memory (torch.cuda.mem_get_info, scaled from the smallest size
measured) or in the time left (scaled likewise) is skipped, a case still running when its
part's time is spent is stopped, and the cases left are listed as skipped; the table says
which and why. The table (device, versions, one row per figure) goes to stdout and to
bench/results/<device>.md. Exit status: 0; 1 when a gpu test failed or a case raised an error;
2 when there is no CUDA device or an argument is wrong (`error: ...`). `--dry-run` runs the same
code on the CPU with tiny sizes, one torch thread and a 110 s budget, and writes its table to
the temp folder unless `--out` says where.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # the budget counts from here: imports and CUDA start-up included

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: `tests.conftest_helpers` must import


def load_bench(name: str) -> ModuleType:
    """Another bench script as a module (by path: the scripts are not a package)."""
    key = f"lighthead_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


budget = load_bench("budget")
Part, Skip, markdown = budget.Part, budget.Skip, budget.markdown

TOTAL_SECONDS = 450  # default budget: 8 minutes less half a minute for start-up and writing
DRY_SECONDS = 110  # --dry-run: under two minutes whatever the machine
# Share of the budget per part; a part gets its share of the time left over the shares left,
# so time one part leaves unused goes to the later ones. The dry run's parts are all quick but
# the pytest run, whose start-up (imports) a busy machine slows most.
SHARES = {"tests": 0.18, "detector": 0.28, "text": 0.08, "scoring": 0.26, "training": 0.20}
DRY_SHARES = {"tests": 0.40, "detector": 0.15, "text": 0.10, "scoring": 0.15, "training": 0.20}
TITLES = {"tests": "gpu tests"}  # a part's name in the table, where it differs from its id
SCORING_HEADS = ("casc", "scan", "mmca")


@dataclass(frozen=True)
class Sizes:
    """What each part measures; `REAL` on a GPU, `DRY` on a CPU (--dry-run)."""

    detector: str  # detector preset (extract/regions/config.py)
    detector_overrides: dict[str, Any]  # DetectorConfig fields changed from the preset
    image_hw: tuple[int, int]  # size of the generated JPEGs (about; they vary by 1/8)
    detector_images: int  # images per timed pass
    detector_batches: tuple[int, ...]  # batch sizes, smallest first (its memory scales the others)
    rounds: int  # timed passes per detector / text case after the warm-up (the best counts)
    boxes: tuple[int, ...]  # fixed K of the box selection
    loop_batch: int  # batch of the whole-loop row
    loop_workers: int  # DataLoader workers decoding JPEGs in the whole-loop row
    bert: dict[str, Any]  # BertConfig fields ({}: BERT-base)
    sentences: int  # sentences per text pass
    text_batches: tuple[int, ...]  # TextEncoder batch sizes
    forward: tuple[int, int]  # (B, L) of the forward-only row
    score_sizes: tuple[tuple[int, int], ...]  # images x captions, smallest first
    score_info: dict[str, int]  # data sizes the scoring heads are built for
    score_overrides: dict[str, dict[str, str]]  # per head config overrides
    train_store: dict[str, Any]  # build_retrieval_store arguments
    train_sentiment: dict[str, Any]  # add_sentiment arguments
    train_steps: int  # timed training steps per head
    train_batch: int | None  # batch size of every head (None: each head's own)
    train_heads: tuple[str, ...] = ()  # heads to train (empty: every registered head)
    train_extra: dict[str, str] = field(default_factory=dict)  # config overrides of every head


REAL = Sizes(
    detector="r101", detector_overrides={}, image_hw=(480, 640), detector_images=32,
    detector_batches=(1, 4, 8, 16), rounds=2, boxes=(36, 100), loop_batch=8, loop_workers=4,
    bert={}, sentences=8192, text_batches=(64, 512), forward=(256, 128),
    score_sizes=((1000, 5000), (5000, 25000)),
    score_info={"region_dim": 2048, "vocab_size": 10_000, "token_dim": 768, "num_labels": 500},
    score_overrides={}, train_store={"n_images": 1000, "splits": (980, 10, 10)}, train_sentiment={},
    train_steps=10, train_batch=None)

DRY = Sizes(
    detector="tiny", detector_overrides={"rpn_post_nms_top_n": 100}, image_hw=(96, 128), detector_images=2,
    detector_batches=(1, 2), rounds=1, boxes=(36, 100), loop_batch=2, loop_workers=0,
    bert={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    sentences=32, text_batches=(8, 16), forward=(4, 16),
    score_sizes=((6, 30), (12, 60)),
    score_info={"region_dim": 32, "vocab_size": 50, "token_dim": 16, "num_labels": 20},
    score_overrides={"casc": {"text": "text/x", "embed_size": "24", "label_hidden": "12"},
                     "scan": {"text": "text/x", "embed_size": "24"},
                     "mmca": {"embed_dim": "32", "heads": "4", "filters": "16"}},
    train_store={"n_images": 24, "splits": (16, 4, 4), "region_dim": 32, "num_regions": 8, "global_dim": 32,
                 "token_dim": 16},
    train_sentiment={"n_images": 24, "token_dim": 16, "region_dim": 32},
    train_steps=1, train_batch=4, train_heads=("casc", "mmca", "itin"),  # GRU, Transformer, sentiment task
    train_extra={"embed_size": "16", "embed_dim": "24", "label_hidden": "16", "num_labels": "20", "d": "16",
                 "k": "16", "heads": "2", "ff": "32", "word_dim": "16", "gru_layers": "1", "gen_width": "4",
                 "disc_width": "4", "filters": "8"})


# ---- the device ---------------------------------------------------------------------------

class Device:
    """The measured device: synchronising, memory peaks and free memory (CPU: none / RAM)."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        """Free cached blocks and restart the peak count (before each case)."""
        if self.cuda:
            self.sync()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> float | None:
        """MiB: the most this process held at once since `reset` (None on a CPU)."""
        return self.torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else None

    def allocated(self) -> int:
        return self.torch.cuda.memory_allocated(self.device) if self.cuda else 0

    def free(self) -> float:
        """Bytes free for new tensors: the device's free memory (CPU: MemAvailable, else unbounded)."""
        if self.cuda:
            self.torch.cuda.empty_cache()
            return float(self.torch.cuda.mem_get_info(self.device)[0])
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
        except OSError:
            pass
        return math.inf

    def fits(self, need: float, what: str) -> None:
        """Skip (raise) when `need` bytes (with a 20% margin) exceed the free memory."""
        free = self.free()
        if need * 1.2 > free:
            raise Skip(f"{what} needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")

    def clear(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


def timed(fn, dev: Device) -> float:
    """Seconds of one call of fn, the device synchronised on both ends."""
    dev.sync()
    t0 = time.perf_counter()
    fn()
    dev.sync()
    return time.perf_counter() - t0


# ---- 1. the gpu-marked tests ---------------------------------------------------------------

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
    failed = [f"{c.get('classname', '')}.{c.get('name', '')}" for c in root.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return counts, failed


def tests_part(part: Part, dev: Device, sizes: Sizes) -> None:
    files = gpu_test_files(ROOT / "tests")
    case = f"pytest -m gpu ({len(files)} files)"

    def run() -> tuple[float, str, str]:
        if not files:
            raise Skip("no test file carries the gpu mark")
        with tempfile.TemporaryDirectory(prefix="lighthead-gpu-tests-") as tmp:
            xml = Path(tmp) / "junit.xml"
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                   f"--junitxml={xml}", *files]
            t0 = time.perf_counter()
            # own session: at the time limit the whole group (dask workers included) is killed
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
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
        note = (f"{counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped of "
                f"{counts['tests']} in {seconds:.0f} s")
        if failed:
            note += "; failed: " + ", ".join(failed[:4]) + (" ..." if len(failed) > 4 else "")
        part.errors += bad
        return passed, "tests passed", note

    part.run(case, run).peak_mib = None  # the tests ran in another process


# ---- 2. the region detector ----------------------------------------------------------------

def detector_part(part: Part, dev: Device, sizes: Sizes) -> None:
    import torch

    from lighthead.extract.regions.batching import batches, bucketed
    from lighthead.extract.regions.config import DetectorConfig, SelectionConfig
    from lighthead.extract.regions.model import BottomUpDetector, init_random

    extract_bench = load_bench("extract")
    cfg = DetectorConfig.from_name(sizes.detector, **sizes.detector_overrides)
    # bf16 autocast where the GPU has it (Ampere and later), else the fp16 the runner falls back to
    low = "fp16" if dev.cuda and not torch.cuda.is_bf16_supported() else "bf16"
    autocast = {"fp32": None, low: torch.float16 if low == "fp16" else torch.bfloat16}
    cases = [(p, k, b) for p in autocast for k in sizes.boxes for b in sizes.detector_batches]

    def name(p: str, k: int, b: int) -> str:
        return f"{p}, {k} boxes, batch {b}"

    loop_case = (f"whole extract loop: JPEGs decoded by {sizes.loop_workers} workers, batch {sizes.loop_batch}, "
                 f"{min(sizes.boxes)} boxes")
    part.plan([name(*c) for c in cases] + [loop_case])
    scale = f"{cfg.min_size}/{cfg.max_size}, {cfg.rpn_post_nms_top_n} ROIs"

    with tempfile.TemporaryDirectory(prefix="lighthead-gpu-bench-") as tmp:
        def setup():
            items = extract_bench.make_images(Path(tmp), sizes.detector_images, *sizes.image_hw)
            model = init_random(BottomUpDetector(cfg), seed=0).to(dev.device)
            model = model.optimize_for_inference(channels_last=dev.cuda)
            # decoded and resized once; each batch size regroups the same single images
            singles = list(batches(items, cfg, 1, workers=sizes.loop_workers))
            return items, model, singles

        ready = part.prepare(f"{cfg.name} ({scale}), {sizes.detector_images} images", setup)
        if ready is None:
            return
        items, model, singles = ready
        base = dev.allocated()  # the weights
        per_image: dict[str, float] = {}  # precision -> bytes per image in a batch (from the smallest batch)

        def one_pass(prepared: list, selection, dtype) -> int:
            n = 0
            for batch in prepared:
                images = batch.images.to(dev.device, non_blocking=True)
                with torch.autocast(dev.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    outputs = model(images, batch.image_sizes, batch.scales)
                for region in model.regions(outputs, selection):  # selection in float32, as the runner runs it
                    region["features"].cpu()
                n += len(batch.ids)
            return n

        for p, k, b in cases:
            def case(p=p, k=k, b=b) -> tuple[float, str, str]:
                if p in per_image:
                    dev.fits(per_image[p] * b, f"batch {b}")
                prepared = list(bucketed(iter(singles), b, cfg.size_divisibility))
                if dev.cuda:
                    prepared = [batch.pin_memory() for batch in prepared]
                selection = SelectionConfig(mode="fixed", num_boxes=k)
                warm = timed(lambda: one_pass(prepared, selection, autocast[p]), dev)  # kernels, allocator
                if b == sizes.detector_batches[0] and dev.cuda:
                    per_image.setdefault(p, max(0.0, torch.cuda.max_memory_allocated(dev.device) - base) / b)
                best = min(timed(lambda: one_pass(prepared, selection, autocast[p]), dev) for _ in range(sizes.rounds))
                return (len(items) / best, "images/s", f"{scale}; best of {sizes.rounds} passes over {len(items)} "
                                                       f"decoded images after a warm-up pass ({warm:.1f} s)")

            part.run(name(p, k, b), case, on_error=dev.clear)

        def loop() -> tuple[float, str, str]:
            selection = SelectionConfig(mode="fixed", num_boxes=min(sizes.boxes))
            extract_bench.time_pass(model, items, selection, sizes.loop_batch, sizes.loop_workers)  # warm-up
            rate = extract_bench.time_pass(model, items, selection, sizes.loop_batch, sizes.loop_workers)
            from lighthead.extract.regions.runner import autocast_dtype

            amp = autocast_dtype(dev.device)
            return rate, "images/s", (f"{scale}; bench/extract.py's pass: decode, detect "
                                      f"({'fp32' if amp is None else str(amp).split('.')[-1]}), select, store items")

        part.run(loop_case, loop, on_error=dev.clear)
        del model, singles
        dev.clear()


# ---- 3. text ------------------------------------------------------------------------------

def text_part(part: Part, dev: Device, sizes: Sizes) -> None:
    import torch

    from lighthead.extract.text import TextEncoder, TextEncoderConfig, resolve_model

    text_bench = load_bench("text")
    precisions = ("fp32", "fp16")
    b_fwd, l_fwd = sizes.forward
    encode_cases = [(p, b) for p in precisions for b in sizes.text_batches]
    part.plan([f"encode, {p}, batch {b}" for p, b in encode_cases] +
              [f"forward only, {p}, {b_fwd} x {l_fwd} tokens" for p in precisions])

    with tempfile.TemporaryDirectory(prefix="lighthead-gpu-bench-") as tmp:
        def setup():
            from transformers import BertConfig

            folder = Path(tmp) / "bert"
            BertConfig(**sizes.bert).save_pretrained(folder)
            vocab = resolve_model("all-minilm-l6-v2")  # BERT's uncased WordPiece vocabulary, 30,522 entries
            for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
                if (vocab / f).is_file():
                    shutil.copy(vocab / f, folder / f)
            encoder = TextEncoder(TextEncoderConfig(model=str(folder)), device=str(dev.device), random_weights=True)
            texts = text_bench.sentences(sizes.sentences)
            tokens = sum(len(t["input_ids"]) for t in encoder.tokenize(texts))
            return encoder, texts, tokens

        mc = sizes.bert
        label = (f"BERT {mc.get('num_hidden_layers', 12)} layers, width {mc.get('hidden_size', 768)}, "
                 "random weights")
        ready = part.prepare(label, setup)
        if ready is None:
            return
        encoder, texts, tokens = ready
        cpu_note = "" if dev.cuda else " (a CPU runs fp16 rows in fp32: TextEncoder autocasts on CUDA only)"

        for p, b in encode_cases:
            def case(p=p, b=b) -> tuple[float, str, str]:
                encoder.config.batch_size, encoder.config.fp16 = b, p == "fp16"
                text_bench.rate(encoder, texts[: 4 * b], sort=True)  # warm-up
                rate = text_bench.rate(encoder, texts, sort=True)  # sentences/s
                return (rate * tokens / len(texts), "tokens/s",
                        f"{label}; {len(texts):,} sentences of {tokens / len(texts):.1f} tokens on average, "
                        f"length-sorted batches; tokenising and copying out included{cpu_note}")

            part.run(f"encode, {p}, batch {b}", case, on_error=dev.clear)

        model = encoder.model
        width = model.config.hidden_size
        for p in precisions:
            def forward(p=p) -> tuple[float, str, str]:
                # one layer's activations at a time: the FF block (4 widths) and the attention maps
                dev.fits(b_fwd * l_fwd * 4 * (8 * width + 2 * model.config.num_attention_heads * l_fwd), "the batch")
                ids = torch.randint(1000, model.config.vocab_size, (b_fwd, l_fwd), device=dev.device)
                mask = torch.ones_like(ids)

                @torch.inference_mode()
                def run():
                    with torch.autocast(dev.device.type, dtype=torch.float16, enabled=p == "fp16" and dev.cuda):
                        model(input_ids=ids, attention_mask=mask)

                run()  # warm-up
                best = min(timed(run, dev) for _ in range(sizes.rounds))
                return b_fwd * l_fwd / best, "tokens/s", f"{label}; best of {sizes.rounds}{cpu_note}"

            part.run(f"forward only, {p}, {b_fwd} x {l_fwd} tokens", forward, on_error=dev.clear)
        del encoder, model
        dev.clear()


# ---- 4. cross-attention scoring ------------------------------------------------------------

def scoring_part(part: Part, dev: Device, sizes: Sizes) -> None:
    import torch

    from lighthead.heads.build import build_head, head_class
    from lighthead.pipelines.scoring import PRECISIONS, cat_padded, encode, score_blocks

    rev = load_bench("retrieval_eval")
    heads = []
    for name in SCORING_HEADS:
        try:
            head_class(name)
            heads.append(name)
        except KeyError:
            part.skip(f"{name}", "head not registered")
    case_names = {(h, s, p): f"{h}, {s[0]:,} x {s[1]:,}, {p}" for h in heads for s in sizes.score_sizes for p in PRECISIONS}
    part.plan(list(case_names.values()))
    info = sizes.score_info

    for i, name in enumerate(heads):
        deadline = time.perf_counter() + part.left() / (len(heads) - i)  # this head's share of the time left
        # the head, the current size's encodings and set-up seconds, and the last size's costs
        state: dict[str, Any] = {}

        def setup(n_img: int, n_txt: int) -> None:
            torch.manual_seed(0)
            if "head" not in state:
                state["head"] = build_head(name, info, sizes.score_overrides.get(name, {})).to(dev.device).eval()
            head = state["head"]
            images, texts = rev.random_data(n_img, n_txt, info["num_labels"], info["token_dim"])
            if info["region_dim"] != images["regions"].shape[-1]:
                images["regions"] = images["regions"][..., : info["region_dim"]].contiguous()
            with torch.no_grad():
                img = cat_padded(encode(head.encode_image, rev.batches(images, 256), dev.device))
                chunks = encode(head.encode_text, rev.batches(texts, 256), dev.device)
            state["enc"] = (img, chunks)

        def first_case(n_img: int, n_txt: int) -> None:
            """Before the first precision of a size: skip it when the last size scales past the
            time or memory left, else make the data and encode it (not timed)."""
            state.pop("enc", None)
            dev.clear()
            last = state.get("last")  # (pairs, set-up s, scoring s per run, peak bytes) of the smaller size
            if last is not None:
                grow = n_img * n_txt / last[0]  # pairs; the encodings grow as its square root
                predicted = last[1] * math.sqrt(grow) + last[2] * grow
                left = deadline - time.perf_counter()
                if predicted > left:
                    raise Skip(f"would take about {predicted:.0f} s, {left:.0f} s of this head's share left")
                if last[3] is not None:
                    dev.fits(last[3] * math.sqrt(grow), "this size")
            t0 = time.perf_counter()
            setup(n_img, n_txt)
            dev.sync()
            state["setup"], state["scored"] = time.perf_counter() - t0, 0.0

        for n_img, n_txt in sizes.score_sizes:
            for p in PRECISIONS:
                def case(n_img=n_img, n_txt=n_txt, p=p) -> tuple[float, str, str]:
                    if p == PRECISIONS[0]:
                        first_case(n_img, n_txt)
                    img, chunks = state["enc"]
                    head = state["head"]
                    with torch.no_grad():
                        t = timed(lambda: score_blocks(head, img, chunks, None, p), dev)
                        state["scored"] += t
                        rounds = 1
                        if time.perf_counter() + t < deadline - 1:  # a second run when there is time for it
                            t, rounds = min(t, timed(lambda: score_blocks(head, img, chunks, None, p), dev)), 2
                    return (n_img * n_txt / t, "pairs/s", f"best of {rounds}; encoding both sides "
                                                          f"({state['setup']:.1f} s with the random data) not counted")

                key = case_names[(name, (n_img, n_txt), p)]
                if p != PRECISIONS[0] and "enc" not in state:
                    part.skip(key, f"as {PRECISIONS[0]}: no data for this size")
                    continue
                part.run(key, case, limit=max(0.0, deadline - time.perf_counter()), on_error=dev.clear)
            if "enc" in state:
                peaks = [r.peak_mib for r in part.rows if r.case.startswith(f"{name}, {n_img:,} x") and r.peak_mib]
                peak = max(peaks) * 2**20 if peaks else None
                state["last"] = (n_img * n_txt, state["setup"], state["scored"], peak)
        state.clear()
        dev.clear()


# ---- 5. head training ----------------------------------------------------------------------

def training_part(part: Part, dev: Device, sizes: Sizes) -> None:
    from lighthead.heads.base import HEADS

    train_bench = load_bench("train")
    names = list(sizes.train_heads or HEADS.names())
    part.plan(names)
    with tempfile.TemporaryDirectory(prefix="lighthead-gpu-bench-") as tmp:
        def setup():
            from tests.conftest_helpers import build_retrieval_store

            store = build_retrieval_store(Path(tmp) / "store", **sizes.train_store)
            return train_bench.add_sentiment(store, **sizes.train_sentiment)

        store = part.prepare(f"synthetic store of {sizes.train_store['n_images']} images", setup)
        if store is None:
            return
        for i, name in enumerate(names):
            def case(name=name) -> tuple[float, str, str]:
                res = train_bench.bench_head(name, store, dev.device, False, sizes.train_batch, sizes.train_steps,
                                             sizes.train_extra)
                batch = "each head's batch size" if sizes.train_batch is None else f"batch {sizes.train_batch}"
                return (res["step"], "samples/s", f"forward + backward + step, median of up to "
                                                  f"{sizes.train_steps} steps, {batch}; loader {res['loader']:,.0f} samples/s")

            part.run(name, case, limit=part.left() / (len(names) - i), on_error=dev.clear)
            dev.clear()


PARTS = {"tests": tests_part, "detector": detector_part, "text": text_part, "scoring": scoring_part,
         "training": training_part}


# ---- the table -----------------------------------------------------------------------------

def device_slug(name: str) -> str:
    """File name of a device: "NVIDIA H200" -> "nvidia-h200"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def header_lines(dev: Device, args: argparse.Namespace, budgets: dict[str, float], elapsed: float) -> list[str]:
    import torch
    import transformers

    if dev.cuda:
        props = torch.cuda.get_device_properties(dev.device)
        device = (f"device: {props.name} ({dev.device}), {props.total_memory / 2**30:.1f} GiB, "
                  f"compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs")
    else:
        device = f"device: CPU, {torch.get_num_threads()} threads (--dry-run: tiny sizes, the figures mean nothing)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return [
        device,
        f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, cuDNN {cudnn or 'none'}, "
        f"transformers {transformers.__version__}, Python {sys.version.split()[0]}",
        f"TF32: matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN convolutions "
        f"{torch.backends.cudnn.allow_tf32} (torch's defaults, as lighthead runs)",
        f"code: {commit}; command: python bench/gpu.py {' '.join(args.argv)}".rstrip(),
        f"time: {elapsed:.0f} s of a {args.budget:.0f} s budget ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in budgets.items()) + "), "
        + datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    ]


# ---- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="every part on the CPU at tiny sizes (under two minutes)")
    ap.add_argument("--device", default="cuda", help="the CUDA device to measure (cuda, cuda:1, ...)")
    ap.add_argument("--out", type=Path, default=None,
                    help="where the table goes (default bench/results/<device>.md; --dry-run: the temp folder)")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"total seconds (default {TOTAL_SECONDS}; --dry-run {DRY_SECONDS}); parts share it")
    ap.add_argument("--parts", default=",".join(SHARES), help="comma-separated subset of: " + ", ".join(SHARES))
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
    unknown = [p for p in args.parts if p not in SHARES]
    if unknown or not args.parts:
        return fail(f"--parts {','.join(unknown)}: unknown part; known: {', '.join(SHARES)}")
    if args.budget <= 0:
        return fail(f"--budget {args.budget:g}: must be a positive number of seconds")
    import torch

    if args.dry_run:
        torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other on a busy machine
        dev, sizes, name = Device(torch.device("cpu")), DRY, "cpu dry run"
    else:
        if not torch.cuda.is_available():
            return fail(f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none'}) "
                        "sees no GPU; run this on a machine with an NVIDIA GPU, or `python bench/gpu.py --dry-run`")
        try:
            device = torch.device(args.device)
            if device.type != "cuda" or (device.index or 0) >= torch.cuda.device_count():
                raise ValueError
        except (RuntimeError, ValueError):
            return fail(f"--device {args.device}: not one of the {torch.cuda.device_count()} CUDA device(s) "
                        "(cuda, cuda:0, cuda:1, ...)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)  # CUDA start-up, so that it counts before the first part
        dev, sizes, name = Device(device), REAL, torch.cuda.get_device_name(device)
    out = args.out or (Path(tempfile.gettempdir()) / "lighthead-bench-gpu-dry-run.md" if args.dry_run
                       else BENCH / "results" / f"{device_slug(name)}.md")
    print(f"bench/gpu.py on {name}: {', '.join(args.parts)} in {args.budget:.0f} s at most", flush=True)

    rows, budgets, errors = [], {}, 0
    shares = [(DRY_SHARES if args.dry_run else SHARES)[p] for p in args.parts]
    for i, part_id in enumerate(args.parts):
        left = args.budget - (time.perf_counter() - START)
        seconds = max(0.0, left * shares[i] / sum(shares[i:]))
        title = TITLES.get(part_id, part_id)
        budgets[title] = seconds
        part = Part(title, seconds, peak=dev.peak, reset=dev.reset, log=True)
        print(f"[{title}] budget {seconds:.0f} s, starting {time.perf_counter() - START:.0f} s in", flush=True)
        PARTS[part_id](part, dev, sizes)
        rows += part.finish()
        errors += part.errors
        dev.clear()

    table = markdown(f"GPU benchmark: {name}", header_lines(dev, args, budgets, time.perf_counter() - START), rows)
    print()
    print(table, end="", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    print(f"written to {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
