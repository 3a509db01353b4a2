"""The end of a sweep: trials ranked by the validation metric, the best config, and plots.

Outputs in the sweep directory: `summary.csv` (one row per trial: rank, id, status, the
swept values, the metrics), `best.json` (the best trial's overrides and metrics) and
`sweep.png` (the metric against each swept value).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lighthead.pipelines.json_files import atomic_json
from lighthead.pipelines.sweep.spec import Trial
from lighthead.pipelines.sweep.trial import is_finished, read_trial, trial_dir
from lighthead.pipelines.training.run_folder import read_json

# Default ranking metric, first found wins: retrieval, then sentiment.
DEFAULT_METRICS = ("rsum", "macro_f1", "accuracy")
FAILED = "failed"  # sub-folder of the sweep directory: one JSON per trial that ran out of retries


@dataclass
class Row:
    """One trial in the summary."""

    trial: Trial  # what was run
    status: str  # "done", "failed" or "pending"
    metrics: dict[str, float]  # flattened numeric metrics ("val/rsum"), empty unless done
    wall_s: float | None = None  # training time of the finished attempt
    error: str = ""  # last error of a failed trial
    selection: str | None = None  # the trainer's own selection metric name ("rsum"), if it says


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metric dicts -> {"val/rsum": 412.3, ...}; non-numeric leaves are dropped."""
    flat: dict[str, float] = {}
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, name + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[name] = float(v)
    return flat


def collect(out: Path | str, trials: Sequence[Trial]) -> list[Row]:
    """The state of every trial of the sweep, read from its folder (the source of truth)."""
    rows = []
    for t in trials:
        path = trial_dir(out, t.id)
        failed = Path(out) / FAILED / f"{t.id}.json"
        if is_finished(path):
            rec = read_trial(path)
            sel = rec["metrics"].get("selection_metric")
            rows.append(
                Row(
                    t,
                    "done",
                    flatten(rec["metrics"]),
                    rec.get("wall_s"),
                    selection=sel if isinstance(sel, str) else None,
                )
            )
        elif failed.is_file():
            rows.append(Row(t, "failed", {}, error=read_json(failed, optional={"error": str}).get("error", "")))
        else:
            rows.append(Row(t, "pending", {}))
    return rows


def _candidates(name: str, keys: Iterable[str]) -> list[str]:
    """Keys naming metric `name`: exact, then validation ones ("val/x", "val_x"), then others."""
    keys = list(keys)
    if name in keys:
        return [name]
    tail = [k for k in keys if k.endswith(("/" + name, "_" + name, "." + name))]
    # Validation metrics select a trial; test metrics must not (they would leak the test set).
    tail.sort(key=lambda k: (0 if "val" in k else 1 if "best" in k else 3 if "test" in k else 2, k))
    return tail


def pick_metric(rows: Sequence[Row], requested: str | None) -> str | None:
    """The metric key to rank by; None when no trial has finished yet.

    Without a request: the trainer's selection metric (metrics.json "selection_metric"),
    else the first of DEFAULT_METRICS found; validation entries win over test ones.
    """
    keys = sorted({k for r in rows for k in r.metrics})
    if not keys:
        return None
    selections = sorted(r.selection for r in rows if r.selection)
    if requested:
        names = [requested]
    else:
        names = ([max(selections, key=selections.count)] if selections else []) + list(DEFAULT_METRICS)
    for name in names:
        found = _candidates(name, keys)
        if found:
            return found[0]
    if requested:
        raise ValueError(f"no metric {requested!r} in the trials' metrics; found: {', '.join(keys)}")
    return keys[0]


def rank(rows: Sequence[Row], metric: str | None, maximise: bool = True) -> list[Row]:
    """Finished trials best first (by `metric`), then failed, then pending. A finished trial
    whose metric is missing, NaN or infinite ranks after every finished one with a number."""

    def key(r: Row) -> tuple[int, float]:
        v = r.metrics.get(metric, math.nan) if metric else math.nan
        if r.status != "done" or not math.isfinite(v):
            return (1 if r.status == "done" else 2 if r.status == "failed" else 3, 0.0)
        return (0, -v if maximise else v)

    return sorted(rows, key=key)


def write_csv(rows: Sequence[Row], metric: str | None, path: Path) -> None:
    """summary.csv: rank, trial, status, swept values, the ranking metric, other metrics.

    Numbers are written in full (Python's shortest round-tripping repr): reading the file back
    gives the exact floats; only the printed table rounds them.
    """
    swept = _swept_keys(rows)
    others = sorted({k for r in rows for k in r.metrics} - {metric})
    metric_cols = ([metric] if metric else []) + others
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "trial", "status", *swept, *metric_cols, "wall_s", "error"])
        for i, r in enumerate(rows, 1):
            params = r.trial.params
            w.writerow(
                [i if r.status == "done" else "", r.trial.id, r.status]
                + [params.get(k, "") for k in swept]
                + [_exact(r.metrics.get(m)) for m in metric_cols]
                + [_exact(r.wall_s), r.error]
            )
    tmp.replace(path)


