"""The files of one export appear together, complete, or not at all.

An export writes each file under a temporary name (`<name>.tmp`) and renames them all once
every one is complete; when it fails, the temporary files are deleted, and so are the folders
it created, so a failed export leaves neither a `.tmp` nor a partial folder behind (files of an
earlier export in that folder stay as they were).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from lighthead.store.manifest import fsync_dir

TMP_SUFFIX = ".tmp"


class ExportOutput:
    """`with ExportOutput(folder) as out: write(out.tmp("a.npy")); ...` publishes `folder/a.npy`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.names: list[str] = []  # files to publish, in the order asked for
        self.created: list[Path] = []  # folders this export made, innermost first

    def __enter__(self) -> ExportOutput:
        missing = []
        here = self.folder
        while not here.exists() and here != here.parent:
            missing.append(here)
            here = here.parent
        self.folder.mkdir(parents=True, exist_ok=True)
        self.created = missing
        return self

    def tmp(self, name: str) -> Path:
        """Where to write file `name` (a temporary name, renamed on success)."""
        self.names.append(name)
        return self.folder / (name + TMP_SUFFIX)

    def final(self, name: str) -> Path:
        return self.folder / name

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            try:
                for name in self.names:
                    os.replace(self.folder / (name + TMP_SUFFIX), self.folder / name)
            except BaseException:
                self._discard()
                raise
            fsync_dir(self.folder)
            return False
        self._discard()
        return False

    def _discard(self) -> None:
        """Delete the temporary files not yet renamed and the folders this export made."""
        for name in self.names:
            with contextlib.suppress(OSError):
                os.unlink(self.folder / (name + TMP_SUFFIX))
        for folder in self.created:  # innermost first; a folder someone else filled meanwhile stays
            with contextlib.suppress(OSError):
                folder.rmdir()
