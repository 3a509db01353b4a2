"""The dataset side of `lighthead store import` / `export`: imports that train, exports with captions.

    from lighthead.pipelines.store_io import import_features, export_features
    summary = import_features("precomp", "data/f30k_precomp", "stores/f30k-pre")   # then train heads scan
    summary = import_features("tsv", "trainval_36/", "stores/coco", "regions/butd-r101-vg-36")
    export_features("precomp", "stores/coco", "out/coco_precomp")

- `precomp` imports write what `lighthead extract` writes besides the features: the records
  (one image record per image, its caption lines as texts, split train / val (SCAN's `dev`) /
  test), the dataset name, the GRU vocabulary and the `words/vocab` word ids, so the retrieval
  heads train on the store right away; CASC's labels are then built on first use, as for an
  extracted store.
- region imports (tsv, npz, vinvl) into a store that holds a dataset's records store each item
  under the dataset's image id (`DatasetImages`), check the stated image size against the image
  file, and report the source ids that match no image and the images left without features; a
  source none of whose ids matches an image is an error.
- `precomp` exports of a store with records write each split with its captions (SCAN's file
  names: `dev` for val), in the order training uses.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lighthead.pipelines.datasets.base import Record
from lighthead.store import StoreError, open_store

# precomp file prefix -> record split (SCAN validates on `dev`; COCO's 5K test is `testall`)
PRECOMP_SPLITS = {"train": "train", "restval": "train", "dev": "val", "val": "val", "test": "test", "testall": "test"}
RECORD_TO_PRECOMP = {"train": "train", "val": "dev", "test": "test"}
PER_IMAGE = 5  # captions per image in retrieval (SCAN, VSE++, the Karpathy splits)
_IMAGE_EXT = re.compile(r"\.(jpe?g|png|bmp|gif|tiff?|webp)$", re.IGNORECASE)
_NUMBER = re.compile(r"^(?:.*_)?0*(\d+)$")  # "391895", "000000391895", "COCO_val2014_000000391895"


@dataclass
class ImportSummary:
    """What an import did, for the CLI to print."""

    feature_set: str  # the feature set written
    added: int  # items this run stored
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (source id, where) matching no image
    missing: list[str] = field(default_factory=list)  # dataset image ids the feature set still lacks
    records: int = 0  # records written (precomp)
    dataset: str | None = None  # the dataset name the store records
    notes: list[str] = field(default_factory=list)  # one line each


# -- matching source ids to a dataset's images ------------------------------------------------


def _number(text: str) -> int | None:
    m = _NUMBER.match(text)
    return int(m.group(1)) if m else None


class DatasetImages:
    """A region import's target in a dataset store: ids matched to the records' image ids.

    A source id matches an image when, in this order: it is the image id; it is the image
    file's name without extension (COCO_train2014_000000000009 for COCO, whose image ids are
    the integer `cocoid`s); it is the `{split}_ids.txt` id a precomp import recorded; it is
    one of those after a `<prefix>_` (UNITER's `nlvr2_`, `coco_`); or its number (the digits
    at its end, after an underscore or alone, zeros dropped) is the number of exactly one
    image. Ids that match nothing are skipped and listed; two source ids matching one image
    is an error.
    """

    def __init__(self, records: list[Record]):
        self.paths: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        numbers: dict[int, set[str]] = defaultdict(set)
        for r in records:
            if r.image_id in self.paths:
                continue
            self.paths[r.image_id] = r.image_path
            names = [r.image_id, Path(r.image_path).stem if r.image_path else "", str(r.extra.get("source_id", ""))]
            for n in filter(None, names):
                self.keys.setdefault(n, r.image_id)
                if _number(n) is not None:
                    numbers[_number(n)].add(r.image_id)
        self.numbers = {k: next(iter(v)) for k, v in numbers.items() if len(v) == 1}
        self.unmatched: list[tuple[str, str]] = []
        self.claimed: dict[str, tuple[str, str]] = {}  # image id -> (source id, where)
        self._sizes: dict[str, tuple[tuple[int, int], tuple[int, int]] | None] = {}

    def _find(self, source_id: str) -> str | None:
        text = _IMAGE_EXT.sub("", source_id)
        for candidate in (source_id, text):
            if candidate in self.keys:
                return self.keys[candidate]
        for i, ch in enumerate(text):
            if ch == "_" and text[i + 1 :] in self.keys:
                return self.keys[text[i + 1 :]]
        number = _number(text)
        return self.numbers.get(number) if number is not None else None

    def match(self, source_id: str, where: str) -> str | None:
        image_id = self._find(source_id)
        if image_id is None:
            self.unmatched.append((source_id, where))
            return None
        prev = self.claimed.setdefault(image_id, (source_id, where))
        if prev[0] != source_id:
            raise StoreError(f"{where}: {source_id!r} and {prev[0]!r} ({prev[1]}) both match image {image_id!r}")
        return image_id

    def _image_sizes(self, image_id: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(size as stored in the file, size after its EXIF orientation), or None without a file."""
        if image_id not in self._sizes:
            path, sizes = self.paths.get(image_id), None
            if path and Path(path).is_file():
                from PIL import Image, UnidentifiedImageError

                try:
                    with Image.open(path) as im:
                        w, h = im.size
                        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
                    sizes = ((w, h), (h, w) if turned else (w, h))
                except (OSError, UnidentifiedImageError):
                    sizes = None  # an unreadable image: extraction reports it; the import checks nothing
            self._sizes[image_id] = sizes
        return self._sizes[image_id]

    def check_size(self, item_id: str, width: int, height: int) -> str | None:
        sizes = self._image_sizes(item_id)
        if sizes is None or (width, height) in sizes:
            return None
        w, h = sizes[1]
        swapped = " (height and width swapped?)" if (width, height) == (h, w) else ""
        return (
            f"image_w x image_h is {width} x {height}, but the image file {self.paths[item_id]} of "
            f"{item_id!r} is {w} x {h}{swapped}"
        )

    def size(self, item_id: str) -> tuple[int, int] | None:
        sizes = self._image_sizes(item_id)
        return None if sizes is None else sizes[1]  # detectors read images turned upright (cv2, PIL + EXIF)


