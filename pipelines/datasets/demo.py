"""The demo dataset: generated, deterministic from a seed, small enough for a CPU in minutes.

Each image (192x192 by default) shows one to three coloured shapes on a textured background.
From the layout the generator writes, per image:

- 5 captions (varied templates and synonyms: "a red circle left of a blue square");
- the box of every shape (`extra["boxes"]`, x1 y1 x2 y2 in pixels) and its name;
- a sentiment label by the colour rule below, and a short "post" text ("lovely picture with a
  disc and a box") whose mood word agrees with that label only half of the time and which names
  no colour (so the image carries information the text lacks);
- targets: one per shape, named by its kind only ("circle"; the shapes of an image have
  distinct kinds), related, with its box; plus, when one is left, a kind that is not in the
  image (unrelated, no box); each with a sentence holding `$T$`.

Sentiment rule (documented so results can be checked): every colour has a valence
(`VALENCE`: warm-bright colours +1, dark-cold -1, grey/white 0). An image's label is the sign of
the sum of its shapes' valences (positive > 0, negative < 0, neutral = 0). A target's label is
its own colour's valence; an unrelated target is neutral.

Records: kind "image" (one per image, the 5 captions), kind "post" (one per image, the post
text, the image label) and kind "target" (one per target). Splits: a fixed 80/10/10 by image.
`generate(root)` writes `root/images/*.png` and `root/annotations.json`; the adapter
`load(root)` reads them back and checks every image exists.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from lighthead.pipelines.datasets.base import DATASETS, SENTIMENTS, DatasetError, Record, read_text
from lighthead.store.manifest import atomic_write

COLOURS = {  # name -> RGB
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (130, 50, 160),
    "orange": (240, 140, 30),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
}
VALENCE = {"yellow": 1, "orange": 1, "green": 1, "red": -1, "purple": -1, "black": -1, "blue": 0, "white": 0}
SHAPES = {  # shape -> synonyms used in captions
    "circle": ["circle", "disc", "round shape"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle", "wedge", "pointed shape"],
}
MOOD = {0: ["awful", "gloomy", "sad"], 1: ["ordinary", "plain", "usual"], 2: ["lovely", "cheerful", "great"]}
ANNOTATIONS = "annotations.json"


@dataclass
class Shape:
    kind: str  # "circle", "square" or "triangle"
    colour: str  # key of COLOURS
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


def _label_from_valence(v: int) -> int:
    return SENTIMENTS.index("positive" if v > 0 else "negative" if v < 0 else "neutral")


def _layout(rng: random.Random, size: int) -> list[Shape]:
    """1-3 shapes in distinct cells of a 3x3 grid, jittered, so relations are unambiguous."""
    n = rng.choice([1, 2, 2, 3, 3])
    cells = rng.sample(range(9), n)
    cell = size // 3
    shapes = []
    for c in cells:
        side = rng.randint(int(cell * 0.55), int(cell * 0.9))
        x0 = (c % 3) * cell + rng.randint(0, cell - side)
        y0 = (c // 3) * cell + rng.randint(0, cell - side)
        shapes.append(Shape("", rng.choice(list(COLOURS)), (x0, y0, x0 + side, y0 + side)))
    for s, kind in zip(shapes, rng.sample(list(SHAPES), n)):  # distinct kinds: "the circle" names one shape
        s.kind = kind
    return shapes


def _draw(shapes: list[Shape], rng: random.Random, size: int):
    from PIL import Image, ImageDraw

    base = [rng.randint(90, 200) for _ in range(3)]
    img = Image.new("RGB", (size, size), tuple(base))
    draw = ImageDraw.Draw(img)
    for _ in range(12):  # background texture: faint random lines
        tint = tuple(min(255, max(0, b + rng.randint(-30, 30))) for b in base)
        draw.line([(rng.randint(0, size), rng.randint(0, size)) for _ in range(2)], fill=tint, width=rng.randint(1, 4))
    for s in shapes:
        x1, y1, x2, y2 = s.box
        fill = COLOURS[s.colour]
        if s.kind == "circle":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
        elif s.kind == "square":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)], fill=fill)
    return img


def _phrase(s: Shape, rng: random.Random, article: str = "a") -> str:
    return f"{article} {s.colour} {rng.choice(SHAPES[s.kind])}"


def _relation(a: Shape, b: Shape, rng: random.Random) -> str:
    dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
    if abs(dx) >= abs(dy):
        return rng.choice(["left of", "to the left of"]) if dx > 0 else rng.choice(["right of", "to the right of"])
    return rng.choice(["above", "over"]) if dy > 0 else rng.choice(["below", "under"])


def _caption(shapes: list[Shape], rng: random.Random) -> str:
    """One caption; templates vary so the 5 captions of an image differ."""
    if len(shapes) == 1:
        s = shapes[0]
        return rng.choice(
            [
                f"{_phrase(s, rng)} on a plain background",
                f"a single {s.colour} {rng.choice(SHAPES[s.kind])}",
                f"there is {_phrase(s, rng)} in the picture",
                f"{_phrase(s, rng)} alone",
            ]
        )
    a, b = rng.sample(shapes, 2)
    rest = [s for s in shapes if s is not a and s is not b]
    templates = [
        f"{_phrase(a, rng)} {_relation(a, b, rng)} {_phrase(b, rng)}",
        f"{_phrase(a, rng)} and {_phrase(b, rng)}",
        f"{len(shapes)} shapes including {_phrase(a, rng)}",
        f"there is {_phrase(b, rng)} {_relation(b, a, rng)} {_phrase(a, rng)}",
    ]
    text = rng.choice(templates)
    if rest and rng.random() < 0.5:
        text += f" and {_phrase(rest[0], rng)}"
    return text


def _captions(shapes: list[Shape], rng: random.Random, n: int) -> list[str]:
    """n captions, distinct where the templates allow it (a few tries each)."""
    out: list[str] = []
    for _ in range(n):
        text = _caption(shapes, rng)
        for _ in range(10):
            if text not in out:
                break
            text = _caption(shapes, rng)
        out.append(text)
    return out


def _split(i: int, n: int) -> str:
    frac = i / n
    return "train" if frac < 0.8 else "val" if frac < 0.9 else "test"


def generate(root: str | Path, n_images: int = 300, size: int = 192, seed: int = 0) -> Path:
    """Write the demo images and `annotations.json` under `root`; returns `root`.

    Deterministic: the same (n_images, size, seed) writes the same files. Skips the work when
    `root/annotations.json` already describes the same parameters.
    """
    root = Path(root)
    params = {"n_images": n_images, "size": size, "seed": seed}
    ann_path = root / ANNOTATIONS
    if ann_path.exists():
        try:
            if json.loads(ann_path.read_text()).get("params") == params:
                return root
        except json.JSONDecodeError:
            pass
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images = []
    for i in range(n_images):
        shapes = _layout(rng, size)
        image_id = f"demo{i:05d}"
        _draw(shapes, rng, size).save(root / "images" / f"{image_id}.png")
        valence = sum(VALENCE[s.colour] for s in shapes)
        label = _label_from_valence(valence)
        mood = label if rng.random() < 0.5 else SENTIMENTS.index("neutral")
        # Neither the post nor the target names a colour: the colours, hence the labels, are in the image.
        post = f"{rng.choice(MOOD[mood])} picture with " + " and ".join(
            f"a {rng.choice(SHAPES[s.kind])}" for s in shapes
        )
        targets = [
            {"target": s.kind, "label": _label_from_valence(VALENCE[s.colour]), "related": 1, "box": list(s.box)}
            for s in shapes
        ]
        absent = [k for k in SHAPES if k not in {s.kind for s in shapes}]
        if absent:
            targets.append(
                {"target": rng.choice(absent), "label": SENTIMENTS.index("neutral"), "related": 0, "box": None}
            )
        for t in targets:
            t["sentence"] = rng.choice(
                ["look at the $T$ here", "my photo of the $T$ today", "the $T$ again", "$T$ in this one"]
            )
        images.append(
            {
                "image_id": image_id,
                "file": f"images/{image_id}.png",
                "split": _split(i, n_images),
                "shapes": [{"kind": s.kind, "colour": s.colour, "box": list(s.box)} for s in shapes],
                "captions": _captions(shapes, rng, 5),
                "label": label,
                "post": post,
                "targets": targets,
            }
        )
    atomic_write(ann_path, json.dumps({"params": params, "images": images}, indent=1).encode(), fsync=False)
    return root


@DATASETS.register("demo")
def load(root: Path) -> list[Record]:
    """Read `root/annotations.json` (written by `generate`) into records of all three kinds."""
    ann_path = Path(root) / ANNOTATIONS
    if not ann_path.exists():
        raise DatasetError(
            f"{ann_path} not found: generate the demo data with `lighthead demo` (or lighthead.pipelines.datasets.demo.generate)"
        )
    try:
        images = json.loads(read_text(ann_path))["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{ann_path}: not a demo annotation file ({e})") from None
    records: list[Record] = []
    for n, im in enumerate(images):
        path = Path(root) / im["file"]
        if not path.exists():
            raise DatasetError(f"{ann_path}: image {n} ({im['image_id']}): file {path} is missing")
        common = dict(image_id=im["image_id"], image_path=str(path.resolve()), split=im["split"])
        boxes = [s["box"] for s in im["shapes"]]
        names = [f"{s['colour']} {s['kind']}" for s in im["shapes"]]
        records.append(
            Record(
                id=im["image_id"],
                texts=im["captions"],
                kind="image",
                label=im["label"],
                extra={"boxes": boxes, "names": names},
                **common,
            )
        )
        records.append(
            Record(
                id=f"{im['image_id']}-post",
                texts=[im["post"]],
                kind="post",
                label=im["label"],
                extra={"boxes": boxes},
                **common,
            )
        )
        for k, t in enumerate(im["targets"]):
            records.append(
                Record(
                    id=f"{im['image_id']}-t{k}",
                    texts=[t["sentence"]],
                    kind="target",
                    label=t["label"],
                    target=t["target"],
                    extra={"relevance": t["related"], "box": t["box"]},
                    **common,
                )
            )
    return records
