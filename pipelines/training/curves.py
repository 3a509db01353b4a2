"""Training curves of a run: `curves.png` from the per-epoch history of its `metrics.json`.

    draw_curves(json.loads(Path("runs/casc/metrics.json").read_text()), "runs/casc/curves.png")

Two panels: the training losses per epoch (the total `loss` and every part the head reports,
e.g. CASC's `triplet` and `bce`), and the validation selection metric (`rsum`, `accuracy`)
for the epochs that were validated, with the best epoch marked. `curve_series` gives the
plotted numbers, so they can be checked against `metrics.json`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Per-epoch entries that are bookkeeping, not losses.
NOT_LOSSES = ("epoch", "samples", "seconds", "samples_per_s", "val")


def curve_series(summary: dict[str, Any]) -> dict[str, Any]:
    """The series plotted from a metrics.json dict: {"losses": {name: (epochs, values)},
    "val": (metric, epochs, values), "best_epoch": int}. A loss part missing from some epoch
    (a head that reports it only in some phases) is plotted where present."""
    history = summary.get("history") or []
    names = [k for h in history for k, v in h.items() if k not in NOT_LOSSES and isinstance(v, (int, float))]
    losses = {}
    for name in dict.fromkeys(names):  # unique, in first-seen order ("loss" first)
        pts = [(h["epoch"], float(h[name])) for h in history if isinstance(h.get(name), (int, float))]
        losses[name] = ([e for e, _ in pts], [v for _, v in pts])
    metric = summary.get("selection_metric") or ""
    val = [
        (h["epoch"], float(h["val"][metric]))
        for h in history
        if isinstance(h.get("val"), dict) and isinstance(h["val"].get(metric), (int, float))
    ]
    return {
        "losses": losses,
        "val": (metric, [e for e, _ in val], [v for _, v in val]),
        "best_epoch": summary.get("best_epoch"),
    }


def curves_figure(series: dict[str, Any], title: str = "") -> Any:
    """The matplotlib figure of `curve_series` (losses left, validation metric right)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, (epochs, values) in series["losses"].items():
        ax_loss.plot(epochs, values, marker="o", markersize=3, label=name, linewidth=2 if name == "loss" else 1)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean per sample)")
    if series["losses"]:
        ax_loss.legend(fontsize=8)
    metric, epochs, values = series["val"]
    if epochs:
        ax_val.plot(epochs, values, marker="o", markersize=3, color="tab:green", label=f"val {metric}")
        best = series.get("best_epoch")
        if best in epochs:
            ax_val.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best epoch {best}")
        ax_val.legend(fontsize=8)
    else:
        ax_val.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=ax_val.transAxes)
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel(f"validation {metric}".strip())
    for ax in (ax_loss, ax_val):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def draw_curves(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `curves.png` (or `path`) for a metrics.json dict; returns the path."""
    title = f"{summary.get('head', '')} on {summary.get('dataset', '')}".strip()
    fig = curves_figure(curve_series(summary), title if title != "on" else "")
    import matplotlib.pyplot as plt  # after curves_figure chose the Agg backend

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
