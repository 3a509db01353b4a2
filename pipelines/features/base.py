"""The contract between `lighthead extract` and the extractors.

A `FeatureJob` owns one feature set (e.g. `regions/butd-r101-vg-36`). Its `run` gets the
dataset's records, the open store and the options, skips ids the feature set already holds
(the store's writer knows them), writes the rest, and returns a `RunSummary` listing what it
wrote and what it skipped, with a reason per skipped input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from lighthead.pipelines.features.options import ExtractOptions, JobOption
from lighthead.store.registry import Registry


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
    # Checks what the settings name in the store (a feature set to read) once it is open, still
    # before any job of the command runs: (store, options); raises ValueError. None: nothing to check.
    check_store: Callable[[Any, ExtractOptions], None] | None = None


FEATURES: Registry[FeatureJob] = Registry("feature")


def register(job: FeatureJob) -> FeatureJob:
    """Register a job under its CLI name (raises on a duplicate)."""
    return FEATURES.register(job.name)(job)
