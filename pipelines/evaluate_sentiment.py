"""Reports of sentiment runs (ITIN, ITM, text-only): JSON, a markdown table and figures.

`report(task, head, split, device, out_dir)` writes into `out_dir` (`lighthead evaluate RUN`
calls it for sentiment runs):
- `sentiment-<split>.json`: the task's metrics plus the confusion matrix (rows = truth);
- `sentiment-<split>.md`: the metrics as a markdown table;
- `confusion-<split>.png`: the confusion matrix;
- `examples-<split>.png` (`draw_examples`): for ITM images with their most attended boxes,
  the annotated box and the relevance score (like the ITM paper's Table 7); for ITIN the
  aligned region-word pairs with their gate values (like the ITIN paper's Fig. 7).
`markdown_table(rows)` lays out several runs' metrics side by side (sweeps, ablations).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lighthead.pipelines.datasets.base import SENTIMENTS

# Columns of the markdown table, in order, with their headers; absent keys are skipped.
COLUMNS = [
    ("accuracy", "Acc"), ("macro_f1", "Macro-F1"), ("relevance_accuracy", "Rel. Acc"),
    ("relevance_precision", "Rel. P"), ("relevance_recall", "Rel. R"), ("relevance_f1", "Rel. F1"),
    ("alignment_kl", "Align KL"), ("alignment_r1", "R@1"), ("alignment_r3", "R@3"), ("alignment_r5", "R@5"),
    ("n", "N"),
]
BOX_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4"]
COLOUR_NAMES = ["red", "green", "blue", "orange", "purple", "cyan"]  # of BOX_COLOURS, for the text


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, classes: int = 3) -> np.ndarray:
    """(classes, classes) counts, rows = true label, columns = prediction."""
    cm = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(cm, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return cm


def markdown_table(rows: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> str:
    """Metrics of one or more runs as a markdown table (a "run" column when `names` is given)."""
    cols = [(k, h) for k, h in COLUMNS if any(r.get(k) is not None for r in rows)]
    head = (["run"] if names else []) + [h for _, h in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for i, r in enumerate(rows):
        cells = [str(names[i])] if names else []
        for k, _ in cols:
            v = r.get(k)
            cells.append("n/a" if v is None else f"{v:d}" if isinstance(v, int) else f"{v:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(task: Any, head: Any, split: str, device: torch.device, out_dir: Path, examples: int = 4,
           limit: int = 0, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate `head` on `split` (unless `metrics` are given) and write the JSON with the
    confusion matrix, the table and the figures into `out_dir`; returns the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        metrics = task.evaluate(head, split, device, limit=limit)
    pred = task.predict(head, split, device, limit)
    cm = confusion_matrix(pred["label"], pred["logits"].argmax(-1))
    full = {**metrics, "confusion": cm.tolist(), "classes": list(SENTIMENTS)}
    (out_dir / f"sentiment-{split}.json").write_text(json.dumps(full, indent=1))
    (out_dir / f"sentiment-{split}.md").write_text(markdown_table([metrics]))
    draw_confusion(cm, out_dir / f"confusion-{split}.png", title=f"{type(head).__name__} on {split}")
    if examples:
        draw_examples(task, head, split, device, examples, out_dir / f"examples-{split}.png")
    return metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(cm: np.ndarray, path: Path, title: str = "") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(3), SENTIMENTS)
    ax.set_yticks(range(3), SENTIMENTS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


# -- qualitative examples -----------------------------------------------------------------

def _image(path: str, size: tuple[float, float]) -> np.ndarray:
    """The image as an array, or a grey canvas of `size` (w, h) when the file is gone."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        w, h = max(int(size[0]), 1), max(int(size[1]), 1)
        return np.full((h, w, 3), 200, dtype=np.uint8)


def _box(ax: Any, box: Sequence[float], colour: str, label: str = "", width: float = 2.0,
         below: bool = False) -> None:
    import matplotlib.patches as patches

    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=width))
    if label:
        ax.text(x1, y2 if below else y1, label, color="white", fontsize=7, va="top" if below else "bottom",
                bbox={"facecolor": colour, "pad": 1, "lw": 0})


def _plain(text: str) -> str:
    """Text for matplotlib without math mode (`$T$` stays literal)."""
    return text.replace("$", r"\$")


def token_strings(task: Any, part: Any, positions: Sequence[int]) -> list[list[str]]:
    """Token strings of records `positions`: decoded with the encoder's tokenizer when it is
    on disk (the feature set records its path), else "t0", "t1", ..."""
    fs = task.store[task.sets["tokens"]]
    ids = [part.text_ids[p] for p in positions]
    lengths = [len(x) for x in fs.get_batch(ids, ["features"])["features"]]
    if "input_ids" in fs.fields:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(fs.attrs["path"], local_files_only=True)
            rows = fs.get_batch(ids, ["input_ids"])["input_ids"]
            return [tok.convert_ids_to_tokens([int(i) for i in x]) for x in rows]
        except Exception:  # no tokenizer files here: numbered tokens still show the weights
            pass
    return [[f"t{j}" for j in range(n)] for n in lengths]


