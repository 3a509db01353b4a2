"""`lighthead store ...`: inspect, verify, import and export feature stores."""

from __future__ import annotations

import json
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional

import typer

from lighthead.pipelines.cli.common import fail

app = typer.Typer(help="Inspect, verify, import and export feature stores (sharded HDF5).",
                  no_args_is_help=True, add_completion=False)


class ImportFormat(str, Enum):
    precomp = "precomp"  # SCAN {split}_ims.npy + {split}_caps.txt
    tsv = "tsv"  # bottom-up-attention generate_tsv.py output
    npz = "npz"  # bottom-up-attention.pytorch per-image .npz


class ExportFormat(str, Enum):
    precomp = "precomp"


DEFAULT_NAMES = {"precomp": "regions/precomp", "tsv": "regions/butd-tsv", "npz": "regions/butd-npz"}


@contextmanager
def _progress(label: str) -> Iterator:
    """Progress on stderr (a bar, or plain lines in a log); yields the (done, total) callback importers take."""
    from lighthead.pipelines.console import progress

    with progress(label, None) as tracker:

        def update(done: int, total: Optional[int]) -> None:
            tracker.update(completed=done, total=total)

        yield update


def _empty(path: Path, summary: dict) -> Optional[str]:
    """Why a store is empty (nothing to read), or None: a failed import or extraction must not
    pass for a store."""
    if summary["json"] or any(fs["items"] for fs in summary["feature_sets"].values()):
        return None
    if not summary["feature_sets"]:
        return f"{path}: empty store (no feature sets, no JSON artifacts)"
    return f"{path}: empty store (feature sets {', '.join(summary['feature_sets'])} hold no items)"


@app.command()
def info(path: Path = typer.Argument(..., metavar="STORE", help="store directory"),
         as_json: bool = typer.Option(False, "--json", help="print the summary as JSON")) -> None:
    """Show the feature sets of a store: items, shards, size, fields and attributes.
    Exit 1 if the store is empty."""
    from lighthead.store import StoreError
    from lighthead.store import info as store_info

    try:
        summary = store_info(path)
    except StoreError as exc:
        raise fail(str(exc))
    empty = _empty(path, summary)
    if empty:
        raise fail(empty)
    from lighthead.pipelines.regions_view import add_object_names

    add_object_names(path, summary)  # region sets: their most frequent object names
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    from rich.table import Table

    from lighthead.pipelines.console import console as make_console

    table = Table(title=f"store {summary['path']}")
    for col in ("feature set", "items", "shards", "MiB", "field", "shape", "dtype", "weights"):
        table.add_column(col, overflow="fold")
    for name, fs in summary["feature_sets"].items():
        attrs = fs["attrs"]
        weights = "[red]random[/red]" if attrs.get("random_weights") else ""
        for i, (field, spec) in enumerate(fs["fields"].items()):
            shape = "(" + ", ".join("*" if d is None else str(d) for d in spec["shape"]) + ")"
            head = (name, str(fs["items"]), str(fs["shards"]), f"{fs['bytes'] / 2**20:.1f}") if i == 0 else ("",) * 4
            table.add_row(*head, field, shape, spec["dtype"], weights if i == 0 else "",
                          end_section=i == len(fs["fields"]) - 1)
    console = make_console()
    console.print(table)
    for name, fs in summary["feature_sets"].items():
        top = fs.get("objects", {}).get("top_objects")
        if top:
            console.print(f"{name}: most frequent objects: " + ", ".join(f"{n} ({c})" for n, c in top),
                          markup=False, highlight=False)
    if summary["json"]:
        console.print("JSON artifacts: " + ", ".join(summary["json"]))


@app.command()
def verify(path: Path = typer.Argument(..., metavar="STORE", help="store directory"),
           checksums: bool = typer.Option(True, help="re-hash every shard (slow on big stores)")) -> None:
    """Re-check checksums, shapes and ids of every shard; one line per problem on stderr (all
    of them), exit 1 if any or if the store is empty."""
    from lighthead.store import StoreError
    from lighthead.store import info as store_info
    from lighthead.store import verify as store_verify

    problems = store_verify(path, checksums=checksums)
    if not problems:
        try:
            empty = _empty(path, store_info(path))
        except StoreError as exc:
            empty = str(exc)
        problems = [empty] if empty else []
    for line in problems:
        typer.echo(f"error: {line}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {path}")


@app.command("import")
def import_(fmt: ImportFormat = typer.Argument(..., metavar="FORMAT", help="precomp, tsv or npz"),
            src: Path = typer.Argument(..., metavar="SRC", help="precomp folder, TSV file or folder, or .npz folder"),
            dest: Path = typer.Argument(..., metavar="DEST", help="store directory (created if absent)"),
            name: Optional[str] = typer.Option(None, metavar="NAME", help="feature-set name (default: regions/precomp, regions/butd-tsv or regions/butd-npz)"),
            dtype: str = typer.Option("float16", metavar="float16|float32", help="feature dtype: float16 or float32"),
            boxes: Optional[int] = typer.Option(None, help="tsv/npz: fixed box count (default variable)"),
            caps_per_image: int = typer.Option(5, help="precomp: caption lines per image"),
            shard_mb: int = typer.Option(256, help="shard size in MiB")) -> None:
    """Import existing features into a store; rerun to resume after an interruption."""
    from lighthead.store import StoreError
    from lighthead.store.importers import import_npz, import_precomp, import_tsv

    if dtype not in ("float16", "float32"):
        raise fail(f"--dtype must be float16 or float32, not {dtype!r}")
    name = name or DEFAULT_NAMES[fmt.value]
    opts = dict(dtype=dtype, shard_bytes=shard_mb << 20)
    try:
        with _progress(f"import {fmt.value}") as progress:
            if fmt is ImportFormat.precomp:
                added = import_precomp(src, dest, name, caps_per_image=caps_per_image, progress=progress, **opts)
            elif fmt is ImportFormat.tsv:
                added = import_tsv(src, dest, name, boxes=boxes, progress=progress, **opts)
            else:
                added = import_npz(src, dest, name, boxes=boxes, progress=progress, **opts)
    except (StoreError, ValueError) as exc:
        raise fail(str(exc))
    typer.echo(f"imported {added} new items into {dest}/{name}")


@app.command("export")
def export(fmt: ExportFormat = typer.Argument(..., metavar="FORMAT", help="precomp"),
           src: Path = typer.Argument(..., metavar="SRC", help="store directory"),
           dest: Path = typer.Argument(..., metavar="DEST", help="output folder"),
           name: str = typer.Option("regions/precomp", metavar="NAME", help="feature set to export"),
           field: str = typer.Option("features", metavar="NAME", help="[K, D] field to write as {split}_ims.npy"),
           dtype: str = typer.Option("float32", metavar="DTYPE", help="dtype of the .npy files"),
           split: Optional[str] = typer.Option(None, metavar="NAME", help="export every item as this split "
                                                          "(ids need not be <split>/<i>)")) -> None:
    """Export a feature set as a SCAN precomp folder ({split}_ims.npy, {split}_caps.txt)."""
    from lighthead.store import StoreError
    from lighthead.store.exporters import export_precomp

    try:
        with _progress("export precomp") as progress:
            files = export_precomp(src, dest, name, field=field, dtype=dtype, split=split, progress=progress)
    except (StoreError, ValueError, TypeError) as exc:
        raise fail(str(exc))
    typer.echo("wrote " + ", ".join(p.name for p in files))


if __name__ == "__main__":  # `python -m lighthead.pipelines.cli.store_cmd ...` without the root CLI
    app(prog_name="lighthead store")