def vg_names() -> Callable[[str, str], int]:
    """VinVL class / attribute names -> Visual Genome ids (any synonym of a line); -1 if absent.
    The function's `unknown` Counter holds the names it could not place."""
    from lighthead.extract.regions import vocab

    index = {
        kind: {s: i for i, line in enumerate(vocab.synonyms(f"{kind}s")) for s in line}
        for kind in ("object", "attribute")
    }
    unknown: Counter = Counter()

    def names(kind: str, name: str) -> int:
        i = index[kind].get(name.strip().lower(), -1)
        if i < 0:
            unknown[name] += 1
        return i

    names.unknown = unknown  # type: ignore[attr-defined]
    return names


# -- imports ----------------------------------------------------------------------------------


def _records(store: Any) -> list[Record]:
    return [Record.from_json(o) for o in store.read_json("records")] if store.has_json("records") else []


def import_features(
    fmt: str,
    src: str | Path,
    dest: str | Path,
    name: str | None = None,
    *,
    dtype: str = "float16",
    boxes: int | None = None,
    caps_per_image: int = PER_IMAGE,
    dataset: str | None = None,
    progress: Callable | None = None,
    **writer_opts: Any,
) -> ImportSummary:
    """Import `src` (a format of `lighthead.store.formats.IMPORT_FORMATS`) into the store `dest`;
    see the module doc."""
    from lighthead.store.formats import IMPORT_FORMATS

    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"unknown import format {fmt!r}; use {', '.join(IMPORT_FORMATS.names())}")
    spec = IMPORT_FORMATS.get(fmt)
    if not spec.regions:  # precomp: a whole trainable dataset store, not features for one
        return import_precomp_dataset(
            src,
            dest,
            name,
            dtype=dtype,
            caps_per_image=caps_per_image,
            dataset=dataset,
            progress=progress,
            **writer_opts,
        )
    name = name or spec.default_set
    records = _records(open_store(dest)) if Path(dest).is_dir() else []
    images = [r for r in records if r.image_id]
    target = DatasetImages(images) if images else None
    names = vg_names() if spec.vg_names else None
    added = spec.read(
        src,
        dest,
        name,
        dtype=dtype,
        boxes=boxes,
        progress=progress,
        target=target,
        **({"names": names} if names else {}),
        **writer_opts,
    )
    summary = ImportSummary(name, added)
    if target is not None and target.unmatched and not target.claimed:
        raise StoreError(
            f"{src}: none of its {len(target.unmatched)} ids matches an image of the dataset in {dest} "
            f"({len(target.paths)} images, ids like {next(iter(target.paths))!r}; the source's are like "
            f"{target.unmatched[0][0]!r}); nothing imported"
        )
    if target is not None:
        summary.unmatched = target.unmatched
        store = open_store(dest)
        held = set(store[name].ids) if name in store else set()
        summary.missing = sorted({r.image_id for r in images} - held)
    unknown = names.unknown if names else None
    if unknown:
        top = ", ".join(f"{n!r} ({c})" for n, c in unknown.most_common(5))
        summary.notes.append(
            f"{sum(unknown.values())} boxes name a class or attribute outside the Visual Genome "
            f"lists (stored as id -1): {top}"
        )
    return summary


