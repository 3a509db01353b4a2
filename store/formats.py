"""The import and export formats, registered by name: the function, the default feature-set
name and a help line each.

`lighthead store import/export` (its choices, help and progress units), `pipelines.store_io`
(the dispatch) and the `lighthead.store` facade read these registries, so a new format is one
reader or writer module plus one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from lighthead.store.exporters import export_npz, export_precomp, export_tsv
from lighthead.store.importers import import_npz, import_precomp, import_tsv, import_vinvl
from lighthead.store.registry import Registry


@dataclass(frozen=True)
class ImportFormat:
    """How one format is imported."""

    read: Callable[..., int]  # import_<fmt>(src, dest, name, *, dtype, progress, ...) -> items added
    default_set: str  # feature-set name when none is given
    source: str  # what SRC is: one help line
    unit: tuple[str, int]  # what its progress counts: (unit shown, counted per unit), e.g. ("MB", 10**6) bytes
    regions: bool = True  # a region import: takes `boxes` and a `target` matching a dataset store's image ids
    vg_names: bool = False  # names classes and attributes in words: reads the Visual Genome name lists


@dataclass(frozen=True)
class ExportFormat:
    """How one format is exported."""

    write: Callable[..., Any]  # export_<fmt>(store, dest, name, *, progress, ...) -> file(s) written
    default_set: str  # feature set exported when none is given
    dest: str  # what DEST is: one help line


IMPORT_FORMATS: Registry[ImportFormat] = Registry("import format")
EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")

IMPORT_FORMATS.register("precomp")(
    ImportFormat(
        import_precomp,
        "regions/precomp",
        "SCAN / VSE++ precomp folder: {split}_ims.npy + {split}_caps.txt (+ {split}_ids.txt)",
        ("images", 1),
        regions=False,
    )
)
IMPORT_FORMATS.register("tsv")(
    ImportFormat(
        import_tsv,
        "regions/butd-tsv",
        "bottom-up-attention TSV file or folder, 6 (Caffe) or 10 (py-bottom-up-attention / LXMERT) fields",
        ("MB", 10**6),
    )
)
IMPORT_FORMATS.register("npz")(
    ImportFormat(
        import_npz, "regions/butd-npz", "folder of per-image .npz (bottom-up-attention.pytorch or UNITER)", ("files", 1)
    )
)
IMPORT_FORMATS.register("vinvl")(
    ImportFormat(
        import_vinvl,
        "regions/vinvl",
        "VinVL / Oscar+ folder or features.tsv (+ predictions.tsv, .lineidx, .hw.tsv)",
        ("MB", 10**6),
        vg_names=True,
    )
)

EXPORT_FORMATS.register("precomp")(
    ExportFormat(
        export_precomp, "regions/precomp", "folder: {split}_ims.npy + {split}_caps.txt (+ {split}_ids.txt) per split"
    )
)
EXPORT_FORMATS.register("tsv")(
    ExportFormat(export_tsv, "regions/butd-r101-vg-36", "one TSV file, 10 fields (LXMERT's load_obj_tsv) or 6 (Caffe)")
)
EXPORT_FORMATS.register("npz")(
    ExportFormat(
        export_npz, "regions/butd-r101-vg-36", "folder of one <id>.npz per image (bottom-up-attention.pytorch's keys)"
    )
)
