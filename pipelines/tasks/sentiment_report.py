"""Reports of sentiment runs (ITIN, ITM, text-only): JSON, a markdown table and figures.

`report(task, head, split, device, out_dir)` writes into `out_dir` (`lighthead evaluate RUN`
calls it for sentiment runs; a sentiment evaluation has no protocol, so no names carry one):
- `eval-<split>.json`: the task's metrics plus the confusion matrix (rows = truth);
- `eval-<split>.md`: the metrics as the markdown table `lighthead evaluate` prints;
- `confusion-<split>.png`: the confusion matrix;
- `examples-<split>.png` (`draw_examples`, with `examples > 0`): for ITM images with their most
  attended boxes, the annotated box and the relevance score (like the ITM paper's Table 7); for
  ITIN the aligned region-word pairs with their gate values (like the ITIN paper's Fig. 7).
`markdown_table(rows)` lays out one or several runs' metrics (sweeps, ablations) in that table.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lighthead.pipelines.datasets.base import SENTIMENTS
from lighthead.pipelines.json_files import atomic_json, write_text

# Columns of the markdown table, in order, with their headers; absent keys are skipped. Other
# float metrics get a column too (headed by their key, before N), so a new metric just appears.
COLUMNS = [
    ("accuracy", "Acc"),
    ("macro_f1", "Macro-F1"),
    ("weighted_f1", "Weighted-F1"),
    ("relevance_accuracy", "Rel. Acc"),
    ("relevance_precision", "Rel. P"),
    ("relevance_recall", "Rel. R"),
    ("relevance_f1", "Rel. F1"),
    ("alignment_kl", "Align KL"),
    ("alignment_r1", "R@1"),
    ("alignment_r3", "R@3"),
    ("alignment_r5", "R@5"),
    ("n", "N"),
]
# Cell formats: percentages to one decimal (as the papers' tables), the KL (in nats) to three.
FORMATS = {"alignment_kl": ".3f"}
BOX_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4"]
COLOUR_NAMES = ["red", "green", "blue", "orange", "purple", "cyan"]  # of BOX_COLOURS, for the text


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, classes: int = 3) -> np.ndarray:
    """(classes, classes) counts, rows = true label, columns = prediction."""
    cm = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(cm, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return cm


def table_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, header) of the table: COLUMNS present in any row, other float metrics before N."""
    known = [(k, h) for k, h in COLUMNS if any(r.get(k) is not None for r in rows)]
    listed = {k for k, _ in COLUMNS}
    extra = [k for r in rows for k, v in r.items() if isinstance(v, float) and k not in listed]
    extra = [(k, k) for k in dict.fromkeys(extra)]  # unique, in first-seen order
    tail = [c for c in known if c[0] == "n"]
    return [c for c in known if c[0] != "n"] + extra + tail


def cell(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):d}"
    return f"{float(value):{FORMATS.get(key, '.1f')}}"


