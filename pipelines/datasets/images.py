"""Any folder of images (`--dataset images --root DIR`), with optional captions.

Layout under the root::

    **/*.jpg, *.png, ...      every image file, in any sub-folder (extensions in IMAGE_EXTENSIONS,
                              any case)
    captions.jsonl            optional: one {"image": ..., "caption": ...} object per line

One record per image, kind "image". Its id (and image id) is the path relative to the root
without the extension, with '/' separators: `photos/2019/a b.JPG` under `photos/` -> `2019/a b`
(`a.b.c.png` -> `a.b.c`: only the last extension goes). Two files that share an id (`a.jpg` and
`a.png`) are an error naming both. Files with other extensions are ignored and reported in one
warning; hidden files and folders (names starting with '.') are skipped, as are symbolic
links that point outside the root, folder links (not followed), and names that are not valid
UTF-8 text or hold control characters (reported). A sub-folder that cannot be read (no
permission) is left out with a warning naming it; a root that cannot be read is an error.

captions.jsonl: "image" names an image by its path relative to the root (with extension) or
by its id; an image may have any number of lines (its captions, in file order) and an
optional "split" ("train", "val" or "test"; default "train", the same on every line of that
image). A malformed line is an error naming the file and line.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from lighthead.pipelines.datasets.base import DATASETS, DatasetError, Record, read_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CAPTIONS = "captions.jsonl"
DEFAULT_SPLIT = "train"  # split of an image no caption line gives one
_SPLITS = ("train", "val", "test")
_SHOWN = 5  # names listed in a warning


def _odd_name(rel: str) -> str | None:
    """Why a relative path cannot be an id, or None."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 come back from the OS as surrogates
        return "not valid UTF-8"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "control characters in the name"
    return None


def scan(root: Path) -> tuple[dict[str, Path], list[str], list[str], list[str]]:
    """Image id -> file under `root` (recursive, sorted), the ignored non-image files, the
    skipped names with their reason and the sub-folders that could not be read (with the
    reason). Raises DatasetError when two files share an id or the root cannot be read."""
    root = Path(root)
    real_root = root.resolve()
    images: dict[str, Path] = {}
    ignored: list[str] = []
    skipped: list[str] = []
    unreadable: list[str] = []

    def cannot_list(exc: OSError) -> None:  # os.walk would skip the folder without a word
        where = Path(exc.filename) if exc.filename else root
        if where == root:
            raise DatasetError(f"{root}: cannot list the folder ({exc.strerror or exc})")
        rel = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
        unreadable.append(f"{rel}/ ({exc.strerror or exc})")

    for folder, dirs, files in os.walk(root, onerror=cannot_list, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel == CAPTIONS:
                continue
            why = _odd_name(rel)
            if why:
                skipped.append(f"{rel!r} ({why})")
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored.append(rel)
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                skipped.append(f"{rel} (a link to {path.resolve()}, outside {root})")
                continue
            image_id = str(PurePosixPath(rel).with_suffix(""))
            if image_id in images:
                raise DatasetError(
                    f"image id {image_id!r} names two files: {images[image_id]} and {path}; image ids "
                    "are paths without the extension, so rename one"
                )
            images[image_id] = path
    return images, sorted(ignored), sorted(skipped), sorted(unreadable)


def _line_error(where: str, what: str) -> DatasetError:
    return DatasetError(
        f'{where}: {what}; expected {{"image": <path or id>, "caption": <text>}} (optional "split": train, val or test)'
    )


def read_captions(path: Path, images: dict[str, Path], root: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Captions per image id and the split lines give, from a captions.jsonl file."""
    by_path = {p.relative_to(root).as_posix(): i for i, p in images.items()}
    captions: dict[str, list[str]] = {}
    splits: dict[str, tuple[str, int]] = {}  # id -> (split, line that set it)
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError as e:
            raise _line_error(where, f"not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise _line_error(where, f"a JSON {type(obj).__name__}, not an object")
        for key in ("image", "caption"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                got = "missing" if key not in obj else f"{json.dumps(obj[key])[:40]}"
                raise _line_error(where, f"{key!r} is {got}")
        name = obj["image"].strip().replace("\\", "/")
        name = name[2:] if name.startswith("./") else name
        image_id = by_path.get(name) or (name if name in images else None)
        if image_id is None:
            raise DatasetError(
                f"{where}: image {obj['image']!r} is not an image under {root} "
                "(give its path relative to the root, or its id: the path without the extension)"
            )
        split = obj.get("split", None)
        if split is not None:
            if split not in _SPLITS:
                raise DatasetError(f"{where}: unknown split {split!r}; expected one of {list(_SPLITS)}")
            held = splits.setdefault(image_id, (split, n))
            if held[0] != split:
                raise DatasetError(
                    f"{where}: image {image_id!r} is in split {split!r} here but {held[0]!r} on line {held[1]}"
                )
        captions.setdefault(image_id, []).append(" ".join(obj["caption"].split()))
    return captions, {i: s for i, (s, _) in splits.items()}


def _listing(names: list[str]) -> str:
    more = f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


@DATASETS.register("images")
def load(root: Path) -> list[Record]:
    """Every image under the root (recursive), with its captions from captions.jsonl if present."""
    root = Path(root)
    images, ignored, skipped, unreadable = scan(root)
    if unreadable:
        warnings.warn(
            f"{root}: {len(unreadable)} folder(s) could not be read, their images are left out: {_listing(unreadable)}",
            stacklevel=2,
        )
    if ignored:
        warnings.warn(
            f"{root}: {len(ignored)} file(s) without an image extension ignored: {_listing(ignored)}", stacklevel=2
        )
    if skipped:
        warnings.warn(f"{root}: {len(skipped)} file(s) skipped: {_listing(skipped)}", stacklevel=2)
    if not images:
        raise DatasetError(
            f"{root}: no image files found (extensions {', '.join(IMAGE_EXTENSIONS)}, any case, in any sub-folder)"
        )
    captions, splits = ({}, {})
    if (root / CAPTIONS).is_file():
        captions, splits = read_captions(root / CAPTIONS, images, root)
    return [
        Record(
            id=image_id,
            image_id=image_id,
            image_path=str(path.absolute()),
            texts=captions.get(image_id, []),
            split=splits.get(image_id, DEFAULT_SPLIT),
            kind="image",
            extra={"file": path.relative_to(root).as_posix()},
        )
        for image_id, path in images.items()
    ]
