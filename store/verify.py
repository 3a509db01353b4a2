"""`verify` re-checks a store byte by byte; `info` summarises it from the manifests alone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lighthead.store.errors import StoreError
from lighthead.store.manifest import read_manifest, sha256_file
from lighthead.store.schema import MANIFEST, SHARD_RE, check_shard_file
from lighthead.store.shard import ShardReader, open_h5, whole


def root_problem(root: Path) -> str | None:
    """Why `root` is not a store folder (missing, a file, a link to nothing), or None."""
    if root.is_dir():
        return None
    if root.is_symlink() and not root.exists():
        return f"{root}: no such store directory (a link to {os.readlink(root)}, which does not exist)"
    if root.exists():
        return f"{root}: is not a directory (a store is a folder)"
    return f"{root}: no such store directory"


def feature_set_dirs(root: Path, errors: list[str] | None = None) -> list[tuple[str, Path]]:
    """(name, directory) of every feature set under a store root, sorted by name.

    Symlinked folders are followed (training reads through them, so they are checked too),
    each real folder once, so a link back up the tree is no loop. Folders that cannot be
    listed, links that point at nothing and folders holding shards but no manifest (a deleted
    manifest: nothing there can be read) are added to `errors` when given.
    """
    root = Path(root)
    found: list[tuple[str, Path]] = []
    seen: set[tuple[int, int]] = set()
    problems = errors if errors is not None else []

    def walk(here: Path, name: str) -> None:
        try:
            st = os.stat(here)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(here) as it:
                entries = sorted((e.name, e.is_dir(), e.is_symlink()) for e in it)  # is_dir follows symlinks
        except OSError as exc:
            problems.append(f"{here}: cannot list folder: {exc}")
            return
        if name and any(n == MANIFEST and not is_dir for n, is_dir, _ in entries):
            found.append((name, here))
        elif name and any((m := SHARD_RE.match(n)) and not m["tmp"] for n, _, _ in entries):
            problems.append(f"{here}: holds shards but no {MANIFEST} (deleted?): feature set {name!r} cannot be read")
        for n, is_dir, link in entries:
            if n.startswith("."):
                continue
            if link and not os.path.exists(here / n):
                problems.append(f"{here / n}: a link to {os.readlink(here / n)}, which does not exist")
            elif is_dir and not (not name and n == "meta"):
                walk(here / n, f"{name}/{n}" if name else n)

    walk(root, "")
    return sorted(found)


def verify_feature_set(directory: Path, checksums: bool = True) -> list[str]:
    """Problems of one feature set, one line each, naming the file. Every shard is checked,
    whatever went wrong with the ones before it."""
    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except StoreError as exc:
        return [str(exc)]
    problems: list[str] = []
    seen: dict[str, str] = {}
    files = [s.file for s in manifest.shards]
    if len(set(map(str, files))) != len(files):
        problems.append(f"{directory / MANIFEST}: a shard is listed twice")
    for entry in manifest.shards:
        try:
            path = directory / check_shard_file(entry.file, directory / MANIFEST)
        except StoreError as exc:
            problems.append(str(exc))
            continue
        try:
            problems += _check_entry(path, entry, manifest.fields, seen, checksums)
        except Exception as exc:  # noqa: BLE001 - a verifier reports whatever it meets and goes on
            text = str(exc) or type(exc).__name__
            problems.append(text if text.startswith(str(path)) else f"{path}: {text}")
    return problems


def _check_entry(path: Path, entry, fields, seen: dict[str, str], checksums: bool) -> list[str]:
    if not path.exists():
        return [f"{path}: listed in the manifest but missing"]
    if not path.is_file():
        return [f"{path}: not a file"]
    size = path.stat().st_size
    if size != entry.bytes:
        return [f"{path}: {size} bytes, manifest says {entry.bytes} (truncated or replaced)"]
    if checksums and sha256_file(path) != entry.sha256:
        return [f"{path}: sha256 mismatch (file changed since it was written)"]
    problems = _check_shard(path, entry, fields, seen)
    if checksums and not problems:  # what a reader checks: each chunk against its XXH3 sum
        reader = ShardReader(path, dict(fields), entry.rows, check=True)
        try:
            reader.load_index()
            reader.check_sums()
        except StoreError as exc:
            problems.append(str(exc))
        finally:
            reader.close()
    return problems


def _check_shard(path: Path, entry, fields, seen: dict[str, str]) -> list[str]:
    problems = []
    with open_h5(path) as f:
        ids = list(whole(f["ids"], path).asstr()[...])
        if len(ids) != entry.rows:
            problems.append(f"{path}: {len(ids)} ids, manifest says {entry.rows}")
        elif ids and (ids[0] != entry.first_id or ids[-1] != entry.last_id):
            problems.append(f"{path}: id range differs from the manifest")
        for i in ids:
            if i in seen:
                problems.append(f"{path}: id {i!r} also stored in {seen[i]}")
            seen[i] = path.name
        for name, fld in fields.items():
            ds = f["fields"][name]
            if ds.dtype != fld.np_dtype:
                problems.append(f"{path}: field {name!r} has dtype {ds.dtype}, manifest says {fld.dtype}")
            if fld.variable:
                off = whole(f["offsets"][name], path)[...]
                ok = (
                    len(off) == len(ids) + 1
                    and off[0] == 0
                    and bool(np.all(np.diff(off) >= 0))
                    and off[-1] == ds.shape[0]
                    and ds.shape[1:] == fld.row_shape
                )
                if not ok:
                    problems.append(f"{path}: field {name!r}: offsets/shape inconsistent")
            elif ds.shape != (len(ids), *fld.shape):
                problems.append(f"{path}: field {name!r} has shape {ds.shape}, expected {(len(ids), *fld.shape)}")
    return problems


def verify(path: str | os.PathLike, checksums: bool = True, strict: bool = False) -> list[str]:
    """Re-check every feature set (checksums, shapes, ids) and JSON artifact of a store.

    Returns one line per problem, each naming the file; empty means healthy. Leftovers of
    interrupted writers (`*.tmp`, unlisted shards) are not problems: the next writer removes
    them and readers never see them. `strict=True` raises StoreError instead of returning.
    """
    root = Path(path)
    problem = root_problem(root)
    if problem:
        problems = [problem]
    else:
        problems = []
        sets = feature_set_dirs(root, problems)
        for _, directory in sets:
            problems += verify_feature_set(directory, checksums)
        meta = root / "meta"
        if meta.is_dir():
            for p in sorted(meta.rglob("*.json")):
                try:
                    json.loads(p.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    problems.append(f"{p}: bad JSON: {exc}")
    if strict and problems:
        raise StoreError("; ".join(problems))
    return problems


def info(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-able summary: feature sets with item counts, fields, shapes, dtypes, attrs."""
    root = Path(path)
    problem = root_problem(root)
    if problem:
        raise StoreError(problem)
    sets = {}
    for name, directory in feature_set_dirs(root):
        m = read_manifest(directory)
        sets[name] = {
            "items": m.rows,
            "shards": len(m.shards),
            "bytes": sum(s.bytes for s in m.shards),
            "fields": {
                f.name: {"shape": list(f.shape), "dtype": f.dtype, "variable": f.variable} for f in m.fields.values()
            },
            "attrs": m.attrs,
            "library_versions": m.versions,
        }
    meta = root / "meta"
    artifacts = sorted(p.relative_to(meta).as_posix()[:-5] for p in meta.rglob("*.json")) if meta.is_dir() else []
    return {"path": str(root.resolve()), "feature_sets": sets, "json": artifacts}
