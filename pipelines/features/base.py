"""The contract between `lighthead extract` and the extractors.

A `FeatureJob` owns one feature set (e.g. `regions/butd-r101-vg-36`). Its `run` gets the
dataset's records, the open store and the options, skips ids the feature set already holds
(the store's writer knows them), writes the rest, and returns a `RunSummary` listing what it
wrote and what it skipped, with a reason per skipped input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from lighthead.store.registry import Registry

FEATURE_DTYPES = ("float16", "float32")  # what a feature field may be stored as


@dataclass
class ExtractOptions:
    """Options shared by every feature job (the `lighthead extract` flags)."""

    weights: Path | None = None  # checkpoint for the job's model; None = the job's default location
    random_weights: bool = False  # random model weights (tests, demo); recorded in the store
    batch_size: int = 8  # items per forward pass
    device: str = "cpu"  # "cpu" or "cuda[:i]"
    workers: int = 1  # processes (or GPUs) sharing the work, each writing its own shards
    loader_workers: int = 2  # DataLoader workers decoding images
    dtype: str = "float16"  # storage dtype of feature fields
    progress: bool = True  # show rich progress bars
    scheduler: str | None = None  # dask scheduler address to spread the work on, instead of local processes
    cluster: Any = None  # sweep.ClusterOptions: region jobs run on this dask cluster (SLURM/PBS jobs, a local one)
    job_options: dict[str, Any] = field(default_factory=dict)  # per-job settings, e.g. {"text_model": PATH, "resnet152.weights": PATH}

    def __post_init__(self) -> None:
        if self.dtype not in FEATURE_DTYPES:  # float64 doubles the store for digits no model gives; ints truncate
            raise ValueError(f"--dtype {self.dtype!r}: feature fields are stored as {' or '.join(FEATURE_DTYPES)}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.loader_workers < 0:
            raise ValueError(f"--loader-workers must be >= 0 (0 decodes in the main process), got {self.loader_workers}")


@dataclass
class RunSummary:
    """What a job did; printed at the end of `lighthead extract`."""

    job: str  # CLI name of the job
    feature_set: str  # feature set written
    written: int = 0  # items written in this run
    already_done: int = 0  # items found in the store and skipped
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason) of bad inputs
    seconds: float = 0.0  # wall time of the run
    random_weights: bool = False  # the model ran on random weights (flagged in every report)


@dataclass(frozen=True)
class JobOption:
    """A setting a job reads from `--job-option` (`-o`): as `<job>.<key>`, or for every job that
    reads it under its shared key. Checked before any job runs (`extract_run.check_job_options`)."""

    type: Any = str  # bool, int, float, str or `int | None`: what a `-o` string is parsed into
    shared: str | None = None  # the bare key setting it for every job reading it ("text_layer"); None: `<job>.<key>` only
    choices: tuple[str, ...] = ()  # the values a str setting may take (empty: any)


@dataclass
class FeatureJob:
    """A registered feature job."""

    name: str  # CLI name, e.g. "regions36", "bert", "resnet18"
    feature_set: str  # feature set it writes, e.g. "regions/butd-r101-vg-36"
    kind: str  # "image" (one item per image_id) or "text" (one item per text id f"{record.id}#{j}")
    run: Callable[[list[Any], Any, ExtractOptions], RunSummary]  # (records, store, options) -> summary
    help: str = ""  # one line for `lighthead extract --help`
    settings: Mapping[str, JobOption] = field(default_factory=dict)  # key -> the `-o` setting the job reads
    # Checks what the settings mean together (a preset name, a rule that fits the job) before any
    # job of the command runs; raises ValueError/KeyError. None: the types suffice.
    check: Callable[[ExtractOptions], None] | None = None


# `-o precision=`: lighthead.extract.precision.PRECISIONS, named here so that reading the settings
# does not import torch (`--help` stays instant).
PRECISION_OPTION = JobOption(str, shared="precision", choices=("auto", "fp32", "bf16", "fp16"))

FEATURES: Registry[FeatureJob] = Registry("feature")


def register(job: FeatureJob) -> FeatureJob:
    """Register a job under its CLI name (raises on a duplicate)."""
    return FEATURES.register(job.name)(job)
