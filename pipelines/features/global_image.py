"""Global image jobs, one item per `record.image_id`: pooled ResNet features and thumbnails.

`resnet18` -> global/resnet18 (features [512], ITIN's visual context), `resnet152` ->
global/resnet152 (features [2048], mFSR), `thumbs` -> thumbs/64 (thumb [3, 64, 64] uint8,
mFSR's reconstruction target). Unreadable images are skipped with a reason, and so is an image
the model fails on (the batch is run again one image at a time). The weights file is needed only
when images are left to extract: a finished set reruns without it.

Settings (`--job-option`): "<job>.weights" (a torchvision state-dict file; else `--weights`,
else torchvision's cache file), "<job>.precision" / "precision" (auto: fp16 autocast on CUDA,
fp32 on a CPU; fp32, bf16, fp16; recorded, and a set holding another is refused), "<job>.decode"
for the ResNets ("upright": EXIF orientation applied, alpha on white; "plain": PIL's
convert("RGB") as ITIN's Demo.py, MVSA's default), thumbs "size" (64), shard_items.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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
from lighthead.pipelines.placement import use_device

if TYPE_CHECKING:  # torch is imported inside the jobs, so `lighthead --help` stays instant
    import torch


Model = Callable[["torch.Tensor"], dict[str, Any]]  # (B, ...) images -> field -> (B, ...) array


def run_image_job(
    job: str,
    name: str,
    records: list[Any],
    store: Any,
    options: ExtractOptions,
    transform: Callable[[Any], torch.Tensor],
    fields: list[Any],
    random: bool,
    setup: Callable[[], tuple[dict[str, Any], Model]],
    decode: str = "upright",
) -> RunSummary:
    """Decode the images not yet in feature set `name` (DataLoader workers), run the model on each
    batch of transformed images and store its per-item fields.

    `setup()` -> (the feature set's attrs, the model) runs only when images are left, so a finished
    set needs no weights file. A batch the model fails on is run again one image at a time; an
    image that still fails is skipped with the error as its reason; a failed device stops the
    job (`per_image`). `decode` is `extract.images.decode_rgb`'s.
    """
    from lighthead.extract.images import image_loader, unique_images
    from lighthead.extract.per_image import batch_or_each, reason

    start = time.perf_counter()
    summary = RunSummary(job=job, feature_set=name, random_weights=random)
    done = set(store[name].ids) if name in store else set()
    summary.already_done = len({r.image_id for r in records} & done)
    items = unique_images(records, skip=done)
    if not items:
        summary.seconds = time.perf_counter() - start
        return summary
    attrs, model = setup()

    def each(images: torch.Tensor) -> list[dict[str, Any]]:
        out = model(images)  # field -> (B, ...) array
        return [{f: v[k] for f, v in out.items()} for k in range(len(images))]

    shard_items = job_option(options, job, "shard_items", None)
    overrides = {"shard_items": int(shard_items)} if shard_items else {}
    with store.writer(name, fields=fields, attrs=attrs, **overrides) as writer:
        items = [it for it in items if not writer.is_done(it[0])]
        with progress_bar(job, len(items), options.progress) as advance:
            for batch in image_loader(items, transform, options.batch_size, options.loader_workers, decode):
                summary.skipped.extend(batch["skipped"])
                images = batch["images"]
                results = (
                    batch_or_each(
                        len(batch["ids"]),
                        lambda: each(images),  # noqa: B023 - called before the loop moves on
                        lambda k: each(images[k : k + 1])[0],  # noqa: B023 - called before the loop moves on
                        where=f"{job}: image {batch['ids'][0]}",
                    )
                    if batch["ids"]
                    else []
                )
                for image_id, item, size in zip(batch["ids"], results, batch["sizes"], strict=True):
                    if isinstance(item, Exception):  # the store's own errors (disk full, ...) still stop the job
                        summary.skipped.append(
                            (image_id, f"{job} failed on this {size[0]}x{size[1]} image: {reason(item)}")
                        )
                    else:
                        writer.add(image_id, item)
                advance(len(batch["ids"]) + len(batch["skipped"]))
    summary.written = writer.written  # what this run committed (a concurrent run may store some first)
    summary.seconds = time.perf_counter() - start
    return summary


def _weights_path(job: str, options: ExtractOptions) -> Path | None:
    """`--job-option <job>.weights=PATH`; else `--weights` when this job runs alone (with several
    jobs `--weights` is the region detector's checkpoint); else None (torchvision's cache file)."""
    path = options.job_options.get(f"{job}.weights")
    if not path and options.job_options.get("_jobs", [job]) == [job]:
        path = options.weights
    return Path(path) if path else None


def _resnet_job(arch: str) -> Callable[[list[Any], Any, ExtractOptions], RunSummary]:
    def run(records: list[Any], store: Any, options: ExtractOptions) -> RunSummary:
        import torch

        from lighthead.extract.global_cnn import GlobalCNNConfig, build_global_cnn, default_weights
        from lighthead.extract.global_cnn.resnet import missing_weights_message
        from lighthead.extract.images import DECODES
        from lighthead.extract.precision import autocast
        from lighthead.store import Field, sha256_file

        config = GlobalCNNConfig(arch=arch)
        random = random_weights(options, arch)
        decode = str(job_option(options, arch, "decode", "upright"))
        if decode not in DECODES:
            raise ValueError(f"{arch}.decode must be one of {', '.join(DECODES)}, got {decode!r}")
        device = torch.device(use_device(options.device))  # a dask worker's GPU; "cuda:i" made current
        precision = job_precision(options, arch, gpu="fp16")

        def setup() -> tuple[dict[str, Any], Model]:
            # Only when images are left: a finished set needs no weights file.
            recorded = precision_attrs(store, f"global/{arch}", precision)  # another precision: refused before any work
            weights = None if random else (_weights_path(arch, options) or default_weights(arch))
            if weights is not None and not weights.is_file():
                raise FileNotFoundError(missing_weights_message(arch, weights))
            net = build_global_cnn(arch, weights, random).to(device)

            @torch.inference_mode()
            def forward(images: torch.Tensor) -> dict[str, Any]:
                with autocast(precision, device):
                    feats = net(images.to(device, non_blocking=True))  # (B, D)
                return {"features": feats.float().cpu().numpy()}

            attrs = {
                "extractor": "global-cnn",
                "job": arch,
                "arch": arch,
                "width": config.width,
                "preprocess": {
                    "resize": config.resize,
                    "crop": config.crop,
                    "mean": list(config.mean),
                    "std": list(config.std),
                },
                # the name only: moving the file keeps resume working
                "weights_file": None if weights is None else weights.name,
                "weights_sha256": None if weights is None else sha256_file(weights),
                "random_weights": random,
                "dtype": options.dtype,
                **recorded,
                **({"decode": decode} if decode != "upright" else {}),  # only when set: older sets still resume
            }
            return attrs, forward

        fields = [Field("features", (config.width,), options.dtype)]
        return run_image_job(
            arch, f"global/{arch}", records, store, options, config.transform(), fields, random, setup, decode
        )

    return run


def _run_thumbs(records: list[Any], store: Any, options: ExtractOptions) -> RunSummary:
    from lighthead.extract.global_cnn import ThumbConfig
    from lighthead.extract.global_cnn.thumbs import describe
    from lighthead.store import Field

    config = ThumbConfig(size=int(job_option(options, "thumbs", "size", 64)))

    def setup() -> tuple[dict[str, Any], Model]:
        attrs = {"extractor": "thumbnails", "job": "thumbs", **describe(config), "random_weights": False}
        return attrs, lambda images: {"thumb": images.numpy()}  # (B, 3, S, S) uint8, nothing to compute

    fields = [Field("thumb", (3, config.size, config.size), "uint8")]
    return run_image_job(
        "thumbs", f"thumbs/{config.size}", records, store, options, config.transform(), fields, False, setup
    )


# `-o` settings: `<job>.weights` and `<job>.random_weights` for one ResNet; shard_items and the
# thumbnails' size also as bare keys.
RESNET_SETTINGS = {
    "weights": JobOption(str),
    "random_weights": JobOption(bool),
    "shard_items": JobOption(int, shared="shard_items"),
    "precision": PRECISION_OPTION,
    "decode": JobOption(str, choices=("upright", "plain")),
}  # extract.images.DECODES
THUMB_SETTINGS = {"size": JobOption(int, shared="size"), "shard_items": JobOption(int, shared="shard_items")}
register(
    FeatureJob(
        "resnet18",
        "global/resnet18",
        "image",
        _resnet_job("resnet18"),
        "ResNet-18 pooled 512-d (ITIN context)",
        RESNET_SETTINGS,
    )
)
register(
    FeatureJob(
        "resnet152",
        "global/resnet152",
        "image",
        _resnet_job("resnet152"),
        "ResNet-152 pooled 2048-d (mFSR)",
        RESNET_SETTINGS,
    )
)
register(
    FeatureJob(
        "thumbs",
        "thumbs/64",
        "image",
        _run_thumbs,
        "uint8 thumbnails, 64x64 by default (mFSR reconstruction)",
        THUMB_SETTINGS,
    )
)
