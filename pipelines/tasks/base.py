"""What a task is: the bridge between a store and a head, for training and for evaluation.

A head declares its task (`Head.task`: "retrieval", "sentiment"); `TASKS` maps that name to a
`Task` class. The training loop (`pipelines/training/loop.py`) and `evaluate_run` only talk to this
interface, so one loop serves every head:

    task = TASKS.get(head_class.task)(store, cfg, dataset, options)
    head = build_head(name, task.data_info(), overrides)
    for batch in task.train_batches(head.inputs, batch_size, seed, epoch): ...
    metrics = task.evaluate(head, "val", device)       # includes task.selection_metric

Which feature sets a task reads comes from the head's config: every config field whose value
names a feature set ("regions/...", "global/...", "thumbs/...", "words/...", "text/...") is a
source (see `pipelines/tasks/sources.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch

from lighthead.pipelines.tasks.scoring import PRECISIONS
from lighthead.store.registry import Registry


@dataclass
class TaskOptions:
    """Data-path and evaluation settings shared by every task (the loop's config fills them)."""

    preload_mb: int = 4096  # read a split's feature sets into RAM when they fit in this many MiB
    workers: int = 0  # DataLoader worker processes (0 = in-process; used when not preloaded)
    eval_batch: int = 256  # items per encoding batch during evaluation
    eval_budget_mb: int = 0  # memory for scoring one block of pairs (0 = 64 MiB on a CPU, 1 GiB on a GPU)
    eval_precision: str = "fp32"  # products when scoring pairs: fp32, or bf16 (faster, scores within ~1e-3)
    val_images: int = 1000  # validation on the first N images of the split (0 = all)
    per_image: int = 5  # captions per image in retrieval (COCO, Flickr30K)
    pin_memory: bool = False  # training batches in page-locked memory (the loop sets it when training on CUDA)

    def __post_init__(self) -> None:
        if self.preload_mb < 0 or self.workers < 0 or self.val_images < 0:
            raise ValueError("preload_mb, workers and val_images must be >= 0")
        if self.eval_batch < 1 or self.eval_budget_mb < 0 or self.per_image < 1:
            raise ValueError("eval_batch and per_image must be >= 1, eval_budget_mb >= 0")
        if self.eval_precision not in PRECISIONS:
            raise ValueError(f"eval_precision must be one of {', '.join(PRECISIONS)}, got {self.eval_precision!r}")


class Task:
    """Base class; subclasses register themselves in TASKS under the head's task name."""

    name: ClassVar[str] = ""
    selection_metric: ClassVar[str] = ""  # validation metric (higher is better) picking the best epoch

    def __init__(self, store: Any, cfg: Any, dataset: str, options: TaskOptions | None = None):
        self.store = store
        self.cfg = cfg
        self.dataset = dataset
        self.options = options or TaskOptions()
        self.records: list[Any] = []  # the records the task reads (subclasses fill it)

    def data_info(self) -> dict[str, Any]:
        """Sizes from the data that the head's constructor needs (JSON-able)."""
        raise NotImplementedError

    def num_train_samples(self) -> int:
        raise NotImplementedError

    def train_batches(
        self, inputs: tuple[str, ...], batch_size: int, seed: int, epoch: int
    ) -> Iterable[dict[str, torch.Tensor]]:
        """Shuffled training batches (deterministic in seed and epoch) with the keys `inputs`."""
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        raise NotImplementedError

    def splits(self) -> list[str]:
        """The splits `has_split` accepts, for messages that list them."""
        return sorted({r.split for r in self.records if r.split and self.has_split(r.split)})

    def evaluate(
        self, head: Any, split: str, device: torch.device, protocol: str = "1k", limit: int = 0
    ) -> dict[str, Any]:
        """Metrics of `head` on `split` (first `limit` items when > 0)."""
        raise NotImplementedError

    def examples(self, head: Any, split: str, device: torch.device, n: int, path: Path) -> Path:
        """Save a figure of `n` qualitative examples to `path`."""
        raise NotImplementedError(f"task {self.name!r} draws no examples")

    def report(
        self,
        head: Any,
        split: str,
        device: torch.device,
        run: Path,
        metrics: dict[str, Any],
        protocol: str = "1k",
        examples: int = 0,
    ) -> tuple[dict[str, Any], list[Path]]:
        """Write `metrics` of `split` (and, with `examples`, a figure) into the run folder `run`;
        returns the metrics as written and the files, in order (`lighthead evaluate`)."""
        raise NotImplementedError


def run_title(metrics: dict[str, Any]) -> str:
    """ "<head> on <dataset> <split>": the title of a run's tables."""
    return f"{metrics.get('head', '')} on {metrics.get('dataset', '')} {metrics.get('split', '')}".strip()


TASKS: Registry[type[Task]] = Registry("task")
