"""lighthead: offline vision-language features into a sharded HDF5 store, and light heads on them.

The repository keeps one top-level folder per part (`store/`, `extract/`, `heads/`,
`pipelines/`); they install as `lighthead.store`, `lighthead.extract`, `lighthead.heads` and
`lighthead.pipelines` (setuptools' package-dir mapping in pyproject.toml). This folder is the
`lighthead` package itself: the version and `python -m lighthead`.
"""

from __future__ import annotations

if __name__ != "lighthead":  # pragma: no cover - a second name would mean a second copy of every registry
    raise ImportError(f"{__file__} is the `lighthead` package; import it as `lighthead`, not {__name__!r}")

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("lighthead")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
