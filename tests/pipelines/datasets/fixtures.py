"""Small generated datasets in each on-disk format the adapters read."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ["red", "blue", "circle", "square", "dog", "man", "a", "on", "the", "grass", "left", "of"]


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 32), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return path


def caption(rng: np.random.Generator, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS, n)) + "."


def karpathy(root: Path, n_images: int = 6, coco: bool = True, seed: int = 0) -> Path:
    """A Karpathy split file + images; splits cycle train, restval, val, test."""
    rng = np.random.default_rng(seed)
    splits = ["train", "restval", "val", "test"]
    images = []
    for i in range(n_images):
        if coco:
            folder, name = ("train2014" if i % 2 else "val2014"), f"COCO_x_{i:012d}.jpg"
            write_image(root / folder / name, i)
            entry = {"filepath": folder, "filename": name, "cocoid": 1000 + i}
        else:
            name = f"{5000 + i}.jpg"
            write_image(root / "flickr30k-images" / name, i)
            entry = {"filename": name}
        entry.update(
            imgid=i,
            split=splits[i % 4],
            sentences=[{"raw": caption(rng), "tokens": [], "imgid": i, "sentid": 5 * i + j} for j in range(5)],
        )
        images.append(entry)
    name = "dataset_coco.json" if coco else "dataset_flickr30k.json"
    (root / name).write_text(json.dumps({"images": images, "dataset": "coco" if coco else "flickr30k"}, indent=1))
    return root


def twitter(root: Path, folder: str = "twitter2015_images", rows: int = 3) -> Path:
    """TomBERT TSVs (train/dev/test) with `rows` rows each + images."""
    for split_file in ("train.tsv", "dev.tsv", "test.tsv"):
        lines = ["index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"]
        for k in range(rows):
            image = f"{split_file[:2]}{k}.jpg"
            write_image(root / folder / image, k + len(split_file))
            lines.append(f"{k + 1}\t{k % 3}\t{image}\tRT @x : $T$ wins the match number {k}\tTeam {k}")
        (root / split_file).write_text("\n".join(lines) + "\n")
    return root


def itm_entries(split: str) -> dict[str, dict]:
    return {
        "1": {
            "iid": f"{split}_1",
            "sentence": "Safety $T$ has signed",
            "aspect": "A . J . Stamps",
            "sentiment": "2",
            "relation": "1",
            "boxes": [(2, 3, 20, 25)],
        },
        "2": {
            "iid": f"{split}_2",
            "sentence": "$T$ is a city",
            "aspect": "Paris",
            "sentiment": "1",
            "relation": "0",
            "boxes": [],
        },
        "3": {
            "iid": f"{split}_1",
            "sentence": "we love $T$",
            "aspect": "dogs",
            "sentiment": "",
            "relation": "2",
            "boxes": [(0, 0, 10, 10), (1, 1, 5, 5)],
        },
    }


def itm(root: Path, fmt: str = "pkl") -> Path:
    for split, stem in (("train", "VG_train"), ("val", "VG_dev"), ("test", "VG_test")):
        entries = itm_entries(split)
        for e in entries.values():
            write_image(root / "twitter2017_images" / f"{e['iid']}.jpg", len(e["iid"]))
        if fmt == "pkl":
            (root / f"{stem}.pkl").write_bytes(pickle.dumps(entries))
        else:
            (root / f"{stem}.json").write_text(json.dumps(entries))
    return root


def itm_release_entries(split: str, n: int, seed: int = 0) -> dict[str, dict]:
    """Entries laid out as the ITM release's twitter2015/<split>.pkl holds them: str keys "1".."n",
    {"iid": str, "sentence": with $T$, "aspect", "sentiment": "0"/"1"/"2", "relation": None, "boxes": []}.
    The label is written into the sentence, so a text model can learn it."""
    rng = np.random.default_rng(seed)
    words = {0: "awful terrible", 1: "today at", 2: "great wonderful"}
    out = {}
    for k in range(1, n + 1):
        label = int(rng.integers(0, 3))
        out[str(k)] = {
            "iid": f"{split[:2]}{1000 + k}",
            "sentence": f"RT @ user : $T$ {words[label]} {caption(rng, 3)}",
            "aspect": f"Team {k}",
            "sentiment": str(label),
            "relation": None,
            "boxes": [],
        }
    return out


def itm_release(folder: Path, sizes: tuple[int, int, int] = (12, 6, 6)) -> Path:
    """train/dev/test.pkl in the ITM release's layout (pickle protocol 3, as released); no images."""
    folder.mkdir(parents=True, exist_ok=True)
    for (split, fname), n in zip((("train", "train.pkl"), ("dev", "dev.pkl"), ("test", "test.pkl")), sizes):
        (folder / fname).write_bytes(pickle.dumps(itm_release_entries(split, n, seed=n + len(split)), protocol=3))
    return folder


def mvsa(root: Path, labels: list[str], multiple: bool = False) -> Path:
    """labelResultAll.txt with the given label cells (one per post; tabs between annotators)."""
    header = "ID\t" + ("\t".join(["text,image"] * 3) if multiple else "text,image")
    lines = [header]
    for k, cell in enumerate(labels, start=1):
        lines.append(f"{k}\t{cell}")
        write_image(root / "data" / f"{k}.jpg", k)
        (root / "data" / f"{k}.txt").write_bytes(
            f"post number {k} \xe9t\xe9 ".encode("latin-1") if k == 2 else f"post number {k}\n".encode()
        )
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    return root