def draw_examples(task: Any, head: Any, split: str, device: torch.device, n: int, path: Path) -> Path:
    """A figure of `n` test examples; what it shows depends on what the head explains."""
    plt = _pyplot()
    part = task._require(split)
    pick = _pick(part, n)
    batch = part.batch(np.array(pick), tuple(head.inputs))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    was_training = head.training
    head.eval()
    with torch.no_grad():
        out = head.explain(batch) if hasattr(head, "explain") else {"logits": head(batch)}
    head.train(was_training)
    out = {k: v.float().cpu().numpy() for k, v in out.items()}
    boxes = None
    name = task.sets.get("regions")
    regions = task.store[name] if name and name in task.store else None
    if regions is not None and "boxes" in regions.fields:
        image_ids = [part.image_ids[part.image_pos[p]] for p in pick]
        boxes = [np.asarray(b) for b in regions.get_batch(image_ids, ["boxes"])["boxes"]]
    tokens = token_strings(task, part, pick) if "attn" in out else None
    fig, axes = plt.subplots(len(pick), 2, figsize=(9, 3.2 * len(pick)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.3]})
    for row, p in enumerate(pick):
        rec = part.records[p]
        ax_img, ax_txt = axes[row]
        b = boxes[row] if boxes is not None else np.zeros((0, 4))
        size = (b[:, 2].max(), b[:, 3].max()) if len(b) else (64, 64)
        ax_img.imshow(_image(rec.image_path, size))
        ax_img.axis("off")
        ax_txt.axis("off")
        pred = int(out["logits"][row].argmax())
        lines = [f"true: {SENTIMENTS[rec.label]}   predicted: {SENTIMENTS[pred]}", ""]
        text = rec.texts[0] if not rec.target else f"{rec.texts[0]}\ntarget: {rec.target}"
        lines.append(text)
        if "align" in out:  # ITM: the top-3 regions of D, the annotated box, P(r)
            lines += _itm_panel(ax_img, rec, out, row, b)
        elif "attn" in out:  # ITIN: regions, their words and gates
            lines += _itin_panel(ax_img, out, row, b, tokens[row])
        ax_txt.text(0, 1, _plain("\n".join(lines)), va="top", fontsize=8, wrap=True, family="monospace")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _pick(part: Any, n: int) -> list[int]:
    """Up to n records of distinct images: annotated related targets first (they have a box to
    show), then the others."""
    related = [i for i, r in enumerate(part.records) if r.extra.get("relevance") == 1 and r.extra.get("box")]
    picked: list[int] = []
    seen: set[str] = set()
    for pool, quota in ((related, (n + 1) // 2), (range(len(part.records)), n)):
        for i in pool:
            if len(picked) >= quota:
                break
            if part.records[i].image_id not in seen:
                picked.append(i)
                seen.add(part.records[i].image_id)
    return picked


def _itm_panel(ax: Any, rec: Any, out: dict[str, np.ndarray], row: int, boxes: np.ndarray) -> list[str]:
    d = out["align"][row]
    top = np.argsort(-d)[:3]
    if rec.extra.get("box"):
        _box(ax, rec.extra["box"], BOX_COLOURS[1], "annotated", width=3.5, below=True)
    for rank, i in enumerate(top):
        if i < len(boxes):
            _box(ax, boxes[i], BOX_COLOURS[0], f"#{rank + 1} D={d[i]:.2f}", width=2.5 - 0.5 * rank)
    lines = ["", f"image-target relevance P(r) = {out['relevance'][row]:.4f}"]
    if rec.extra.get("relevance") is not None:
        lines.append(f"annotated: {'related' if rec.extra['relevance'] == 1 else 'unrelated'}")
    lines.append("top regions of D: " + ", ".join(f"{int(i)} ({d[i]:.3f})" for i in top))
    return lines


def _itin_panel(ax: Any, out: dict[str, np.ndarray], row: int, boxes: np.ndarray, tokens: list[str]) -> list[str]:
    attn, gate, alpha = out["attn"][row], out["gate"][row], out["alpha"][row]
    lines = [""]
    for i in range(attn.shape[0]):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        if i < len(boxes):
            _box(ax, boxes[i], colour, f"region {i}  g={gate[i]:.3f}")
        w = attn[i][: len(tokens)]
        top = np.argsort(-w)[:4]
        words = ", ".join(f"{tokens[j]} ({w[j]:.2f})" for j in top)
        name = COLOUR_NAMES[i % len(COLOUR_NAMES)]
        lines.append(f"region {i} ({name} box): gate {gate[i]:.4f}, pooling {alpha[i]:.2f}")
        lines.append(f"   words: {words}")
    return lines
