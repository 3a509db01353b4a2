"""See the stored regions: boxes with "attribute object score" labels drawn on the image, and
the object names a region feature set holds (for `lighthead show` and `store info`).

    from lighthead.pipelines.regions_view import show_regions
    info = show_regions("stores/coco", "391895", "regions.png", image="val2014/....jpg", top=20)

The picture is the image at its own size (one PNG pixel per image pixel; an image above
SHOW_PIXELS is drawn shrunk to that many pixels, boxes with it) with the `top` most confident
regions framed, as bottom-up-attention's demo notebooks draw them (matplotlib, Agg).
Boxes are in the original image's pixels, so the image given must be the one the features came
from: its size is checked against the stored `image_w` / `image_h`. Names come from the Visual
Genome lists (`lighthead.extract.regions.vocab`) when the set's detector has their 1601 classes
and 401 attributes, else ids are shown as numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lighthead.extract.regions import vocab

DPI = 100  # figure dots per inch; the figure is sized so that one PNG pixel is one image pixel
SHOW_PIXELS = 16_000_000  # a larger image is drawn shrunk to this many pixels (about 130 MB to draw)
SUMMARY_ITEMS = 10_000  # `store info` counts object names over at most this many images
TOP_NAMES = 10  # names listed by `store info`


def box_color(i: int) -> tuple[int, int, int]:
    """RGB (0-255) of the i-th box: matplotlib's tab10 cycle."""
    import matplotlib

    r, g, b = matplotlib.colormaps["tab10"].colors[i % 10]
    return round(r * 255), round(g * 255), round(b * 255)


def draw_regions(image: Any, boxes: np.ndarray, labels: Sequence[str], out: str | Path) -> Path:
    """Draw `boxes` ((N, 4) x1, y1, x2, y2 pixels) framed and labelled onto `image` (PIL RGB,
    W x H, changed in place) and save it as a W x H PNG at `out`.

    matplotlib draws only the boxes and labels, on a transparent canvas that is then laid over
    the image: given the image itself (`imshow`), it makes float RGBA copies of it, about 120
    bytes a pixel. So drawing needs about 8 bytes a pixel: the image and the canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from PIL import Image

    out = Path(out)
    w, h = image.size
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    fig.patch.set_alpha(0.0)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    scale = min(w, h)
    width = max(1.5, scale / 300)  # line width in points
    size = max(6.0, min(14.0, scale / 45))  # label font size in points
    for i, ((x1, y1, x2, y2), text) in enumerate(zip(np.asarray(boxes, np.float64), labels)):
        color = tuple(c / 255 for c in box_color(i))
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=width))
        inside = y1 < size * DPI / 72 * 1.5  # no room above the box: the label goes just inside it
        ax.text(
            x1,
            y1 + (1 if inside else -1) * width,
            text,
            fontsize=size,
            color="white",
            va="top" if inside else "bottom",
            ha="left",
            clip_on=True,
            bbox={"facecolor": color, "alpha": 0.75, "pad": 1.5, "edgecolor": "none"},
        )
    canvas.draw()
    overlay = Image.frombuffer("RGBA", (w, h), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)  # (H, W, 4), shared
    image.paste(overlay, (0, 0), overlay)  # its alpha as the mask: the overlay laid over the image
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")
    return out


def region_sets(store: Any) -> list[str]:
    """Feature sets of the store that hold boxes (region features)."""
    return [n for n in store.names() if "boxes" in store[n].fields]


def pick_feature_set(store: Any, item_id: str, name: str | None = None) -> str:
    """`name` (checked), else the first region feature set holding `item_id`."""
    sets = region_sets(store)
    if name is not None:
        if name not in store.names():
            raise KeyError(f"{store.path}: no feature set {name!r}; region sets: {', '.join(sets) or '(none)'}")
        if name not in sets:
            raise ValueError(f"{store.path}: {name} holds no boxes; region sets: {', '.join(sets) or '(none)'}")
        if item_id not in store[name]:
            raise KeyError(f"{item_id}: not in {name} ({len(store[name])} items)")
        return name
    if not sets:
        raise ValueError(f"{store.path}: no region feature set (extract one with --features regions36)")
    holding = [n for n in sets if item_id in store[n]]
    if not holding:
        raise KeyError(f"{item_id}: in no region feature set of {store.path} ({', '.join(sets)})")
    return holding[0]


def recorded_image(store: Any, item_id: str) -> str | None:
    """The image file the store's records give for image id `item_id`, if any."""
    if not store.has_json("records"):
        return None
    return next((r.get("image_path") for r in store.read_json("records") if r.get("image_id") == item_id), None)