def write_best(rows: Sequence[Row], metric: str | None, path: Path) -> dict[str, Any] | None:
    """best.json: the best finished trial's id, overrides and metrics; a NaN or infinite
    metric never wins (`rows` ranked by `rank`)."""
    best = next((r for r in rows if r.status == "done" and math.isfinite(r.metrics.get(metric, math.nan))), None)
    if best is None:
        return None
    obj = {
        "trial": best.trial.id,
        "metric": metric,
        "value": best.metrics[metric],
        "head": best.trial.head,
        "overrides": dict(best.trial.overrides),
        "epochs": best.trial.epochs,
        "metrics": best.metrics,
    }
    atomic_json(path, obj)
    return obj


def print_table(rows: Sequence[Row], metric: str | None, console: Any, max_metrics: int = 3) -> None:
    """The ranked trials as a rich table: swept values, the metric, a few other metrics."""
    from rich.table import Table

    swept = _swept_keys(rows)
    # A few more of the metric's own group (val/...) that differ between trials; never test ones.
    group = metric.rpartition("/")[0] + "/" if metric and "/" in metric else ""
    keys = sorted({k for r in rows for k in r.metrics} - {metric})
    others = [k for k in keys if "test" not in k and len({r.metrics.get(k) for r in rows if r.status == "done"}) > 1]
    others = sorted(others, key=lambda k: (not k.startswith(group), k))[:max_metrics]
    table = Table(title=f"trials by {metric}" if metric else "trials")
    table.add_column("#", justify="right")
    table.add_column("trial", no_wrap=True)
    for k in swept:
        table.add_column(k)
    if metric:
        table.add_column(metric, justify="right", style="bold")
    for k in others:
        table.add_column(k, justify="right")
    table.add_column("train s", justify="right")
    table.add_column("status")
    for i, r in enumerate(rows, 1):
        cells = [str(i) if r.status == "done" else "", r.trial.id]
        cells += [r.trial.params.get(k, "") for k in swept]
        cells += [fmt_metric(r.metrics.get(m)) for m in ([metric] if metric else []) + others]
        cells += [fmt_seconds(r.wall_s), r.status if not r.error else f"{r.status}: {r.error[:60]}"]
        table.add_row(*cells)
    console.print(table)


def plot(
    rows: Sequence[Row], metric: str | None, path: Path, maximise: bool = True, sampled: Iterable[str] = ()
) -> Path | None:
    """sweep.png: one panel per swept key, the metric of each finished trial against its value.

    Grid keys also get a line through the best trial at each value; `sampled` keys (drawn
    from a range) only the scatter, since their values rarely repeat.
    """
    sampled = set(sampled)
    swept = _swept_keys(rows)
    done = [r for r in rows if r.status == "done" and metric in r.metrics]
    if not swept or not done:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; workers and clusters have no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(swept), figsize=(4 * len(swept), 3.4), squeeze=False)
    best = done[0]  # rows arrive ranked
    for ax, key in zip(axes[0], swept):
        raw = [r.trial.params[key] for r in done]
        ys = [r.metrics[metric] for r in done]
        xs_num = _as_floats(raw)
        if xs_num is not None:
            xs: list[Any] = xs_num
            if min(xs_num) > 0 and max(xs_num) / min(xs_num) >= 100:
                ax.set_xscale("log")
            if key not in sampled:
                # The best value seen at each x, as a line over the scatter of all trials.
                per_x: dict[float, float] = {}
                for x, y in zip(xs_num, ys):
                    per_x[x] = max(per_x.get(x, y), y) if maximise else min(per_x.get(x, y), y)
                line = sorted(per_x.items())
                ax.plot([p[0] for p in line], [p[1] for p in line], color="0.6", lw=1, zorder=1)
            bx: Any = float(best.trial.params[key])
        else:
            cats = sorted(set(raw))
            xs = [cats.index(v) for v in raw]
            ax.set_xticks(range(len(cats)), cats)
            ax.set_xlim(-0.5, len(cats) - 0.5)
            bx = cats.index(best.trial.params[key])
        ax.scatter(xs, ys, s=22, zorder=2)
        ax.scatter([bx], [best.metrics[metric]], marker="*", s=140, color="tab:red", zorder=3, label="best")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize="small")
    fig.suptitle(f"{metric} vs swept values ({len(done)} trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _swept_keys(rows: Sequence[Row]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.trial.swept if k not in keys]
    return keys


def _as_floats(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _exact(v: float | None) -> str:
    """A CSV cell: the number in full (float(cell) == v), "" for none."""
    return "" if v is None else repr(float(v))


def fmt_metric(v: float | None) -> str:
    """A metric for people: 2 decimals (rsum 412.33, accuracy 63.33); small values (a loss of
    0.0123) keep 3 significant digits rather than print as 0.00."""
    if v is None:
        return ""
    if v != 0 and abs(v) < 0.1:
        return f"{v:.3g}"
    return f"{v:.2f}"


def fmt_seconds(v: float | None) -> str:
    """Seconds for people: one decimal (31.4)."""
    return "" if v is None else f"{v:.1f}"
