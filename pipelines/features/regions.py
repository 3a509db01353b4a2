"""Region feature jobs (bottom-up-attention detector), one item per `record.image_id`.

`regions36` -> regions/butd-r101-vg-36 and `regions100` -> regions/butd-r101-vg-100 (the K
most confident ROIs), `adaptive` -> regions/butd-r101-vg-adaptive (10 to 100 ROIs above 0.2
confidence), `given-boxes` -> regions/butd-r101-vg-given (features pooled for the boxes in
`record.extra["boxes"]`, [x1, y1, x2, y2] pixels, or in another region set of the store with
`-o given-boxes.boxes_from=regions/...`). Fields: features (K, D) float16 by
default, boxes (K, 4) float32 in original pixels, object_ids/object_scores/attr_ids/
attr_scores (K,), num_boxes, image_w, image_h; K is variable (flat + offsets) for adaptive
and given boxes.

Weights: `--weights PATH` (.pkl of py-bottom-up-attention, .pth of bottom-up-attention.pytorch,
or our .safetensors export), else $LIGHTHEAD_DETECTOR_WEIGHTS, else DEFAULT_WEIGHTS; or
`--random-weights`. Settings (`--job-option KEY=VALUE`, or `<job>.KEY=VALUE` for one job):
selection (generate_tsv, the default, or d2-maxnms: py-bottom-up-attention's LXMERT rule, for
the fixed-K jobs only; it writes `<feature set>-d2-maxnms`, so both can sit in one store; the bare
key applies to regions36 and regions100 and leaves adaptive and given-boxes on their own rule),
detector (preset: r101, r101-demo, slim, tiny), min_size / max_size (test scale), rois
(proposals kept after the RPN NMS), seed (random weights), channels_last, shard_items, threads
(CPU threads of the detector; 1 avoids thread stalls on a busy or small CPU),
backend (torch, the default, or detectron2 when it is installed; py-bottom-up-attention .pkl only),
precision (auto: bf16 autocast on CUDA, fp16 on a GPU without bf16, fp32 on a CPU; fp32, bf16,
fp16; recorded in the set's attrs, and a set holding another precision is refused).
`--workers N` splits the images over N local processes (GPUs when there are several), each
writing its own shards into the same feature set. On a dask cluster (`options.cluster`, the
sweep's ClusterOptions: `extract --slurm/--pbs --workers N` starts N batch jobs through
dask-jobqueue; or `--scheduler ADDRESS`, an existing one) each worker gets one part as one task
(and one GPU with --device cuda); a part skips the ids the set already holds, so a rerun, or the
retry of a part whose job died, resumes by ids.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from lighthead.pipelines.features.base import FeatureJob, RunSummary, register
from lighthead.pipelines.features.options import (
    PRECISION_OPTION,
    ExtractOptions,
    JobOption,
    job_option,
    job_precision,
    precision_attrs,
    progress_bar,
    random_weights,
)

DEFAULT_WEIGHTS = Path("~/.cache/lighthead/faster_rcnn_from_caffe_attr.pkl").expanduser()
WEIGHTS_HELP = (
    "get the bottom-up-attention Visual Genome detector: faster_rcnn_from_caffe_attr.pkl from "
    "py-bottom-up-attention (https://nlp1.cs.unc.edu/models/faster_rcnn_from_caffe_attr.pkl) or "
    "bua-caffe-frcn-r101_with_attributes.pth from bottom-up-attention.pytorch (its README, 'Pre-trained "
    "models'), then pass --weights PATH or put it at {default} (--random-weights runs untrained, for tests)"
)
BOX_RULES = {  # selection mode -> what the stored boxes are, recorded in the feature set's attrs
    "fixed": (
        "boxes are the RPN proposals (ROIs) in original pixels; confidence = best class score among "
        "the classes where the ROI survives per-class NMS (generate_tsv.py)"
    ),
    "given": "boxes are the given boxes, kept as given (not clipped: ROI pooling reads zeros outside the image)",
    "d2-maxnms": (
        "boxes are each kept ROI's box regressed for its best class, in original pixels, clipped to the "
        "image; one class-agnostic NMS over them by that class's score, threshold 0.3 raised by 0.1 "
        "until K survive, the K best (py-bottom-up-attention's detectron2_mscoco_proposal_maxnms.py)"
    ),
}
BOX_RULES["adaptive"] = BOX_RULES["fixed"]

JOBS = {  # job -> (feature set, selection mode, K)
    "regions36": ("regions/butd-r101-vg-36", "fixed", 36),
    "regions100": ("regions/butd-r101-vg-100", "fixed", 100),
    "adaptive": ("regions/butd-r101-vg-adaptive", "adaptive", 100),
    "given-boxes": ("regions/butd-r101-vg-given", "given", 0),
}


def selection_for(job: str, options: ExtractOptions | None = None) -> Any:
    """The job's SelectionConfig: its own mode and K, or the rule the `selection` option names.

    `<job>.selection` applies to that job (an error where the rule does not fit it); the bare
    `selection` only to the fixed-K jobs, so `-o selection=d2-maxnms` beside adaptive or given
    boxes changes regions36/regions100 and leaves those on their own rule.
    """
    from lighthead.extract.regions.config import SelectionConfig

    _, mode, k = JOBS[job]
    opts = (options.job_options or {}) if options is not None else {}
    rule = opts.get(f"{job}.selection", opts.get("selection") if mode == "fixed" else None)
    return SelectionConfig.for_job(mode, k, None if rule is None else str(rule))


def feature_set_name(job: str, selection: Any) -> str:
    """Where the job writes: its feature set, with `-d2-maxnms` for that rule (so a store can hold
    both, and a rerun with the other rule never finds the first one's set "already done")."""
    name = JOBS[job][0]
    return f"{name}-d2-maxnms" if selection.mode == "d2-maxnms" else name


def weights_path(job: str, options: ExtractOptions) -> Path:
    path = job_option(options, job, "weights") or options.weights or os.environ.get("LIGHTHEAD_DETECTOR_WEIGHTS")
    return Path(path).expanduser() if path else DEFAULT_WEIGHTS


def detector_config(job: str, options: ExtractOptions) -> Any:
    """The network preset plus test-time overrides from the job options."""
    from lighthead.extract.regions.config import DetectorConfig

    overrides: dict[str, Any] = {}
    for key, field_name, cast in (
        ("min_size", "min_size", int),
        ("max_size", "max_size", int),
        ("rois", "rpn_post_nms_top_n", int),
        ("roi_chunk", "roi_chunk", int),
    ):
        value = job_option(options, job, key)
        if value is not None:
            overrides[field_name] = cast(value)
    cfg = DetectorConfig.from_name(str(job_option(options, job, "detector", "r101")), **overrides)
    if cfg.rpn_pre_nms_top_n < cfg.rpn_post_nms_top_n:
        cfg = replace(cfg, rpn_pre_nms_top_n=cfg.rpn_post_nms_top_n)
    return cfg


def build_model(job: str, options: ExtractOptions, device: str) -> tuple[Any, dict[str, Any]]:
    """The detector on `device` (checkpoint or random) and the store attrs describing it."""
    from lighthead.extract.regions.checkpoints import load_checkpoint
    from lighthead.extract.regions.model import BottomUpDetector, init_random

    cfg = detector_config(job, options)
    seed = int(job_option(options, job, "seed", 0))
    if random_weights(options, job):
        model = init_random(BottomUpDetector(cfg), seed)
        info = {
            "weights_file": None,
            "weights_sha256": None,
            "weights_format": None,
            "random_weights": True,
            "seed": seed,
            "load_notes": [],
        }
    else:
        path = weights_path(job, options)
        if not path.is_file():
            raise FileNotFoundError(
                f"region detector weights not found: {path}; " + WEIGHTS_HELP.format(default=DEFAULT_WEIGHTS)
            )
        model, report = load_checkpoint(path, cfg)
        info = {
            "weights_file": path.name,
            "weights_sha256": report.sha256,
            "weights_format": report.format,
            "random_weights": False,
            "seed": None,
            "load_notes": report.notes,
        }
    backend = str(job_option(options, job, "backend", "torch"))
    if backend == "detectron2":
        from lighthead.extract.regions import detectron2_backend

        if not detectron2_backend.available():
            raise ValueError(
                "backend=detectron2 needs detectron2 installed (build it from source); "
                "the default torch backend needs nothing more"
            )
        model = detectron2_backend.Detectron2Detector(model).to(device)
    elif backend == "torch":
        channels_last = bool(job_option(options, job, "channels_last", device.startswith("cuda")))
        model = model.to(device).optimize_for_inference(channels_last=channels_last)
    else:
        raise ValueError(f"unknown region backend {backend!r}; use torch or detectron2")
    # Chunk sizes change speed, not values: kept out of the attrs so a rerun may change them.
    config = {k: v for k, v in model.cfg.to_json().items() if k not in ("roi_chunk", "cpu_roi_chunk")}
    return model, {"config": config, "detector": cfg.name, "backend": backend, **info}


def describe(job: str, model_info: dict[str, Any], selection: Any, options: ExtractOptions) -> dict[str, Any]:
    """Feature-set attrs: everything that shapes the stored values, nothing run-specific
    (a rerun or another worker must produce the same attrs to append to the set)."""
    return {
        "extractor": "bottom-up-attention faster r-cnn (Anderson et al. 2018)",
        "job": job,
        "mode": selection.mode,
        "selection": selection.to_json(),
        "box_rule": BOX_RULES[selection.mode],
        "ids": "object_ids index the 1600 VG objects, attr_ids the 400 VG attributes (0-based; -1 = padding)",
        "dtype": options.dtype,
        **(
            {"boxes_from": str(job_option(options, job, "boxes_from"))}
            if selection.mode == "given" and job_option(options, job, "boxes_from")
            else {}
        ),
        **model_info,
    }


def check_boxes_source(store: Any, name: str) -> None:
    """`name` is a feature set of `store` with a `boxes` field (what boxes_from reads)."""
    if name not in store:
        raise ValueError(
            f"{store.path}: boxes_from={name}: no such feature set (sets: {', '.join(store.names()) or 'none'})"
        )
    if "boxes" not in store[name].fields:
        raise ValueError(f"{store.path}/{name}: boxes_from: the set has no `boxes` field")


def boxes_from_set(store: Any, name: str, image_ids: set[str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """image_id -> (N, 4) float32 boxes stored in the region set `name` of the same store (its first
    `num_boxes` rows: e.g. an imported Caffe TSV, to re-extract at its boxes), and the image ids
    that set does not hold. `-o given-boxes.boxes_from=regions/...`."""
    import numpy as np

    check_boxes_source(store, name)
    source = store[name]
    boxes: dict[str, Any] = {}
    bad: list[tuple[str, str]] = []
    for image_id in sorted(image_ids):
        if image_id not in source:
            bad.append((image_id, f"no boxes in {name}"))
            continue
        item = source.get(image_id, fields=["boxes", "num_boxes"] if "num_boxes" in source.fields else ["boxes"])
        n = int(item["num_boxes"]) if "num_boxes" in item else len(item["boxes"])
        boxes[image_id] = np.asarray(item["boxes"][:n], np.float32).reshape(-1, 4)  # (N, 4)
    return boxes, bad


def given_boxes(records: list[Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """image_id -> (N, 4) float32 boxes from `extra["boxes"]` (an image record's first), and the
    image ids without usable boxes with the reason."""
    import numpy as np

    boxes: dict[str, Any] = {}
    bad: dict[str, str] = {}
    rank = {"image": 0, "post": 1}
    for r in sorted(records, key=lambda r: rank.get(r.kind, 2)):
        if r.image_id in boxes:
            continue
        raw = (r.extra or {}).get("boxes")
        if not raw:
            bad.setdefault(r.image_id, "no boxes given (record.extra['boxes'] is empty)")
            continue
        try:
            arr = np.asarray(raw, dtype=np.float32).reshape(-1, 4)
        except (TypeError, ValueError):
            bad[r.image_id] = f"record {r.id}: boxes are not [x1, y1, x2, y2] lists"
            continue
        if not np.isfinite(arr).all() or (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
            bad[r.image_id] = f"record {r.id}: a box is not finite or has x2 < x1 / y2 < y1"
            continue
        boxes[r.image_id] = arr
        bad.pop(r.image_id, None)
    return boxes, sorted(bad.items())


def _fields(selection: Any, dim: int, dtype: str) -> list[Any]:
    from lighthead.extract.regions.runner import item_fields
    from lighthead.store import Field

    return [Field(n, s, d) for n, s, d in item_fields(selection, dim, dtype)]


class PartProgress:
    """How many of a part's images are done (already stored, written or skipped), sent from the
    dask worker running the part as events on `topic` (at most one a second, and a last one), so
    the command's progress counts images while the parts run."""

    def __init__(self, topic: str, part: int, done: int = 0, every: float = 1.0):
        from distributed import get_worker

        self.worker = get_worker()
        self.topic, self.part, self.done, self.every = topic, part, done, every
        self.sent = -math.inf
        self.send()

    def advance(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self.sent >= self.every:
            self.send()

    def send(self) -> None:
        self.worker.log_event(self.topic, [self.part, self.done])
        self.sent = time.monotonic()


def run_part(
    job: str,
    store_path: str,
    items: list[tuple[str, str]],
    boxes: dict[str, Any] | None,
    options: ExtractOptions,
    device: str,
    threads: int = 0,
    report: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Extract `items` into the job's feature set; one process's share (also the whole job).

    Module-level so worker processes (local or dask) can run it. report: (event topic, part
    index) on a dask worker: the part's progress goes to the command as events (PartProgress).
    """
    import torch

    from lighthead.extract.regions.runner import GPU_PRECISION, extract_regions
    from lighthead.pipelines.placement import use_device
    from lighthead.store import open_store

    device = use_device(device)  # a dask worker's GPU; "cuda:i" made the current device
    threads = threads or int(job_option(options, job, "threads", 0))
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        selection = selection_for(job, options)
        name = feature_set_name(job, selection)
        model, info = build_model(job, options, device)
        fields = _fields(selection, model.cfg.feature_dim, options.dtype)
        store = open_store(store_path)
        precision = job_precision(replace(options, device=device), job, GPU_PRECISION)
        attrs = {**describe(job, info, selection, options), **precision_attrs(store, name, precision)}
        shard_items = job_option(options, job, "shard_items")
        extra = {"shard_items": int(shard_items)} if shard_items else {}
        with store.writer(name, fields=fields, attrs=attrs, **extra) as writer:
            todo = [it for it in items if not writer.is_done(it[0])]
            part = PartProgress(report[0], report[1], len(items) - len(todo)) if report else None
            with progress_bar(job, len(todo), options.progress) as advance:

                def step(n: int) -> None:
                    advance(n)
                    if part is not None:
                        part.advance(n)

                stats = extract_regions(
                    model,
                    todo,
                    writer.add,
                    selection,
                    boxes,
                    options.batch_size,
                    options.loader_workers,
                    options.dtype,
                    step,
                    precision=precision,
                )
            if part is not None:
                part.send()
    finally:
        torch.set_num_threads(before)
    # what this worker committed: a concurrent run may have stored some of its images first
    return {
        "written": writer.written,
        "skipped": stats.skipped,
        "images_per_s": stats.images_per_s,
        "pid": os.getpid(),
        "device": device,
    }


def _split(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i::n] for i in range(n) if items[i::n]]


def cluster_options(options: ExtractOptions) -> Any:
    """The dask cluster the parts run on (`options.cluster`, or one joining `options.scheduler`),
    or None for local processes."""
    if options.cluster is not None:
        return options.cluster
    if options.scheduler:
        from lighthead.pipelines.cluster import ClusterOptions

        return ClusterOptions(scheduler=options.scheduler, workers=max(1, options.workers), dashboard=None)
    return None


def _specs(
    job: str,
    store_path: str,
    items: list[tuple[str, str]],
    boxes: dict[str, Any] | None,
    options: ExtractOptions,
    n: int,
    devices: list[str],
    threads: int,
) -> list[tuple]:
    """run_part's arguments for each of `n` parts (part i on devices[i % len(devices)])."""
    quiet = replace(options, progress=False, workers=1, cluster=None)
    specs = []
    for i, part in enumerate(_split(items, n)):
        part_boxes = {k: boxes[k] for k, _ in part} if boxes is not None else None
        specs.append((job, store_path, part, part_boxes, quiet, devices[i % len(devices)], threads))
    return specs


def _local_devices(options: ExtractOptions) -> list[str]:
    """One device per local GPU when there are several, else the device asked for."""
    import torch

    gpus = torch.cuda.device_count() if options.device.startswith("cuda") else 0
    return [f"cuda:{i}" for i in range(gpus)] if gpus > 1 else [options.device]


def _run_parallel(
    job: str, store_path: str, items: list[tuple[str, str]], boxes: dict[str, Any] | None, options: ExtractOptions
) -> list[dict[str, Any]]:
    """Split the images over `options.workers` local processes (part i on GPU i mod n: the parts
    all run at once), or over a dask cluster's workers."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    cluster = cluster_options(options)
    if cluster is not None:
        return _run_on_cluster(job, store_path, items, boxes, options, cluster)
    n = max(1, options.workers)
    specs = _specs(
        job,
        store_path,
        items,
        boxes,
        options,
        n,
        _local_devices(options),
        max(1, (os.cpu_count() or 1) // min(n, len(items))),
    )
    with ProcessPoolExecutor(len(specs), mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(run_part, *zip(*specs)))


def _run_on_cluster(
    job: str,
    store_path: str,
    items: list[tuple[str, str]],
    boxes: dict[str, Any] | None,
    options: ExtractOptions,
    cluster: Any,
) -> list[dict[str, Any]]:
    """One part per worker as one dask task, through the sweep's cluster code (`cluster.connect`):
    batch jobs ask for one GPU each with --device cuda; a part whose worker dies is retried once.
    With a plain "cuda" each worker takes its own GPU when the part starts (`placement`): the
    scheduler may run any part on any worker, so a GPU chosen by part index could put two
    running parts on one GPU while another idles."""
    from lighthead.pipelines.cluster import connect

    gpu = options.device.startswith("cuda")
    with connect(cluster, gpu=gpu, retries=1) as conn:
        started = cluster.scheduler is None  # a cluster we start: one part per worker (job)
        n = (
            cluster.workers
            if started or options.workers > 1
            else max(1, len(conn.client.scheduler_info().get("workers", {})))
        )
        threads = conn.threads or max(1, (os.cpu_count() or 1) // n)
        specs = _specs(job, store_path, items, boxes, options, n, [options.device], threads)
        resources = conn.resources if started else None  # an existing scheduler's workers may not declare them
        return submit_parts(conn.client, job, specs, resources, options.progress, conn.ended)


def submit_parts(
    client: Any,
    job: str,
    specs: list[tuple],
    resources: dict[str, float] | None,
    progress: bool,
    ended: Callable[[], str | None] | None = None,
) -> list[dict[str, Any]]:
    """Run each part's `run_part` as one task; results in part order. The progress counts the
    images of every part as the workers report them (`PartProgress` events), so its rate is images/s.
    ended: the batch jobs' watch (`cluster.batch.JobWatch`), which says when no worker will come
    back (the parts would wait forever); None for other clusters."""
    from distributed import KilledWorker

    from lighthead.pipelines.cluster.batch import BatchError

    topic = f"lighthead-{job}-progress-{uuid.uuid4().hex[:8]}"
    sizes = [len(spec[2]) for spec in specs]
    done = [0] * len(specs)  # images each part reported done (all of them once its task finished)
    finished: set[int] = set()

    def on_event(event: tuple[float, Any]) -> None:  # on the client's event loop thread
        part, n = event[1]
        if part not in finished:  # a late event of a finished part changes nothing
            done[part] = n

    client.subscribe_topic(topic, on_event)
    futures = [
        client.submit(
            run_part,
            *spec,
            report=(topic, i),
            key=f"{job}-part{i}-{uuid.uuid4().hex[:6]}",
            pure=False,
            retries=1,
            resources=resources or None,
        )
        for i, spec in enumerate(specs)
    ]
    try:
        with progress_bar(f"{job} (parts)", sum(sizes), progress) as advance:
            shown = 0
            while len(finished) < len(futures):
                for i, future in enumerate(futures):
                    if i not in finished and future.done():
                        finished.add(i)
                        done[i] = sizes[i]
                        if future.status != "finished":  # failed for good: gather raises its error
                            finished.update(range(len(futures)))
                advance(sum(done) - shown)
                shown = sum(done)
                if len(finished) < len(futures):
                    reason = ended() if ended is not None else None
                    if reason:
                        raise BatchError(reason)
                    time.sleep(0.5)
        return client.gather(futures)
    except KilledWorker:  # the scheduler's text spans lines and names no way out
        client.cancel(futures)
        raise BatchError(
            f"{job}: a part lost its worker on every attempt (its batch job ended or the worker "
            "process died; see the job logs); what finished is kept: rerun the same command "
            "to resume"
        ) from None
    except BaseException:
        client.cancel(futures)  # Ctrl-C or a failed part: what the others committed stays stored
        raise
    finally:
        client.unsubscribe_topic(topic)


def _run(job: str) -> Any:
    def run(records: list[Any], store: Any, options: ExtractOptions) -> RunSummary:
        from lighthead.extract.images import unique_images
        from lighthead.extract.regions.runner import GPU_PRECISION

        start = time.perf_counter()
        _, mode, _ = JOBS[job]
        name = feature_set_name(job, selection_for(job, options))
        summary = RunSummary(job=job, feature_set=name, random_weights=random_weights(options, job))
        done = set(store[name].ids) if name in store else set()
        all_ids = {r.image_id for r in records}
        summary.already_done = len(all_ids & done)
        items = unique_images(records, skip=done)
        boxes = None
        if mode == "given":
            source = job_option(options, job, "boxes_from")
            boxes, bad = boxes_from_set(store, str(source), all_ids) if source else given_boxes(records)
            summary.skipped.extend((i, why) for i, why in bad if i not in done)
            items = [it for it in items if it[0] in boxes]
        if items:  # another precision than the set's: refused before any worker starts
            precision_attrs(store, name, job_precision(options, job, GPU_PRECISION))
        if not random_weights(options, job) and items:
            path = weights_path(job, options)
            if not path.is_file():  # fail before any worker starts
                raise FileNotFoundError(
                    f"region detector weights not found: {path}; " + WEIGHTS_HELP.format(default=DEFAULT_WEIGHTS)
                )
        if items:
            parallel = options.workers > 1 or cluster_options(options) is not None
            results = (
                _run_parallel(job, str(store.path), items, boxes, options)
                if parallel
                else [run_part(job, str(store.path), items, boxes, options, options.device)]
            )
            for res in results:
                summary.skipped.extend(res["skipped"])
            # What the set gained while we ran: a part retried after its batch job ended also
            # committed ids in the attempt that died, which no result reports.
            stored = set(store[name].ids) if name in store else set()
            summary.written = len(stored & {image_id for image_id, _ in items})
        summary.seconds = time.perf_counter() - start
        return summary

    return run


def _settings(job: str) -> dict[str, JobOption]:
    """The `-o` settings of a region job (module docstring); the bare `selection` reaches only the
    fixed-K jobs."""
    shared = {
        key: JobOption(tp, shared=key)
        for key, tp in (
            ("weights", str),
            ("detector", str),
            ("min_size", int),
            ("max_size", int),
            ("rois", int),
            ("roi_chunk", int),
            ("seed", int),
            ("channels_last", bool),
            ("threads", int),
            ("shard_items", int),
        )
    }
    return {
        **shared,
        "backend": JobOption(str, shared="backend", choices=("torch", "detectron2")),
        # checked by `_check` (SelectionConfig.for_job), which also says whether the rule fits the job
        "selection": JobOption(str, shared="selection" if JOBS[job][1] == "fixed" else None),
        "random_weights": JobOption(bool),
        "precision": PRECISION_OPTION,
        **({"boxes_from": JobOption(str)} if JOBS[job][1] == "given" else {}),
    }


def _check(job: str) -> Any:
    def check(options: ExtractOptions) -> None:
        selection_for(job, options)  # a rule that does not fit the job
        detector_config(job, options)  # an unknown preset, min_size > max_size, ...

    return check


def _check_store(job: str) -> Any:
    if JOBS[job][1] != "given":
        return None

    def check_store(store: Any, options: ExtractOptions) -> None:
        source = job_option(options, job, "boxes_from")
        if source:
            check_boxes_source(store, str(source))

    return check_store


_HELP = {
    "regions36": "bottom-up-attention regions, the 36 most confident (K=36 x 2048)",
    "regions100": "bottom-up-attention regions, the 100 most confident (K=100 x 2048)",
    "adaptive": "bottom-up-attention regions, 10-100 above 0.2 confidence (variable K)",
    "given-boxes": "bottom-up-attention features pooled for record.extra['boxes'] (variable K)",
}
for _job, (_name, _, _) in JOBS.items():
    register(
        FeatureJob(_job, _name, "image", _run(_job), _HELP[_job], _settings(_job), _check(_job), _check_store(_job))
    )
