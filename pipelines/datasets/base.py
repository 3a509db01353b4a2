"""What every dataset adapter yields: `Record`s, plus the adapter registry.

One adapter per dataset, one file each, registered by name in `DATASETS`. An adapter is a
function `load(root: Path) -> list[Record]` that validates as it reads and raises
`DatasetError` naming the file (and line) of anything malformed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from lighthead.store.registry import Registry

# Sentiment label ids used by every sentiment dataset and head.
SENTIMENTS = ("negative", "neutral", "positive")


class DatasetError(Exception):
    """A dataset file is missing or malformed; the message names the file (and line)."""


@dataclass
class Record:
    """One item of a dataset.

    kind "image" (coco, f30k): one record per image, `texts` holds its captions.
    kind "post" (mvsa): one record per (image, text) post, `label` its sentiment.
    kind "target" (twitter15/17, itm): one record per (image, sentence, target); the sentence
    holds `$T$` where the target was, and text extractors encode it paired with `target`.
    The demo dataset yields all three kinds.
    """

    id: str  # unique item id within the dataset; text feature sets key texts as f"{id}#{j}"
    image_id: str  # key of the image in image feature sets (several records may share one)
    image_path: str  # absolute path of the image file
    texts: list[str]  # captions, or the one sentence of a sentiment sample
    split: str  # "train", "val" or "test"
    kind: str = "image"  # "image" (retrieval: captions), "post" (image-text sentiment), "target" (targeted sentiment)
    label: int | None = None  # sentiment: index into SENTIMENTS; None for retrieval
    target: str | None = None  # targeted sentiment: the target phrase (the sentence holds $T$)
    extra: dict[str, Any] = field(default_factory=dict)  # dataset-specific: boxes, relevance, ...

    def text_ids(self) -> list[str]:
        return [f"{self.id}#{j}" for j in range(len(self.texts))]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Record:
        return cls(**obj)


def read_text(path: Path) -> str:
    """A text file as UTF-8; other bytes are a DatasetError naming the file, line and column."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); save the file as UTF-8"
        ) from None


def check_image_ids(records: list[Record]) -> list[Record]:
    """One file per image id: ids come from file names, so `1.jpg` and `1.png` would share one.

    Raises DatasetError naming both files (and a record of each).
    """
    first: dict[str, Record] = {}
    for r in records:
        seen = first.setdefault(r.image_id, r)
        if seen is not r and os.path.normpath(seen.image_path) != os.path.normpath(r.image_path):
            raise DatasetError(
                f"image id {r.image_id!r} names two files: {seen.image_path} (record {seen.id}) and "
                f"{r.image_path} (record {r.id}); image ids are file names without the extension, so rename one"
            )
    return records


Loader = Callable[[Path], list[Record]]
DATASETS: Registry[Loader] = Registry("dataset")


def resolve_root(name: str, root: str | Path | None) -> Path:
    """`--root` if given, else `$LIGHTHEAD_DATA/<name>`; a missing folder is a DatasetError."""
    if root is None:
        base = os.environ.get("LIGHTHEAD_DATA")
        if not base:
            raise DatasetError(
                f"no data root for {name!r}: pass --root DIR or set LIGHTHEAD_DATA (then DIR = $LIGHTHEAD_DATA/{name})"
            )
        root = Path(base) / name
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"data root {root} for dataset {name!r} is not a directory")
    if not root.is_dir():
        raise DatasetError(f"data root {root} for dataset {name!r} does not exist")
    return root.resolve()


def load_records(name: str, root: str | Path | None) -> list[Record]:
    """Run the adapter `name` on its root folder."""
    loader = DATASETS.get(name)
    return check_image_ids(loader(resolve_root(name, root)))


def warn_missing_images(records: list[Record], folder: Path) -> None:
    """One warning when image files are missing: text jobs run, image jobs will list them."""
    paths = {r.image_path for r in records}
    missing = sorted(p for p in paths if not Path(p).is_file())
    if not missing:
        return
    what = (
        f"no image folder {folder}: none of the {len(paths)} images is present"
        if not folder.is_dir()
        else f"{len(missing)} of {len(paths)} image files not found (first: {missing[0]})"
    )
    warnings.warn(f"{what}; text feature jobs run, image feature jobs list the missing files", stacklevel=3)