def markdown_table(rows: Sequence[dict[str, Any]], names: Sequence[str] | None = None, title: str = "") -> str:
    """Metrics of one or more runs as a markdown table (a "run" column when `names` is given),
    under a bold `title` when one is given."""
    cols = table_columns(rows)
    head = (["run"] if names else []) + [h for _, h in cols]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * bool(names) + ["---:"] * len(cols)) + "|"]
    for i, r in enumerate(rows):
        cells = [str(names[i])] if names else []
        cells += [cell(k, r.get(k)) for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(
    task: Any,
    head: Any,
    split: str,
    device: torch.device,
    out_dir: Path,
    examples: int = 4,
    limit: int = 0,
    metrics: dict[str, Any] | None = None,
    title: str = "",
) -> tuple[dict[str, Any], list[Path]]:
    """Evaluate `head` on `split` (unless `metrics` are given) and write the JSON with the
    confusion matrix, the table (under `title`) and the figures into `out_dir`; returns the
    metrics as written to the JSON and the files written, in order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        metrics = task.evaluate(head, split, device, limit=limit)
    pred = task.predict(head, split, device, limit)
    cm = confusion_matrix(pred["label"], pred["logits"].argmax(-1))
    full = {**metrics, "confusion": cm.tolist(), "classes": list(SENTIMENTS)}
    files = [out_dir / f"eval-{split}.json", out_dir / f"eval-{split}.md", out_dir / f"confusion-{split}.png"]
    atomic_json(files[0], full)
    write_text(files[1], markdown_table([metrics], title=title))
    draw_confusion(cm, files[2], title=f"{type(head).__name__} on {split}")
    if examples:
        files.append(draw_examples(task, head, split, device, examples, out_dir / f"examples-{split}.png"))
    return full, files


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


def _box(ax: Any, box: Sequence[float], colour: str, label: str = "", width: float = 2.0, below: bool = False) -> None:
    import matplotlib.patches as patches

    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=width))
    if label:
        ax.text(
            x1,
            y2 if below else y1,
            label,
            color="white",
            fontsize=7,
            va="top" if below else "bottom",
            bbox={"facecolor": colour, "pad": 1, "lw": 0},
        )


def _plain(text: str) -> str:
    """Text for matplotlib without math mode (`$T$` stays literal)."""
    return text.replace("$", r"\$")


def load_tokenizer(attrs: dict[str, Any]) -> Any:
    """The tokenizer a text feature set records (`tokenizer_path`, else `tokenizer` looked up as
    at extraction: registered name, cached id or folder); raises ValueError saying why not.

    The recorded path is only a hint (a store may come from elsewhere): a folder is used when it
    holds no code of its own (RemoteCodeError otherwise, never a fallback) and, where the set
    records `tokenizer_vocab_sha256`, when its vocabulary has that digest."""
    from lighthead.extract.text import RemoteCodeError, resolve_model, vocab_sha256

    if "tokenizer" not in attrs:
        raise ValueError(
            "it records no tokenizer (extracted before feature sets recorded one; "
            "re-extract it into a new store to see words)"
        )
    from transformers import AutoTokenizer

    why = []
    want = attrs.get("tokenizer_vocab_sha256")
    for where in dict.fromkeys(str(x) for x in (attrs.get("tokenizer_path"), attrs["tokenizer"]) if x):
        try:
            folder = resolve_model(where)
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        except RemoteCodeError:
            raise
        except (OSError, ValueError) as e:  # FileNotFoundError is an OSError
            why.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        if want and vocab_sha256(tok) != want:
            why.append(f"{folder}: a different tokenizer (its vocabulary is not the one recorded)")
            continue
        return tok
    raise ValueError(f"its tokenizer {attrs['tokenizer']!r} cannot be loaded here: {'; '.join(why)}")


def token_strings(task: Any, part: Any, positions: Sequence[int]) -> list[list[str]]:
    """Token strings of records `positions`, decoded with the tokenizer the feature set records;
    without one a warning says why and the tokens are numbered "t0", "t1", ..."""
    from lighthead.extract.text import RemoteCodeError

    name = task.sets["tokens"]
    fs = task.store[name]
    ids = [part.text_ids[p] for p in positions]
    try:
        if "input_ids" not in fs.fields:
            raise ValueError("it stores no input_ids")
        tok = load_tokenizer(fs.attrs)
    except RemoteCodeError:
        raise  # a folder that would run code is refused outright, not worked around
    except ValueError as e:
        warnings.warn(f"{name}: the examples show token numbers (t0, t1, ...) instead of words: {e}", stacklevel=2)
        lengths = [len(x) for x in fs.get_batch(ids, ["features"])["features"]]
        return [[f"t{j}" for j in range(n)] for n in lengths]
    rows = fs.get_batch(ids, ["input_ids"])["input_ids"]
    return [tok.convert_ids_to_tokens([int(i) for i in x]) for x in rows]


def example_panels(task: Any, head: Any, split: str, device: torch.device, n: int) -> list[dict[str, Any]]:
    """What the examples figure shows for `n` test records, one dict per record: "record",
    "lines" (the text beside the image) and "boxes" ((box, colour, label, width, below) to draw)."""
    part = task._require(split)
    pick = _pick(part, n)
    batch = part.batch(np.array(pick), tuple(head.inputs))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    was_training = head.training
    head.eval()
    with torch.no_grad():
        out = head.explain(batch)
    head.train(was_training)
    out = {k: v.float().cpu().numpy() for k, v in out.items()}
    boxes = None
    name = task.sets.get("regions")
    regions = task.store[name] if name and name in task.store else None
    if regions is not None and "boxes" in regions.fields:
        image_ids = [part.image_ids[part.image_pos[p]] for p in pick]
        boxes = [np.asarray(b) for b in regions.get_batch(image_ids, ["boxes"])["boxes"]]
    tokens = token_strings(task, part, pick) if "attn" in out else None
    panels = []
    for row, p in enumerate(pick):
        rec = part.records[p]
        b = boxes[row] if boxes is not None else np.zeros((0, 4))
        pred = int(out["logits"][row].argmax())
        lines = [f"true: {SENTIMENTS[rec.label]}   predicted: {SENTIMENTS[pred]}", ""]
        lines.append(rec.texts[0] if not rec.target else f"{rec.texts[0]}\ntarget: {rec.target}")
        draw: list[tuple] = []
        if "align" in out:  # ITM: the top-3 regions of D, the annotated box, P(r)
            lines += _itm_panel(draw, rec, out, row, b)
        elif "attn" in out:  # ITIN: regions, their words and gates
            lines += _itin_panel(draw, out, row, b, tokens[row])
        panels.append({"record": rec, "lines": lines, "boxes": draw, "region_boxes": b})
    return panels


def draw_examples(task: Any, head: Any, split: str, device: torch.device, n: int, path: Path) -> Path:
    """A figure of `n` test examples (`example_panels`); what it shows depends on what the head explains."""
    plt = _pyplot()
    panels = example_panels(task, head, split, device, n)
    fig, axes = plt.subplots(
        len(panels), 2, figsize=(9, 3.2 * len(panels)), squeeze=False, gridspec_kw={"width_ratios": [1, 1.3]}
    )
    for (ax_img, ax_txt), panel in zip(axes, panels):
        b = panel["region_boxes"]
        size = (b[:, 2].max(), b[:, 3].max()) if len(b) else (64, 64)
        ax_img.imshow(_image(panel["record"].image_path, size))
        for box, colour, label, width, below in panel["boxes"]:
            _box(ax_img, box, colour, label, width=width, below=below)
        ax_img.axis("off")
        ax_txt.axis("off")
        ax_txt.text(0, 1, _plain("\n".join(panel["lines"])), va="top", fontsize=8, wrap=True, family="monospace")
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


def _itm_panel(draw: list, rec: Any, out: dict[str, np.ndarray], row: int, boxes: np.ndarray) -> list[str]:
    d = out["align"][row]
    top = np.argsort(-d)[:3]
    if rec.extra.get("box"):
        draw.append((rec.extra["box"], BOX_COLOURS[1], "annotated", 3.5, True))
    for rank, i in enumerate(top):
        if i < len(boxes):
            draw.append((boxes[i], BOX_COLOURS[0], f"#{rank + 1} D={d[i]:.2f}", 2.5 - 0.5 * rank, False))
    lines = ["", f"image-target relevance P(r) = {out['relevance'][row]:.4f}"]
    if rec.extra.get("relevance") is not None:
        lines.append(f"annotated: {'related' if rec.extra['relevance'] == 1 else 'unrelated'}")
    lines.append("top regions of D: " + ", ".join(f"{int(i)} ({d[i]:.3f})" for i in top))
    return lines


def _itin_panel(draw: list, out: dict[str, np.ndarray], row: int, boxes: np.ndarray, tokens: list[str]) -> list[str]:
    attn, gate, alpha = out["attn"][row], out["gate"][row], out["alpha"][row]
    lines = [""]
    for i in range(attn.shape[0]):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        if i < len(boxes):
            draw.append((boxes[i], colour, f"region {i}  g={gate[i]:.3f}", 2.0, False))
        w = attn[i][: len(tokens)]
        top = np.argsort(-w)[:4]
        words = ", ".join(f"{tokens[j]} ({w[j]:.2f})" for j in top)
        name = COLOUR_NAMES[i % len(COLOUR_NAMES)]
        lines.append(f"region {i} ({name} box): gate {gate[i]:.4f}, pooling {alpha[i]:.2f}")
        lines.append(f"   words: {words}")
    return lines
