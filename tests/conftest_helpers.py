"""A small synthetic retrieval store with a learnable signal, written with the store writer.

Same feature-set names and fields as the real extractors (regions/butd-r101-vg-36,
global/resnet152, thumbs/64, words/vocab + artifact "vocab", text/all-minilm-l6-v2, artifacts
"records" and "dataset"), so heads and the training loop run on it as on an extracted store.

Each image shows 1-3 coloured shapes; its captions name them ("a red circle and a blue
square"). Each (colour, shape) has a random prototype: regions hold colour + shape
prototypes plus noise (two regions per shape, the rest background noise), the global vector
is their mean, token features are a random vector per word plus noise. A head that learns to
match words to regions retrieves far above chance.
"""

from __future__ import annotations

import base64
import csv
import random
import sys
from pathlib import Path

import numpy as np

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "pink", "brown", "grey", "gold"]
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "heart", "arrow"]
TEMPLATES = [
    "a {a} {s}",
    "there is a {s} that is {a}",
    "an image with a {a} {s}",
    "a {s} coloured {a}",
    "a picture of a {a} {s}",
]


def _captions(rng: random.Random, shapes: list[tuple[str, str]]) -> list[str]:
    out = []
    for t in TEMPLATES:
        parts = [t.format(a=c, s=s) for c, s in rng.sample(shapes, len(shapes))]
        out.append(" and ".join(parts))
    return out


def build_retrieval_store(
    path: Path,
    n_images: int = 60,
    splits: tuple[int, int, int] = (40, 10, 10),
    region_dim: int = 2048,
    num_regions: int = 36,
    global_dim: int = 2048,
    token_dim: int = 64,
    noise: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write the synthetic store at `path` and return it. `splits` = images per train/val/test."""
    from lighthead.extract.vocab import VocabConfig, Vocabulary
    from lighthead.pipelines.datasets.base import Record
    from lighthead.store import Field, open_store

    if sum(splits) != n_images:
        raise ValueError(f"splits {splits} do not add up to {n_images} images")
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    proto = {w: nrng.standard_normal(region_dim).astype(np.float32) for w in COLOURS + SHAPES}
    split_of = ["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2]
    records, regions, glob, thumbs = [], {}, {}, {}
    for i in range(n_images):
        k = rng.choice([2, 3])  # two or three shapes: images are rarely duplicates of each other
        shapes = [(rng.choice(COLOURS), s) for s in rng.sample(SHAPES, k)]
        image_id = f"img{i:04d}"
        records.append(
            Record(
                id=f"r{i:04d}",
                image_id=image_id,
                image_path=f"/nonexistent/{image_id}.png",
                texts=_captions(rng, shapes),
                split=split_of[i],
                kind="image",
            )
        )
        reg = noise * nrng.standard_normal((num_regions, region_dim)).astype(np.float32)
        slots = nrng.permutation(num_regions)
        for j, (c, s) in enumerate(shapes):
            for slot in slots[2 * j : 2 * j + 2]:
                reg[slot] += proto[c] + proto[s]
        regions[image_id] = reg
        mean = np.resize(np.mean([proto[c] + proto[s] for c, s in shapes], axis=0), global_dim)
        glob[image_id] = mean + noise * nrng.standard_normal(global_dim).astype(np.float32)
        thumbs[image_id] = nrng.integers(0, 255, (3, 64, 64), dtype=np.uint8)

    store = open_store(path, create=True)
    store.write_json("records", [r.to_json() for r in records])
    store.write_json("dataset", {"name": "synthetic"})
    with store.writer(
        "regions/butd-r101-vg-36",
        [Field("features", (num_regions, region_dim)), Field("boxes", (num_regions, 4), "float32")],
        {"extractor": "synthetic"},
        fsync=False,
    ) as w:
        for image_id, reg in regions.items():
            w.add(image_id, {"features": reg, "boxes": np.zeros((num_regions, 4), np.float32)})
    with store.writer(
        "global/resnet152", [Field("features", (global_dim,))], {"extractor": "synthetic"}, fsync=False
    ) as w:
        for image_id, g in glob.items():
            w.add(image_id, {"features": g})
    with store.writer(
        "thumbs/64", [Field("thumb", (3, 64, 64), "uint8")], {"extractor": "synthetic"}, fsync=False
    ) as w:
        for image_id, t in thumbs.items():
            w.add(image_id, {"thumb": t})

    train_texts = [t for r in records if r.split == "train" for t in r.texts]
    vocab = Vocabulary.build(train_texts, VocabConfig(threshold=1))
    store.write_json("vocab", vocab.to_json())
    word_vec = {}
    with store.writer(
        "words/vocab",
        [Field("word_ids", (None,), "int32"), Field("length", (), "int32")],
        {"extractor": "synthetic", "vocab_size": len(vocab)},
        fsync=False,
    ) as w:
        with store.writer(
            "text/all-minilm-l6-v2",
            [Field("features", (None, token_dim)), Field("length", (), "int32")],
            {"extractor": "synthetic"},
            fsync=False,
        ) as wt:
            for r in records:
                for tid, text in zip(r.text_ids(), r.texts):
                    ids = np.asarray(vocab.encode(text), np.int32)
                    w.add(tid, {"word_ids": ids, "length": len(ids)})
                    for wid in ids:
                        if wid not in word_vec:
                            word_vec[wid] = nrng.standard_normal(token_dim).astype(np.float32)
                    toks = np.stack([word_vec[x] for x in ids]) + 0.1 * nrng.standard_normal((len(ids), token_dim))
                    wt.add(tid, {"features": toks.astype(np.float32), "length": len(ids)})
    return Path(path)


# The smallest vsepp/scan widths the loop tests train with: seconds per epoch on the small store.
TINY = {"embed_size": "8", "word_dim": "8", "batch_size": "16", "val_images": "0"}


def build_small_retrieval_store(path: Path, seed: int) -> Path:
    """A 30-image store (20/5/5) with narrow features: the store of the loop, checkpoint and CLI tests."""
    return build_retrieval_store(
        path, n_images=30, splits=(20, 5, 5), region_dim=32, num_regions=6, global_dim=32, token_dim=8, seed=seed
    )


def train_tiny_run(store: Path, out: Path, head: str = "vsepp") -> Path:
    """One epoch of `head` with the TINY widths into `out`; returns `out`."""
    from lighthead.pipelines.training.loop import train

    train(head, store, out, epochs=1, overrides=TINY, progress=False)
    return out


# LXMERT's `load_obj_tsv` columns, in file order.
LXMERT_FIELDS = [
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
]


def lxmert_load_obj_tsv(path) -> list[dict]:
    """LXMERT src/utils.py load_obj_tsv's reading, written out (so a comparison never goes through
    the project's importer): DictReader with its field names, ints for img_h/img_w/num_boxes, each
    array decoded with its dtype and shape. Real 36 x 2048 rows exceed csv's default field size."""
    csv.field_size_limit(sys.maxsize)
    data = []
    with open(path, newline="") as f:
        for item in csv.DictReader(f, LXMERT_FIELDS, delimiter="\t"):
            for key in ("img_h", "img_w", "num_boxes"):
                item[key] = int(item[key])
            n = item["num_boxes"]
            for key, shape, dtype in (
                ("objects_id", (n,), np.int64),
                ("objects_conf", (n,), np.float32),
                ("attrs_id", (n,), np.int64),
                ("attrs_conf", (n,), np.float32),
                ("boxes", (n, 4), np.float32),
                ("features", (n, -1), np.float32),
            ):
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
            data.append(item)
    return data
