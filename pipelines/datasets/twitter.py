"""Twitter-2015 and Twitter-2017 targeted sentiment: TomBERT's TSV files or the ITM release's pickles.

Expected layout under the root, either::

    train.tsv  dev.tsv  test.tsv   header line, then: index <TAB> label <TAB> image id <TAB> sentence with $T$ <TAB> target
    twitter2015_images/            (or twitter2017_images/, or images/) holding the image files named in column 3

or the files of the ITM release (NUSTM/ITM, `data/Sentiment_Analysis/`)::

    twitter2015/train.pkl  dev.pkl  test.pkl   (twitter2017/ for twitter17; or the .pkl files in the root)
    twitter2015_images/                        (or images/) holding <iid>.jpg

Each pickle maps a key to {"iid", "sentence" (with $T$), "aspect" (the target), "sentiment"
("0"/"1"/"2"), "relation" (None here), "boxes" ([] here)}, the layout of ITM's `VG_*.pkl`;
3,179 / 1,122 / 1,037 entries for Twitter-2015. They are read with an unpickler that refuses
every class (`pickles.py`): plain data only, no code runs. The TSVs win when both are present.

Labels are 0 negative, 1 neutral, 2 positive (the names are accepted too). One record per row
or entry (id `<split>-<index or key>`), kind "target": the sentence keeps its `$T$` placeholder,
`target` holds the phrase.

The images are optional: without them (the public text alone) the records still load, a
warning says how many image files are missing, text feature jobs run as usual and image jobs
list each missing file as a skipped input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lighthead.pipelines.datasets.base import DATASETS, SENTIMENTS, DatasetError, Record, read_text, warn_missing_images
from lighthead.pipelines.datasets.pickles import read_plain_pickle

_FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}
PLACEHOLDER = "$T$"  # where the target stood in the sentence


def parse_label(value: str, where: str) -> int:
    """A sentiment label as an index into SENTIMENTS: "0"/"1"/"2" or the names."""
    value = value.strip().lower()
    if value in SENTIMENTS:
        return SENTIMENTS.index(value)
    if value in ("0", "1", "2"):
        return int(value)
    raise DatasetError(f"{where}: unknown label {value!r}; expected 0, 1, 2 or one of {list(SENTIMENTS)}")


def image_folder(root: Path, candidates: list[str], layout: str, required: bool = True) -> Path:
    """The first existing folder of `candidates` under root. Missing: a DatasetError showing the
    layout, or (required False) the first candidate, where the images would be."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    if not required:
        return root / candidates[0]
    raise DatasetError(f"no image folder under {root} (looked for {', '.join(candidates)}); expected:\n{layout}")


def read_tsv(path: Path, split: str, images: Path) -> list[Record]:
    """Records of one TomBERT TSV file; errors name the file and line."""
    records = []
    lines = read_text(path).splitlines()
    if not lines:
        raise DatasetError(f"{path}: empty file (expected a header line, then rows)")
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        cols = line.split("\t")
        if len(cols) != 5:
            raise DatasetError(
                f"{where}: expected 5 tab-separated columns (index, label, image id, sentence, target), got {len(cols)}"
            )
        index, label, image_name, sentence, target = (c.strip() for c in cols)
        if PLACEHOLDER not in sentence:
            raise DatasetError(f"{where}: the sentence has no {PLACEHOLDER} placeholder for the target")
        if not target:
            raise DatasetError(f"{where}: empty target")
        if not image_name or Path(image_name).name != image_name:
            raise DatasetError(f"{where}: image id {image_name!r} is not a file name")
        image_path = images / image_name
        records.append(
            Record(
                id=f"{split}-{index}",
                image_id=Path(image_name).stem,
                image_path=str(image_path),
                texts=[sentence],
                split=split,
                kind="target",
                label=parse_label(label, where),
                target=target,
            )
        )
    return records


def text_field(entry: dict[str, Any], key: str, where: str) -> str:
    """A string (or integer) field of an ITM-release entry, stripped; empty or another type names `where`."""
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DatasetError(f"{where}: {key!r} is {value!r:.40}; expected a non-empty string")
    return str(value).strip()


def release_image(images: Path, iid: str, where: str) -> Path:
    """The image file of an ITM-release `iid` (a file name; `.jpg` added when it has no extension)."""
    if Path(iid).name != iid:
        raise DatasetError(f"{where}: 'iid' {iid!r} is not a file name")
    return images / (iid if Path(iid).suffix else f"{iid}.jpg")


def entry_record(key: str, entry: Any, split: str, where: str, images: Path) -> Record:
    """The record of one entry of an ITM-release pickle (the sentiment fields; relation and boxes
    are not read)."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected a mapping, got {type(entry).__name__}")
    for field in ("iid", "sentence", "aspect", "sentiment"):
        if field not in entry:
            raise DatasetError(f"{where}: missing field {field!r}")
    iid, sentence, target = (text_field(entry, k, where) for k in ("iid", "sentence", "aspect"))
    if PLACEHOLDER not in sentence:
        raise DatasetError(f"{where}: the sentence has no {PLACEHOLDER} placeholder for the target")
    image_path = release_image(images, iid, where)
    return Record(
        id=f"{split}-{key}",
        image_id=Path(iid).stem,
        image_path=str(image_path),
        texts=[sentence],
        split=split,
        kind="target",
        label=parse_label(str(entry["sentiment"]), where),
        target=target,
    )


def read_pickles(folder: Path, images: Path) -> list[Record]:
    """Records of the ITM release's train/dev/test.pkl in `folder`; errors name the file and key."""
    records = []
    for split, filename in _FILES.items():
        path = folder / filename.replace(".tsv", ".pkl")
        if not path.is_file():
            raise DatasetError(
                f"{path} not found next to {folder / 'train.pkl'} (the ITM release has train, dev and test .pkl)"
            )
        data = read_plain_pickle(path, hint="expected the ITM release's pickle of plain dicts")
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: expected a mapping of key -> entry, got {type(data).__name__}")
        records.extend(entry_record(str(k), e, split, f"{path}: entry {k!r}", images) for k, e in data.items())
    return records


def _loader(name: str, folder: str, release: str):
    layout = f"""  train.tsv, dev.tsv, test.tsv   (index, label, image id, sentence with $T$, target)
  or {release}/train.pkl, dev.pkl, test.pkl   (the ITM release; or the .pkl files here)
  {folder}/          (the images, optional for text features; or images/)"""

    def load(root: Path) -> list[Record]:
        images = image_folder(root, [folder, "images"], layout, required=False)
        pickled = next((d for d in (root, root / release) if (d / "train.pkl").is_file()), None)
        records: list[Record] = []
        if (root / "train.tsv").is_file() or pickled is None:
            for split, filename in _FILES.items():
                path = root / filename
                if not path.is_file():
                    raise DatasetError(f"{path} not found; expected under {root}:\n{layout}")
                records.extend(read_tsv(path, split, images))
        else:
            records = read_pickles(pickled, images)
        seen: set[str] = set()
        for r in records:
            if r.id in seen:
                raise DatasetError(f"{root / _FILES[r.split]}: duplicate index {r.id.split('-', 1)[1]!r}")
            seen.add(r.id)
        warn_missing_images(records, images)
        return records

    load.__doc__ = (
        f"{name}: one 'target' record per TSV row or release pickle entry (sentence with $T$, target, label)."
    )
    return load


DATASETS.register("twitter15")(_loader("twitter15", "twitter2015_images", "twitter2015"))
DATASETS.register("twitter17")(_loader("twitter17", "twitter2017_images", "twitter2017"))