def precomp_records(parts: list[Any], caps_per_image: int) -> list[Record]:
    """One image record per precomp image: id `{split}/{i}`, its caption lines (stripped, as
    SCAN strips them; a line that is not UTF-8 is an error naming the file and line) as texts,
    the record split from PRECOMP_SPLITS (with both `test` and `testall`, the 1K `test` becomes
    `test1k`: COCO's 5K test is `testall`)."""
    prefixes = {p.split for p in parts}
    out = []
    for p in parts:
        split = "test1k" if p.split == "test" and "testall" in prefixes else PRECOMP_SPLITS.get(p.split, p.split)
        for i in range(p.n_images):
            extra: dict[str, Any] = {"precomp_split": p.split, "index": i}
            if p.source_ids is not None:
                extra["source_id"] = p.source_ids[i]
            out.append(
                Record(
                    id=f"{p.split}/{i}",
                    image_id=f"{p.split}/{i}",
                    image_path="",
                    split=split,
                    kind="image",
                    texts=[p.caption(j) for j in range(i * caps_per_image, (i + 1) * caps_per_image)],
                    extra=extra,
                )
            )
    return out


def precomp_dataset_name(src: Path) -> str:
    """SCAN's folder names (`f30k_precomp`, `coco_precomp`) name a registered dataset, whose head
    defaults then apply; any other folder name is kept as it is (made safe)."""
    from lighthead.pipelines.datasets import DATASETS

    folder = src.resolve().name
    stem = folder[: -len("_precomp")] if folder.endswith("_precomp") else ""
    if stem in DATASETS.names():
        return stem
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", folder) or "precomp"


def import_precomp_dataset(
    src: str | Path,
    dest: str | Path,
    name: str | None = None,
    *,
    dtype: str = "float16",
    caps_per_image: int = PER_IMAGE,
    dataset: str | None = None,
    progress: Callable | None = None,
    **writer_opts: Any,
) -> ImportSummary:
    """A precomp folder as a trainable store: features, records, dataset name, vocabulary, word ids.

    The feature set defaults to `regions/butd-r101-vg-36` when the folder holds 36 regions per
    image (SCAN's data are bottom-up-attention's 36 ResNet-101 regions, the set the retrieval
    heads read by default), else `regions/precomp`. The dataset name defaults to the folder's
    name (SCAN's `--data_name`, e.g. `f30k_precomp`).
    """
    from lighthead.pipelines.features import ExtractOptions
    from lighthead.pipelines.features.words import FEATURE_SET, run_words
    from lighthead.store.importers import import_precomp, read_precomp

    src = Path(src)
    parts = read_precomp(src, None, caps_per_image)
    records = precomp_records(parts, caps_per_image)
    if Path(dest).is_dir():
        held = _records(open_store(dest))
        if held and [r.to_json() for r in held] != [r.to_json() for r in records]:
            raise StoreError(
                f"{dest}: already holds other records ({len(held)}); import this precomp folder into a store of its own"
            )
    k = parts[0].ims.shape[1]
    name = name or ("regions/butd-r101-vg-36" if k == 36 else "regions/precomp")
    added = import_precomp(
        src, dest, name, dtype=dtype, caps_per_image=caps_per_image, progress=progress, **writer_opts
    )
    store = open_store(dest)
    dataset = dataset or precomp_dataset_name(src)
    store.write_json("dataset", {"name": dataset, "root": str(src.resolve()), "imported_from": "precomp"})
    store.write_json("records", [r.to_json() for r in records])
    summary = ImportSummary(name, added, records=len(records), dataset=dataset)
    splits = Counter(r.split for r in records)
    summary.notes.append("records: " + ", ".join(f"{s} {n}" for s, n in splits.items()) + " images")
    if splits.get("train"):
        words = run_words(records, store, ExtractOptions(progress=progress is not None))
        summary.notes.append(
            f"{FEATURE_SET}: {words.written} new caption word-id lists "
            f"(vocabulary of {len(store.read_json('vocab')['words'])} words)"
        )
    else:
        summary.notes.append("no train split: no vocabulary built (heads can be evaluated here, not trained)")
    return summary


