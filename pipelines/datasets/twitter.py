"""Twitter-2015 and Twitter-2017 targeted sentiment (TomBERT-style TSV files).

Expected layout under the root::

    train.tsv  dev.tsv  test.tsv   header line, then: index <TAB> label <TAB> image id <TAB> sentence with $T$ <TAB> target
    twitter2015_images/            (or twitter2017_images/, or images/) holding the image files named in column 3

Labels are 0 negative, 1 neutral, 2 positive (the names are accepted too). One record per row,
kind "target": the sentence keeps its `$T$` placeholder, `target` holds the phrase.
"""

from __future__ import annotations

from pathlib import Path

from lighthead.pipelines.datasets.base import DATASETS, SENTIMENTS, DatasetError, Record, read_text

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


def image_folder(root: Path, candidates: list[str], layout: str) -> Path:
    """The first existing folder of `candidates` under root, or a DatasetError showing the layout."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
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
            raise DatasetError(f"{where}: expected 5 tab-separated columns (index, label, image id, sentence, target), got {len(cols)}")
        index, label, image_name, sentence, target = (c.strip() for c in cols)
        if PLACEHOLDER not in sentence:
            raise DatasetError(f"{where}: the sentence has no {PLACEHOLDER} placeholder for the target")
        if not target:
            raise DatasetError(f"{where}: empty target")
        image_path = images / image_name
        if not image_path.is_file():
            raise DatasetError(f"{where}: image {image_path} not found")
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


def _loader(name: str, folder: str):
    layout = f"""  train.tsv, dev.tsv, test.tsv   (index, label, image id, sentence with $T$, target)
  {folder}/          (the images; or images/)"""

    def load(root: Path) -> list[Record]:
        images = None
        records: list[Record] = []
        for split, filename in _FILES.items():
            path = root / filename
            if not path.is_file():
                raise DatasetError(f"{path} not found; expected under {root}:\n{layout}")
            images = images or image_folder(root, [folder, "images"], layout)
            records.extend(read_tsv(path, split, images))
        seen: set[str] = set()
        for r in records:
            if r.id in seen:
                raise DatasetError(f"{root / _FILES[r.split]}: duplicate index {r.id.split('-', 1)[1]!r}")
            seen.add(r.id)
        return records

    load.__doc__ = f"{name}: one 'target' record per TSV row (sentence with $T$, target, label)."
    return load


DATASETS.register("twitter15")(_loader("twitter15", "twitter2015_images"))
DATASETS.register("twitter17")(_loader("twitter17", "twitter2017_images"))
