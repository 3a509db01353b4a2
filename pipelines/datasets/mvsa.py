"""MVSA-Single and MVSA-Multiple image-text sentiment (Niu et al., MMM 2016), as ITIN uses them.

Expected layout under the root::

    labelResultAll.txt     header line, then: ID <TAB> text,image  (Single: one annotator column;
                           Multiple: three annotator columns)
    data/<ID>.jpg          the image of post ID (optional for text features: MVSA text circulates
                           without its images; one warning counts the missing files, text
                           jobs and the text-only head run, image jobs list them as skipped)
    data/<ID>.txt          its text

Label merging (ITIN, Sec. IV-A, following MultiSentiNet): a pair whose text and image labels
agree keeps that label; if one is positive (negative) and the other neutral, the pair is
positive (negative); a pair with one positive and one negative label is removed. For
MVSA-Multiple each modality's label is first the majority of the three annotators (at least
two agreeing); a modality without a majority removes the pair. The kept posts are split
8:1:1 (train/val/test) by a seeded shuffle, so every run sees the same split.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from lighthead.pipelines.datasets import base
from lighthead.pipelines.datasets.base import DATASETS, SENTIMENTS, DatasetError, Record, warn_missing_images

SPLIT_SEED = 0  # seed of the 8:1:1 shuffle
SPLIT_RATIO = (0.8, 0.1, 0.1)  # train, val, test
_LAYOUT = """  labelResultAll.txt   (ID <TAB> text,image [<TAB> text,image ...])
  data/<ID>.jpg        (image of each post)
  data/<ID>.txt        (text of each post)"""


def merge_labels(text: str, image: str) -> str | None:
    """ITIN's rule: agreeing labels stay, polarity wins over neutral, positive vs negative -> None."""
    if text == image:
        return text
    if text == "neutral":
        return image
    if image == "neutral":
        return text
    return None


def majority(labels: list[str]) -> str | None:
    """The label given by at least two of three annotators, else None."""
    label, count = Counter(labels).most_common(1)[0]
    return label if count >= 2 else None


def read_text(path: Path) -> str:
    """A post's text; the MVSA files mix encodings, so non-UTF-8 bytes are read as Latin-1.

    Only ASCII whitespace is collapsed: a non-ASCII character (a no-break space too) stays in
    place, so dropping the non-ASCII characters afterwards (the text job's `ascii_only`, MVSA's
    default) gives what ITIN's release reads, the file's bytes decoded as ASCII ignoring the rest.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return re.sub(r"[ \t\n\r\f\v]+", " ", text).strip(" ")


def _parse_pair(cell: str, where: str) -> tuple[str, str]:
    parts = [p.strip().lower() for p in cell.split(",")]
    if len(parts) != 2:
        raise DatasetError(f"{where}: expected 'text,image' labels, got {cell!r}")
    for p in parts:
        if p not in SENTIMENTS:
            raise DatasetError(f"{where}: unknown label {p!r}; expected one of {list(SENTIMENTS)}")
    return parts[0], parts[1]


def split_ids(ids: list[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """id -> "train"/"val"/"test": a seeded shuffle cut 8:1:1."""
    order = sorted(ids, key=lambda s: (len(s), s))  # numeric order for numeric ids, whatever the file order
    random.Random(seed).shuffle(order)
    n_train = round(SPLIT_RATIO[0] * len(order))
    n_val = round(SPLIT_RATIO[1] * len(order))
    return {i: "train" if k < n_train else "val" if k < n_train + n_val else "test" for k, i in enumerate(order)}


def read_mvsa(root: Path, annotators: int) -> list[Record]:
    """Posts of an MVSA folder whose label file has `annotators` text,image columns."""
    label_file = root / "labelResultAll.txt"
    if not label_file.is_file():
        raise DatasetError(f"{label_file} not found; expected under {root}:\n{_LAYOUT}")
    data = root / "data"
    if not data.is_dir():
        raise DatasetError(f"{data} not found; expected under {root}:\n{_LAYOUT}")
    kept: list[tuple[str, int, str, str, str, str]] = []  # id, label, text label, image label, image, text
    seen: set[str] = set()
    lines = base.read_text(label_file).splitlines()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"{label_file}:{n}"
        cols = line.strip().split("\t")
        if len(cols) != 1 + annotators:
            raise DatasetError(f"{where}: expected ID and {annotators} text,image column(s), got {len(cols)} columns")
        post = cols[0].strip()
        if not post or post in seen:
            raise DatasetError(f"{where}: {'empty' if not post else 'duplicate'} ID {post!r}")
        seen.add(post)
        pairs = [_parse_pair(c, where) for c in cols[1:]]
        text_label = majority([p[0] for p in pairs]) if annotators > 1 else pairs[0][0]
        image_label = majority([p[1] for p in pairs]) if annotators > 1 else pairs[0][1]
        label = merge_labels(text_label, image_label) if text_label and image_label else None
        if label is None:
            continue
        image, text = data / f"{post}.jpg", data / f"{post}.txt"
        if not text.is_file():  # images may be absent (text circulates without them): warned below
            raise DatasetError(f"{where}: {text} not found")
        kept.append((post, SENTIMENTS.index(label), text_label, image_label, str(image), read_text(text)))
    if not kept:
        raise DatasetError(f"{label_file}: no post left after label merging")
    splits = split_ids([k[0] for k in kept])
    records = [
        Record(
            id=post,
            image_id=post,
            image_path=image,
            texts=[text],
            split=splits[post],
            kind="post",
            label=label,
            extra={"text_label": text_label, "image_label": image_label},
        )
        for post, label, text_label, image_label, image, text in kept
    ]
    warn_missing_images(records, data)
    return records


@DATASETS.register("mvsa-single")
def load_single(root: Path) -> list[Record]:
    """MVSA-Single: one annotator per post; merged labels, seeded 8:1:1 split."""
    return read_mvsa(root, annotators=1)


@DATASETS.register("mvsa-multiple")
def load_multiple(root: Path) -> list[Record]:
    """MVSA-Multiple: three annotators per post; majority per modality, merged labels, seeded 8:1:1 split."""
    return read_mvsa(root, annotators=3)