def show_regions(
    store_path: str | Path,
    item_id: str,
    out: str | Path,
    image: str | Path | None = None,
    top: int = 20,
    feature_set: str | None = None,
    attr_threshold: float = vocab.ATTR_THRESHOLD,
) -> dict[str, Any]:
    """Draw the `top` most confident stored regions of `item_id` on its image into the PNG `out`.

    image: the image file (default: the one the store's records name). Raises ValueError when its
    size differs from the stored image_w x image_h. Returns what was drawn: feature_set, image,
    size, labels, out.
    """
    from lighthead.extract.images import load_rgb_scaled
    from lighthead.store import open_store

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: --out must name a .png file")
    store = open_store(store_path)
    name = pick_feature_set(store, item_id, feature_set)
    fs = store[name]
    item = fs[item_id]
    if image is None:
        image = recorded_image(store, item_id)
        if image is None:
            raise ValueError(f"{item_id}: the store records no image file for it; pass --image PATH")
    picture, size = load_rgb_scaled(image, SHOW_PIXELS)
    if "image_w" in item and "image_h" in item:
        stored = (int(item["image_w"]), int(item["image_h"]))
        if size != stored:
            raise ValueError(
                f"{image}: the image is {size[0]}x{size[1]} pixels but the regions of "
                f"{item_id} in {name} were extracted from a {stored[0]}x{stored[1]} image; pass the "
                "image they came from"
            )
    order = vocab.region_order(item, top if top > 0 else None)
    if "object_ids" in item:
        labels = vocab.region_labels(
            item, top if top > 0 else None, vg=vocab.uses_vg_vocab(fs.attrs), attr_threshold=attr_threshold
        )
    else:  # imported features without class predictions: number the boxes
        labels = [f"#{i}" for i in order]
    shrink = np.array([picture.width / size[0], picture.height / size[1]] * 2)  # 1 up to SHOW_PIXELS
    draw_regions(picture, np.asarray(item["boxes"], np.float64)[order] * shrink, labels, out)
    return {
        "feature_set": name,
        "image": str(image),
        "size": size,
        "drawn": picture.size,
        "labels": labels,
        "out": str(out),
    }


def object_summary(fs: Any, limit: int = SUMMARY_ITEMS, k: int = TOP_NAMES) -> dict[str, Any] | None:
    """The most frequent object names of a region feature set (over its first `limit` images),
    or None when it stores no object ids."""
    if "object_ids" not in fs.fields or len(fs) == 0:
        return None
    n = min(len(fs), limit)
    ids = fs.get_batch(range(n), ["object_ids"])["object_ids"]  # (n, K) array, or n arrays when K varies
    vg = vocab.uses_vg_vocab(fs.attrs)
    return {
        "top_objects": [[name, count] for name, count in vocab.top_objects(ids, k, vg=vg)],
        "images_counted": n,
        "names": "visual genome" if vg else "class ids",
    }


def add_object_names(store_path: str | Path, summary: dict[str, Any]) -> dict[str, Any]:
    """`store info`'s summary with an "objects" entry (object_summary) per region feature set."""
    from lighthead.store import open_store

    store = open_store(store_path)
    for name, entry in summary.get("feature_sets", {}).items():
        if name in store.names():
            try:
                objects = object_summary(store[name])
            except ValueError as e:  # ids outside the lists: say so, the rest of the summary stands
                objects = {"error": str(e)}
            if objects is not None:
                entry["objects"] = objects
    return summary