# -- exports ----------------------------------------------------------------------------------


def _default_export_set(store: Any) -> str:
    for name in ("regions/precomp", "regions/butd-r101-vg-36"):
        if name in store:
            return name
    fixed = [n for n in store.names() if n.startswith("regions/") and not store[n].fields["features"].variable]
    if len(fixed) == 1:
        return fixed[0]
    raise StoreError(
        f"{store.path}: pick the feature set with --name (fixed-size region sets: {', '.join(fixed) or 'none'})"
    )


def precomp_groups(records: list[Record]) -> tuple[dict[str, list[str]], dict[str, bytes], dict[str, str]]:
    """(precomp split -> image ids in training order, image id -> caption lines, image id ->
    `{split}_ids.txt` line) from a store's image records. Records of a precomp import go back to
    their own files and order; others are grouped by split (val as `dev`), keeping the images
    with at least five captions and their first five, as training does."""
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    captions, ids = {}, {}
    for n, r in enumerate(x for x in records if x.kind == "image"):
        if "precomp_split" in r.extra:
            groups[r.extra["precomp_split"]].append((int(r.extra["index"]), r.image_id))
            if "source_id" in r.extra:
                ids[r.image_id] = str(r.extra["source_id"])
            continue
        if len(r.texts) < PER_IMAGE:
            continue
        groups[RECORD_TO_PRECOMP.get(r.split, r.split)].append((n, r.image_id))
        captions[r.image_id] = "".join(re.sub(r"[\r\n]+", " ", t) + "\n" for t in r.texts[:PER_IMAGE]).encode("utf-8")
        ids[r.image_id] = r.image_id
    return {s: [i for _, i in sorted(v)] for s, v in groups.items()}, captions, ids


def export_features(
    fmt: str,
    src: str | Path,
    dest: str | Path,
    name: str | None = None,
    *,
    dtype: str = "float32",
    split: str | None = None,
    layout: str = "auto",
    progress: Callable | None = None,
) -> list[Path]:
    """Export a feature set of the store `src` in a format of `lighthead.store.formats.EXPORT_FORMATS`:
    precomp (a folder, by the store's splits and captions), tsv (a file) or npz (a folder)."""
    from lighthead.store.exporters import export_precomp
    from lighthead.store.formats import EXPORT_FORMATS

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use {', '.join(EXPORT_FORMATS.names())}")
    spec = EXPORT_FORMATS.get(fmt)
    store = open_store(src)
    if fmt == "tsv":
        return [spec.write(store, dest, name or spec.default_set, layout=layout, progress=progress)]
    if fmt != "precomp":
        written = spec.write(store, dest, name or spec.default_set, progress=progress)
        return written if isinstance(written, list) else [written]
    name = name or _default_export_set(store)
    records = _records(store)
    if split is None and any(r.kind == "image" for r in records):
        groups, captions, ids = precomp_groups(records)
        return export_precomp(
            store, dest, name, dtype=dtype, groups=groups, captions=captions or None, ids=ids or None, progress=progress
        )
    return export_precomp(store, dest, name, dtype=dtype, split=split, progress=progress)
