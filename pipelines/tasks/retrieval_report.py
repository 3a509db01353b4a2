"""Reports of retrieval runs: the JSON, the markdown table and the examples figure.

`report(...)` writes `eval-<split>-<protocol>.json` and `.md` (the table `markdown_table`
gives, which `lighthead evaluate` prints) and, with `examples > 0`, `examples-<split>.png`:
left half: n image queries, each with its top-5 retrieved captions (correct ones marked).
Right half: n caption queries, each with its top-5 retrieved images (the correct one framed).
Images come from the store's thumbnails (any `thumbs/...` feature set), else from the image
files of the records, else a grey placeholder.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from lighthead.pipelines.json_files import atomic_json, write_text
from lighthead.pipelines.tasks.base import run_title

TOP = 5
RETRIEVAL_COLUMNS = [
    ("i2t_r1", "i2t R@1"),
    ("i2t_r5", "R@5"),
    ("i2t_r10", "R@10"),
    ("t2i_r1", "t2i R@1"),
    ("t2i_r5", "R@5"),
    ("t2i_r10", "R@10"),
    ("rsum", "rsum"),
    ("mr", "mR"),
]


def _thumbnail(task: Any, split: str, position: int) -> np.ndarray:
    data = task.split(split)
    thumbs = next((n for n in task.store.names() if n.startswith("thumbs/")), None)
    image_id = data.image_ids[position]
    if thumbs is not None and image_id in task.store[thumbs]:
        return np.transpose(task.store[thumbs][image_id]["thumb"], (1, 2, 0))  # (H, W, 3)
    try:
        from PIL import Image

        with Image.open(data.image_paths[position]) as im:
            return np.asarray(im.convert("RGB").resize((96, 96)))
    except (OSError, ValueError):
        return np.full((64, 64, 3), 200, dtype=np.uint8)


def draw_examples(task: Any, split: str, sims: np.ndarray, n: int, path: Path) -> Path:
    """Save the figure for the first `n` images / captions of `sims` (images x captions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = task.split(split)
    per = task.options.per_image
    n = max(1, min(n, sims.shape[0]))
    fig, axes = plt.subplots(
        n,
        2 + TOP,
        figsize=(2.2 * (2 + TOP) + 4, 2.4 * n),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 3] + [1] * TOP},
    )
    for row in range(n):
        # image query -> captions
        ax_img, ax_txt = axes[row, 0], axes[row, 1]
        ax_img.imshow(_thumbnail(task, split, row))
        ax_img.set_title(f"image {row}", fontsize=8)
        top = np.argsort(-sims[row], kind="stable")[:TOP]
        lines = [("+ " if c // per == row else "- ") + textwrap.shorten(data.texts[c], 60) for c in top]
        ax_txt.text(0, 1, "\n".join(lines), va="top", fontsize=7, family="monospace")
        # caption query -> images
        caption = row * per
        ranked = np.argsort(-sims[:, caption], kind="stable")[:TOP]
        axes[row, 2].set_title(textwrap.shorten(data.texts[caption], 50), fontsize=7, loc="left")
        for k, image in enumerate(ranked):
            ax = axes[row, 2 + k]
            ax.imshow(_thumbnail(task, split, int(image)))
            if image == row:
                for spine in ax.spines.values():
                    spine.set_edgecolor("green")
                    spine.set_linewidth(3)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
        ax_txt.axis("off")
    fig.suptitle(
        f"{split}: top-{TOP} captions per image (+ correct) | top-{TOP} images per caption (green = correct)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def table_title(metrics: dict[str, Any]) -> str:
    """ "<head> on <dataset> <split> (<protocol>, <n> images[, bf16 scoring])"."""
    bf16 = ", bf16 scoring" if metrics.get("precision") == "bf16" else ""
    return f"{run_title(metrics)} ({metrics.get('protocol', '')}, {metrics.get('n_images', '?')} images{bf16})"


def markdown_table(metrics: dict[str, Any]) -> str:
    """One run's retrieval metrics as a titled markdown table (R@1/5/10 both ways, rsum, mR)."""
    cols = RETRIEVAL_COLUMNS
    head = "| " + " | ".join(name for _, name in cols) + " |"
    rule = "|" + "|".join("---:" for _ in cols) + "|"
    row = "| " + " | ".join(f"{metrics[k]:.1f}" for k, _ in cols) + " |"
    return f"**{table_title(metrics)}**\n\n{head}\n{rule}\n{row}"


def report(
    task: Any, head: Any, split: str, device: Any, run: Path, metrics: dict[str, Any], protocol: str, examples: int = 0
) -> tuple[dict[str, Any], list[Path]]:
    """Write the metrics (with the scoring precision) as JSON and as the table, and the examples
    figure when asked; returns the metrics as written and the files, in order."""
    metrics = {**metrics, "precision": task.options.eval_precision}
    stem = f"eval-{split}-{protocol}"
    files = [run / f"{stem}.json", run / f"{stem}.md"]
    atomic_json(files[0], metrics)
    write_text(files[1], markdown_table(metrics) + "\n")
    if examples > 0:
        files.append(Path(task.examples(head, split, device, examples, run / f"examples-{split}.png")))
    return metrics, files
