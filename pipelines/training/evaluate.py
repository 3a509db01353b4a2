"""Evaluate a trained run: `evaluate_run(run_dir, split="test", protocol="1k", examples=0)`.

Rebuilds the head from the run's `config.json` and `data_info.json`, loads its best
checkpoint, scores the split through the head's task and writes, next to the run, one set of
files per evaluation:
- retrieval: `eval-<split>-<protocol>.json` and `eval-<split>-<protocol>.md` (a markdown table);
  with `examples > 0` also `examples-<split>.png` (top retrieved captions per image query and
  top images per caption query);
- sentiment (no protocol): `eval-<split>.json` (with the confusion matrix), `eval-<split>.md`,
  `confusion-<split>.png`, and with `examples > 0` `examples-<split>.png`;
each task writes its own (`Task.report`: `tasks/retrieval_report.py`, `tasks/sentiment_report.py`);
- both: `curves.png`, the per-epoch history of `metrics.json` (`pipelines/training/curves.py`).
The `.md` file holds exactly the table `markdown_table(metrics)` gives (and the CLI prints).
NaN or infinite scores are an error naming the run, and nothing is written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from lighthead.heads.metrics import NonFiniteScoresError
from lighthead.pipelines.tasks.base import run_title
from lighthead.pipelines.tasks.scoring import PRECISIONS, fast_precision
from lighthead.pipelines.training.run_folder import (
    CONFIG,
    DATA_INFO,
    METRICS_FILE,
    config_from_json,
    load_checkpoint,
    read_json,
    read_metrics,
    read_run_config,
    weights_to_load,
)

FIVE_K = 5000  # test images of the COCO 5K protocol


def load_run(run_dir: str | os.PathLike, device: str | None = None) -> dict[str, Any]:
    """The head of a run (best checkpoint, eval mode) with its task, configs and device."""
    from lighthead.heads.base import DataInfo
    from lighthead.heads.build import head_class
    from lighthead.pipelines.tasks import TASKS
    from lighthead.pipelines.training.loop import LoopConfig, pick_device
    from lighthead.store import open_store

    run = Path(run_dir)
    config_path = run / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: is {run} a run written by `lighthead train heads`?")
    run_config = read_run_config(config_path)
    info_path = run / DATA_INFO
    data_info = read_json(info_path)
    cls = head_class(run_config["head"])
    cfg = config_from_json(cls.config_class, run_config["config"], config_path, "config")
    loop = config_from_json(LoopConfig, run_config["loop"], config_path, "loop")
    store = open_store(run_config["store"])
    task = TASKS.get(cls.task)(store, cfg, run_config["dataset"], loop.task_options())
    dev = pick_device(device)
    try:
        head = cls.from_config(cfg, DataInfo.of(data_info)).to(dev)
    except (TypeError, ValueError) as e:  # sizes of the wrong type or value
        raise ValueError(
            f"{info_path}: its sizes do not build a {run_config['head']} head ({e}); the file is damaged"
        ) from None
    load_checkpoint(weights_to_load(run), head, device=dev)
    head.eval()
    return {"head": head, "task": task, "config": run_config, "device": dev, "run": run}


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    protocol: str = "1k",
    examples: int = 0,
    device: str | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Score a run on `split`; writes JSON + markdown (+ figures) into the run (module docstring).

    precision: "fp32" or "bf16" products when scoring retrieval pairs (None: the run's
    `eval_precision`, fp32 unless set); recorded in the JSON. Returns the metrics as written to
    the JSON, plus "files": every file written, in order.
    """
    if protocol not in ("1k", "5k"):
        raise ValueError(f"protocol must be 1k or 5k, got {protocol!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    ctx = load_run(run_dir, device)
    head, task, run = ctx["head"], ctx["task"], ctx["run"]
    if precision:
        task.options.eval_precision = precision
    if task.options.eval_precision == "bf16" and fast_precision(ctx["device"]) != "bf16":
        warnings.warn(
            f"{ctx['device']} has no native bfloat16 products: bf16 scoring will be slower than fp32", stacklevel=2
        )
    if not task.has_split(split):
        raise ValueError(f"the store of {run} has no {split!r} split; splits: {', '.join(task.splits()) or 'none'}")
    try:
        metrics = task.evaluate(head, split, ctx["device"], protocol=protocol)
    except NonFiniteScoresError as e:  # never a rank: NaN would otherwise score as a perfect match
        raise NonFiniteScoresError(f"{run}: {split} split: {e}") from None
    if protocol == "5k" and metrics.get("n_images", FIVE_K) < FIVE_K:
        warnings.warn(
            f"--protocol 5k: the {split} split of {run} has {metrics['n_images']:,} images, not "
            f"{FIVE_K:,}; scored all {metrics['n_images']:,} as one set (not comparable to COCO 5K "
            "results)",
            stacklevel=2,
        )
    metrics = {"head": ctx["config"]["head"], "dataset": ctx["config"]["dataset"], **metrics}
    metrics, files = task.report(head, split, ctx["device"], run, metrics, protocol=protocol, examples=examples)
    curves = _draw_curves(run)
    return {**metrics, "files": [str(f) for f in files + ([curves] if curves else [])]}


def _draw_curves(run: Path) -> Path | None:
    """`curves.png` from the run's metrics.json (None when the run has no epoch history)."""
    from lighthead.pipelines.training.curves import draw_curves

    path = run / METRICS_FILE
    if not path.is_file():
        return None
    summary = read_metrics(path)
    return draw_curves(summary, run / "curves.png") if summary.get("history") else None


def markdown_table(metrics: dict[str, Any]) -> str:
    """The one-run markdown table `lighthead evaluate` prints and writes: its task's table (the
    retrieval columns when present, else the sentiment table)."""
    from lighthead.pipelines.tasks.retrieval_report import markdown_table as retrieval_table
    from lighthead.pipelines.tasks.sentiment_report import markdown_table as sentiment_table

    if "rsum" not in metrics:
        return sentiment_table([metrics], title=run_title(metrics)).rstrip("\n")
    return retrieval_table(metrics)


def wrote_line(files: list[str], run: str | os.PathLike) -> str:
    """ "wrote a, b, c in RUN": every file an evaluation wrote, by name."""
    run = Path(run)
    names = [str(Path(f).relative_to(run)) if Path(f).is_relative_to(run) else str(f) for f in files]
    return f"wrote {', '.join(names)} in {run}"
