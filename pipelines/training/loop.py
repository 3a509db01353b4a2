"""The one training loop shared by every head (retrieval and sentiment).

    train("casc", store="stores/coco", out="runs/casc-coco", overrides={"embed_size": 256})

- config: the head's dataclass (paper defaults, dataset defaults, `--set` overrides) plus the
  loop's own `LoopConfig` (seed, AMP, data path, validation); unknown keys name the valid ones;
- data: only from the store, through the head's task (`pipelines/tasks/`);
- each step: forward `head.loss(batch)` (AMP on GPU: bf16, or fp16 with a GradScaler), backward,
  gradient clipping per optimiser (`grad_clip`), every optimiser of `head.optimizers()` steps;
  their LR schedulers step once per epoch; `head.start_epoch(e)` is called every epoch (a no-op unless the head needs it); the
  loss sums stay on the device and the host reads them (and checks that every loss was finite,
  naming the first step that was not) after the first step, every `SYNC_EVERY` steps and at the
  end, so a GPU is not made to wait at every step; on CUDA batches are copied from pinned memory;
- after each epoch: validation, `checkpoints/last.safetensors` (everything needed to resume,
  RNG states included) and, when the task's selection metric improves,
  `checkpoints/best.safetensors` (tensors + JSON, loaded without unpickling);
- at the end: the best epoch is reloaded and scored on the test split; `metrics.json`,
  `config.json` and `data_info.json` are in the run directory.
Seeded and deterministic on CPU: the same seed gives the same metrics, and a resumed run the
same as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lighthead.heads.base import DataInfo
from lighthead.heads.build import config_fields, head_class, make_config, parse_overrides
from lighthead.heads.metrics import NonFiniteScoresError
from lighthead.pipelines.json_files import atomic_json
from lighthead.pipelines.placement import use_device
from lighthead.pipelines.tasks import TASKS, TaskOptions
from lighthead.pipelines.threads import use_threads
from lighthead.pipelines.training.live_log import check_log, open_log
from lighthead.pipelines.training.run_folder import (
    BEST,
    CHECKPOINTS,
    LAST,
    check_same_run,
    load_checkpoint,
    read_run_config,
    run_lock,
    save_checkpoint,
)


@dataclass
class LoopConfig:
    """Settings of the loop itself, set like head keys (`--set seed=1`)."""

    seed: int = 0  # seeds model init, shuffling and every RNG
    amp: bool = True  # mixed precision on GPU (bf16 where supported, else fp16 + GradScaler)
    workers: int = 0  # DataLoader workers when features are read from disk per batch
    preload_mb: int = 4096  # feature sets of a split smaller than this are read into RAM once
    eval_batch: int = 256  # items per encoding batch in evaluation
    eval_budget_mb: int = 0  # memory per block of scored pairs (0: 64 MiB on a CPU, 1/4 of free GPU memory, >= 256 MiB)
    eval_precision: str = "fp32"  # products when scoring pairs: fp32, or bf16 (faster, scores within ~1e-3)
    val_images: int = 1000  # validate on the first N images (0 = the whole split)
    val_every: int = 1  # validate every N epochs (the last epoch always)
    test: bool = True  # score the best epoch on the test split at the end
    protocol: str = "1k"  # test protocol for COCO: 1k (five folds) or 5k
    log: str = "none"  # live log while training: none, or tensorboard (<run>/tensorboard; the extra of that name)

    def __post_init__(self) -> None:
        if self.val_every < 1:
            raise ValueError("val_every must be >= 1")
        if self.protocol not in ("1k", "5k"):
            raise ValueError(f"protocol must be 1k or 5k, got {self.protocol!r}")
        check_log(self.log)

    def task_options(self) -> TaskOptions:
        return TaskOptions(
            preload_mb=self.preload_mb,
            workers=self.workers,
            eval_batch=self.eval_batch,
            eval_budget_mb=self.eval_budget_mb,
            eval_precision=self.eval_precision,
            val_images=self.val_images,
        )


def split_overrides(config_class: type, overrides: Mapping[str, Any], head_name: str) -> tuple[dict, dict]:
    """Route `key=value` overrides to the head config or the loop config."""
    head_keys, loop_keys = config_fields(config_class), config_fields(LoopConfig)
    head_over, loop_over = {}, {}
    for key, value in overrides.items():
        if key in head_keys:
            head_over[key] = value
        elif key in loop_keys:
            loop_over[key] = value
        else:
            raise KeyError(
                f"unknown config key {key!r} for {head_name}; head keys: {', '.join(sorted(head_keys))}; "
                f"loop keys: {', '.join(sorted(loop_keys))}"
            )
    return head_over, loop_over


def dataset_name(store: Any, dataset: str | None) -> str:
    """`--dataset` (a registered adapter, or the name the store records), else the store's name.

    A `--dataset` other than the one the store records is refused: its records, splits and
    dataset defaults would not match the features."""
    if dataset:
        from lighthead.pipelines.datasets import DATASETS

        held = store.read_json("dataset").get("name") if store.has_json("dataset") else None
        if dataset not in DATASETS and dataset != held:
            also = f" (this store holds {held!r})" if held else ""
            raise KeyError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS.names())}{also}")
        if held is not None and dataset != held:
            raise ValueError(
                f"{store.path} holds dataset {held!r}, not {dataset!r}: leave out --dataset, or pass "
                "the store of that dataset"
            )
        return dataset
    if store.has_json("dataset"):
        return str(store.read_json("dataset")["name"])
    raise ValueError(f"{store.path} records no dataset name (artifact 'dataset'); pass --dataset")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(device: str | torch.device | None) -> torch.device:
    """The device to train or evaluate on ("auto": CUDA when there is one); a "cuda:i" is made
    the current CUDA device (`placement.use_device`), so nothing starts a context on GPU 0."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(use_device(str(device)))


