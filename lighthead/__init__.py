"""lighthead: offline vision-language features into a sharded HDF5 store, and light heads on them.

The repository keeps one top-level folder per part (`store/`, `extract/`, `heads/`,
`pipelines/`). This folder is the `lighthead` package itself (the version and `python -m
lighthead`); its subpackages `store`, `extract`, `heads` and `pipelines` are relative symlinks to
those folders, so `lighthead/heads/casc.py` is on disk for readers, IDEs and type checkers.
"""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("lighthead")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
