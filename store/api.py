"""`Store`: one directory per dataset, holding feature sets and small JSON artifacts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from lighthead.store.errors import StoreError
from lighthead.store.manifest import atomic_write
from lighthead.store.reader import FeatureSet
from lighthead.store.schema import MANIFEST, Field, check_name
from lighthead.store.verify import feature_set_dirs, info, root_problem, verify
from lighthead.store.writer import Writer, WriterConfig


class Store:
    """A store directory. Use `open_store(path)` to get one."""

    def __init__(self, path: Path, check_reads: bool | None = None):
        self.path = Path(path)
        self.check_reads = check_reads  # None: LIGHTHEAD_STORE_CHECK_READS decides (default on)
        self._cache: dict[str, tuple[tuple, FeatureSet]] = {}

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- feature sets ----------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of the feature sets, e.g. ['global/resnet18', 'regions/butd-r101-vg-36']."""
        return [name for name, _ in feature_set_dirs(self.path)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self.path / check_name(name) / MANIFEST).is_file()

    def __getitem__(self, name: str) -> FeatureSet:
        """Open a feature set; reopened only when its manifest changed since the last call."""
        name = check_name(name)
        manifest = self.path / name / MANIFEST
        try:
            st = manifest.stat()
        except FileNotFoundError:
            raise KeyError(f"no feature set {name!r} in {self.path}; have {self.names()}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(name)
        if cached is None or cached[0] != stamp:
            cached = (stamp, FeatureSet(self.path / name, name, self.check_reads))
            self._cache[name] = cached
        return cached[1]

    def writer(
        self,
        name: str,
        fields: Sequence[Field] | None,
        attrs: Mapping[str, Any] | None = None,
        config: WriterConfig | None = None,
        **overrides: Any,
    ) -> Writer:
        """A Writer appending to feature set `name` (created on first use).

        `attrs` is the caller's JSON dict (extractor, config, weights hash); library versions
        are added automatically. Overrides are WriterConfig fields (tag, shard_bytes, ...).
        """
        if config is not None and overrides:
            raise TypeError("pass either config or keyword overrides, not both")
        cfg = config or WriterConfig(**overrides)
        name = check_name(name)
        return Writer(self.path / name, name, fields, attrs, cfg)

    # -- JSON artifacts ----------------------------------------------------------------------
    def _json_path(self, name: str) -> Path:
        return self.path / "meta" / (check_name(name, "JSON artifact") + ".json")

    def write_json(self, name: str, obj: Any) -> Path:
        """Store a small JSON artifact atomically as `<store>/meta/<name>.json`."""
        path = self._json_path(name)
        data = json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        return path

    def read_json(self, name: str) -> Any:
        path = self._json_path(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{path}: no JSON artifact {name!r}") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: bad JSON: {exc}") from None

    def has_json(self, name: str) -> bool:
        return self._json_path(name).is_file()

    def json_names(self) -> list[str]:
        meta = self.path / "meta"
        if not meta.is_dir():
            return []
        return sorted(p.relative_to(meta).as_posix()[:-5] for p in meta.rglob("*.json"))

    # -- whole-store checks ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return info(self.path)

    def verify(self, checksums: bool = True) -> list[str]:
        return verify(self.path, checksums)


def open_store(path: str | os.PathLike, create: bool = False, check_reads: bool | None = None) -> Store:
    """Open the store at `path`; `create=True` makes the directory if needed. `check_reads=False`
    reads without checking chunk checksums (default: on unless LIGHTHEAD_STORE_CHECK_READS=0)."""
    p = Path(path)
    if create and not p.exists() and not p.is_symlink():
        p.mkdir(parents=True, exist_ok=True)  # a file above it: NotADirectoryError, naming it
    problem = root_problem(p)
    if problem:
        missing = not create and not p.exists() and not p.is_symlink()
        raise StoreError(f"{problem} (use create=True to make one)" if missing else problem)
    return Store(p, check_reads)