def store_profiles(store: Any) -> tuple[str, ...]:
    """DATASET_DEFAULTS keys that the store's origin selects: "precomp" for a SCAN precomp import."""
    held = store.read_json("dataset") if store.has_json("dataset") else {}
    return ("precomp",) if held.get("imported_from") == "precomp" else ()


def prepare(
    head_name: str,
    store_path: str | os.PathLike,
    dataset: str | None,
    overrides: Mapping[str, Any],
    epochs: int | None = None,
) -> dict[str, Any]:
    """Resolve configs, open the store and build the task (shared with evaluation and sweeps)."""
    from lighthead.store import open_store

    cls = head_class(head_name)
    head_over, loop_over = split_overrides(cls.config_class, overrides, head_name)
    store = open_store(store_path)
    dataset = dataset_name(store, dataset)
    cfg = make_config(cls.config_class, head_over, dataset, what=head_name, profiles=store_profiles(store))
    if epochs is not None:  # every head config has epochs (HeadConfig)
        cfg = dataclasses.replace(cfg, epochs=int(epochs))
    loop = make_config(LoopConfig, loop_over, what="loop")
    task = TASKS.get(cls.task)(store, cfg, dataset, loop.task_options())
    return {"cls": cls, "cfg": cfg, "loop": loop, "store": store, "dataset": dataset, "task": task}


def train(
    head_name: str,
    store: str | os.PathLike,
    out: str | os.PathLike,
    dataset: str | None = None,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | list[str] | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train `head_name` on the store's cached features; returns (and writes) metrics.json's dict.

    threads: torch's CPU threads for this process (None: as already set; the CLI passes
    `lighthead.pipelines.threads.default_threads()`); config.json records the count used.
    `out` is locked while training (`run_lock`): a second run into it is refused.
    """
    with run_lock(Path(out)):
        return _train(head_name, store, Path(out), dataset, epochs, overrides, device, resume, progress, threads)


def _train(
    head_name: str,
    store: str | os.PathLike,
    out: Path,
    dataset: str | None,
    epochs: int | None,
    overrides: Mapping[str, Any] | list[str] | None,
    device: str | None,
    resume: bool,
    progress: bool,
    threads: int | None,
) -> dict[str, Any]:
    """`train` with `out` locked."""
    overrides = parse_overrides(overrides)
    last_path = out / CHECKPOINTS / LAST
    if last_path.exists() and not resume:
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not last_path.exists():
        from lighthead.pipelines.training.checkpoint import load

        if last_path.with_suffix(".pt").exists():
            load(last_path)  # a run of the old pickle format: refused, saying why
        raise FileNotFoundError(f"nothing to resume: {last_path} does not exist")
    if resume:  # without new settings, continue with the run's own
        old = read_run_config(out / "config.json")
        overrides = overrides or parse_overrides(old.get("overrides"))
        epochs = epochs if epochs is not None else old["config"].get("epochs")
    ctx = prepare(head_name, store, dataset, overrides, epochs)
    cls, cfg, loop, task = ctx["cls"], ctx["cfg"], ctx["loop"], ctx["task"]
    dev = pick_device(device)
    task.options.pin_memory = dev.type == "cuda"
    if threads is not None:
        use_threads(threads)
    seed_everything(loop.seed)
    data_info = task.data_info()
    head = cls.from_config(cfg, DataInfo.of(data_info)).to(dev)
    optimizers = head.optimizers()
    run_config = {
        "head": head_name,
        "task": cls.task,
        "dataset": ctx["dataset"],
        "store": str(Path(store).resolve()),
        "config": dataclasses.asdict(cfg),
        "loop": dataclasses.asdict(loop),
        "overrides": {k: str(v) for k, v in overrides.items()},
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    if resume:
        check_same_run(out, run_config)
    live = open_log(loop.log, out)  # before any file is written: a missing package fails here
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(out / "config.json", run_config)
    atomic_json(out / "data_info.json", data_info)

    amp_dtype = _amp_dtype(dev, loop.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    state = {"epoch": -1, "best": -math.inf, "best_epoch": -1, "history": []}
    if resume:
        state = load_checkpoint(last_path, head, optimizers, scaler, dev)
    n_epochs, batch_size, grad_clip = int(cfg.epochs), int(cfg.batch_size), float(cfg.grad_clip or 0.0)
    has_val = task.has_split("val")
    metric = task.selection_metric

    for epoch in range(state["epoch"] + 1, n_epochs):
        head.train()
        head.start_epoch(epoch)
        batches = task.train_batches(tuple(head.inputs), batch_size, loop.seed, epoch)
        stats = _run_epoch(
            head,
            optimizers,
            batches,
            dev,
            amp_dtype,
            scaler,
            grad_clip,
            EpochProgress(f"{head_name} epoch {epoch + 1}/{n_epochs}", len(batches), progress),
        )
        for _, sched in optimizers:
            if sched is not None:
                sched.step()
        entry: dict[str, Any] = {"epoch": epoch + 1, **stats}
        if has_val and ((epoch + 1) % loop.val_every == 0 or epoch + 1 == n_epochs):
            val = _evaluate(task, head, "val", dev, out, f"epoch {epoch + 1}", limit=loop.val_images)
            entry["val"] = val
            improved = val[metric] > state["best"]
        else:
            improved = not has_val  # without a validation split the last epoch is kept
        if improved:
            state["best"] = entry["val"][metric] if has_val else state["best"]
            state["best_epoch"] = epoch + 1
            save_checkpoint(out / CHECKPOINTS / BEST, head)
        state["history"].append(entry)
        live.epoch(entry)  # flushed per epoch: an interrupted run keeps what it logged
        state["epoch"] = epoch
        save_checkpoint(last_path, head, optimizers, scaler, state, device=dev)
        atomic_json(out / "metrics.json", _summary(run_config, state, metric, None))
        if progress:
            EpochProgress.report(entry, metric)

    if n_epochs == 0 or state["best_epoch"] < 0:
        raise ValueError("no epoch was trained (epochs = 0?)")
    load_checkpoint(out / CHECKPOINTS / BEST, head, device=dev)
    test = None
    if loop.test and task.has_split("test"):
        test = _evaluate(task, head, "test", dev, out, f"best epoch {state['best_epoch']}", protocol=loop.protocol)
    metrics = _summary(run_config, state, metric, test)
    atomic_json(out / "metrics.json", metrics)
    live.test(test, state["best_epoch"])
    live.close()
    return metrics


def _evaluate(task: Any, head: Any, split: str, dev: torch.device, out: Path, when: str, **kw: Any) -> dict[str, Any]:
    """`task.evaluate`, with NaN or infinite scores an error naming the run: such a head must
    never be selected (NaN would otherwise rank as a perfect match) nor win a sweep."""
    try:
        return task.evaluate(head, split, dev, **kw)
    except NonFiniteScoresError as e:
        raise NonFiniteScoresError(f"{out}: {when}, {split} split: {e}") from None


SYNC_EVERY = 50  # steps between host reads of the running loss sums (each read waits for the GPU)


class _Running:
    """Loss sums and the first non-finite loss of an epoch, kept on the device: a step adds to them
    without waiting for the GPU, and `read` copies them to the host in one transfer."""

    def __init__(self, dev: torch.device):
        self.sums: dict[str, torch.Tensor] = {}  # loss part -> sum over samples (float64)
        # the first step whose loss is not finite (-1: none yet) and that loss; `full` and
        # `where` with Python numbers launch kernels, where `torch.tensor(x, device=cuda)` would
        # copy from the host and wait for the GPU
        self.bad_step = torch.full((), -1.0, dtype=torch.float64, device=dev)
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=dev)

    def add(self, parts: Mapping[str, torch.Tensor], step: int, b: int) -> None:
        loss = parts["loss"].detach().to(torch.float64)
        first = ~torch.isfinite(loss) & (self.bad_step < 0)  # a 0-dim tensor on the device: no sync
        self.bad_step = torch.where(first, float(step), self.bad_step)
        self.bad_loss = torch.where(first, loss, self.bad_loss)
        for k, v in parts.items():
            add = v.detach().to(torch.float64) * b
            self.sums[k] = self.sums[k] + add if k in self.sums else add

    def read(self) -> dict[str, float]:
        """The sums on the host (one sync); FloatingPointError naming the first non-finite step."""
        step, loss, *values = torch.stack([self.bad_step, self.bad_loss, *self.sums.values()]).tolist()
        if step >= 0:
            raise FloatingPointError(f"loss is {loss} at step {int(step)} (lower the lr or check the data)")
        return dict(zip(self.sums, values))


def _to_device(value: Any, dev: torch.device) -> Any:
    """A batch value on `dev`; on CUDA from page-locked memory, so the copy does not wait for the
    GPU to finish the previous step (from pageable memory `non_blocking` is synchronous)."""
    if not torch.is_tensor(value):
        return value  # non-tensor values (ITM's batch["phase"]) pass through as they are
    if dev.type == "cuda" and value.device.type == "cpu" and not value.is_pinned():
        value = value.pin_memory()
    return value.to(dev, non_blocking=True)


def _run_epoch(
    head, optimizers, batches, dev, amp_dtype, scaler, grad_clip, bar, sync_every: int = SYNC_EVERY
) -> dict[str, float]:
    """One epoch. The host reads the loss sums (and checks that every loss was finite) after the
    first step, every `sync_every` steps and at the end, not at every step."""
    running = _Running(dev)
    sums: dict[str, float] = {}
    n_samples, n_steps, read_at = 0, 0, 0  # read_at: samples summed in `sums`, the last host read
    start = time.perf_counter()
    with bar:
        for batch in batches:
            batch = {k: _to_device(v, dev) for k, v in batch.items()}
            # a head trained in alternating phases (ITM) names the one optimiser a batch steps
            index = head.optimizer_for(batch)
            stepping = optimizers if index is None else [optimizers[index]]
            try:
                for opt, _ in optimizers:
                    opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                    parts = head.loss(batch)
                b = len(next(v for v in batch.values() if torch.is_tensor(v)))
                running.add(parts, n_steps, b)
                scaler.scale(parts["loss"]).backward()
                for opt, _ in stepping:
                    scaler.unscale_(opt)
                    if grad_clip > 0:
                        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
                        torch.nn.utils.clip_grad_norm_(params, grad_clip)
                    scaler.step(opt)
                scaler.update()
            except Exception:
                running.read()  # a non-finite loss earlier in the interval is the cause to report
                raise
            n_samples += b
            n_steps += 1
            if n_steps == 1 or n_steps % sync_every == 0:
                sums, read_at = running.read(), n_samples
            bar.advance(sums["loss"] / max(1, read_at), n_samples / max(1e-9, time.perf_counter() - start))
    sums = running.read() if n_steps else {}
    seconds = time.perf_counter() - start
    stats = {k: v / max(1, n_samples) for k, v in sums.items()}
    stats.update(samples=n_samples, seconds=seconds, samples_per_s=n_samples / max(1e-9, seconds))
    return stats


def _amp_dtype(dev: torch.device, amp: bool) -> torch.dtype | None:
    if not amp or dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _summary(run_config: dict, state: dict, metric: str, test: dict | None) -> dict[str, Any]:
    history = state["history"]
    best = next((h for h in history if h["epoch"] == state["best_epoch"]), None)
    return {
        "head": run_config["head"],
        "dataset": run_config["dataset"],
        "selection_metric": metric,
        "epochs_done": state["epoch"] + 1,
        "best_epoch": state["best_epoch"],
        "val": best.get("val") if best else None,
        "test": test,
        "train_seconds": sum(h["seconds"] for h in history),
        "samples_per_s": float(np.mean([h["samples_per_s"] for h in history])) if history else 0.0,
        "history": history,
    }


class EpochProgress:
    """Progress over one epoch's batches with the running loss and samples/s, on stderr: a rich bar
    on a terminal (gone when the epoch ends), in a log a plain line at most once a minute."""

    def __init__(self, description: str, total: int, enabled: bool = True):
        self.description, self.total, self.enabled = description, total, enabled
        self._context = None
        self._tracker = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            from lighthead.pipelines.console import progress

            # The epoch line (`report`) follows every epoch, so no step or final lines here.
            self._context = progress(
                self.description,
                self.total,
                unit=None,
                transient=True,
                final=False,
                steps=0,
                extra=" | loss {loss:.4f} | {rate:.0f} samples/s",
            )
            self._tracker = self._context.__enter__()
        return self

    def advance(self, loss: float, rate: float) -> None:
        if self._tracker is not None:
            self._tracker.advance(1, loss=loss, rate=rate)

    def __exit__(self, *exc: Any) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)

    @staticmethod
    def report(entry: dict[str, Any], metric: str) -> None:
        """One line per epoch on stderr: loss parts, throughput and the validation metric."""
        from lighthead.pipelines.console import console

        parts = " ".join(
            f"{k} {v:.4f}"
            for k, v in entry.items()
            if k not in ("epoch", "samples", "seconds", "samples_per_s", "val") and isinstance(v, float)
        )
        val = entry.get("val")
        tail = f" | val {metric} {val[metric]:.2f}" if val and metric in val else ""
        console(stderr=True).print(
            f"epoch {entry['epoch']}: {parts} | {entry['samples_per_s']:.0f} samples/s{tail}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
