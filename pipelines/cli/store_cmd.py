"""`lighthead store ...`: inspect, verify, import and export feature stores."""

from __future__ import annotations

import json
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Iterator

import typer

from lighthead.pipelines.cli.common import fail
from lighthead.store.formats import EXPORT_FORMATS, IMPORT_FORMATS

app = typer.Typer(
    help="Inspect, verify, import and export feature stores (sharded HDF5).", no_args_is_help=True, add_completion=False
)


# The choices come from the format registries (lighthead.store.formats): a new format needs no edit here.
ImportFormat = Enum("ImportFormat", {n: n for n in IMPORT_FORMATS.names()}, type=str)
ExportFormat = Enum("ExportFormat", {n: n for n in EXPORT_FORMATS.names()}, type=str)


def _with_formats(lines: dict[str, str]):
    """Append one line per format (`name: what SRC/DEST is`) to a command's help."""

    def add(command):
        command.__doc__ = (command.__doc__ or "") + "".join(f"\n\n{n}: {line}" for n, line in lines.items())
        return command

    return add


@contextmanager
def _progress(label: str, unit: str = "items", scale: int = 1) -> Iterator:
    """Progress on stderr (a bar, or plain lines in a log); yields the (done, total) callback importers take.
    `scale`: what the callback counts per unit shown (10**6 bytes for MB)."""
    from lighthead.pipelines.console import progress

    with progress(label, None, unit=unit) as tracker:

        def update(done: int, total: int | None) -> None:
            whole = None if total is None else -(-total // scale)  # rounded up: a small file is 1 MB, not 0
            tracker.update(completed=whole if whole is not None and done >= total else done // scale, total=whole)

        yield update


@app.command()
def info(
    path: Path = typer.Argument(..., metavar="STORE", help="store directory"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    stats: bool = typer.Option(
        False,
        "--stats",
        help="also read the `features` field of each set (its first "
        "1,000 items): value range, per-item mean, max and share of zeros",
    ),
) -> None:
    """Show the feature sets of a store: items, shards, size, fields and attributes.
    Exit 1 if the store is empty."""
    from lighthead.pipelines.store_report import print_report, store_summary
    from lighthead.store import StoreError

    try:
        summary = store_summary(path, stats=stats)
    except StoreError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    print_report(summary)


@app.command()
def verify(
    path: Path = typer.Argument(..., metavar="STORE", help="store directory"),
    checksums: bool = typer.Option(True, help="re-hash every shard (slow on big stores)"),
) -> None:
    """Re-check checksums, shapes and ids of every shard; one line per problem on stderr (all
    of them), exit 1 if any or if the store is empty."""
    from lighthead.pipelines.store_report import empty_reason
    from lighthead.store import StoreError
    from lighthead.store import info as store_info
    from lighthead.store import verify as store_verify

    problems = store_verify(path, checksums=checksums)
    if not problems:
        try:
            empty = empty_reason(path, store_info(path))
        except StoreError as exc:
            empty = str(exc)
        problems = [empty] if empty else []
    for line in problems:
        typer.echo(f"error: {line}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {path}")
    from lighthead.store.shard_upgrade import without_sums

    for name, count in without_sums(path).items():  # a hint, not a problem: they are checked with Fletcher-32
        typer.echo(
            f"note: {name}: {count} shard(s) written before the XXH3 chunk sums; "
            f"`lighthead store upgrade {path}` makes their first reads about three times faster",
            err=True,
        )


@app.command()
def upgrade(
    path: Path = typer.Argument(..., metavar="STORE", help="store directory"),
    name: str = typer.Option(None, "--name", help="only this feature set (default: every one)"),
) -> None:
    """Rewrite the shards written before the per-chunk XXH3 checksums so they have them (a
    first read then checks at memory speed); values, ids and attrs stay as they are. Run it
    while no job reads the store."""
    from lighthead.pipelines.console import progress
    from lighthead.store import upgrade as store_upgrade

    with progress("upgrade", None, unit="items") as tracker:
        done = store_upgrade(path, name, progress=tracker.advance)
    for set_name, (rewritten, kept) in done.items():
        typer.echo(f"{set_name}: {rewritten} shard(s) rewritten with checksums, {kept} had them")


@app.command("import")
@_with_formats({n: IMPORT_FORMATS.get(n).source for n in IMPORT_FORMATS.names()})
def import_(
    fmt: ImportFormat = typer.Argument(..., metavar="FORMAT", help=", ".join(IMPORT_FORMATS.names())),
    src: Path = typer.Argument(..., metavar="SRC", help="what FORMAT reads (below)"),
    dest: Path = typer.Argument(..., metavar="DEST", help="store directory (created if absent)"),
    name: str | None = typer.Option(
        None,
        metavar="NAME",
        help="feature-set name (default: precomp "
        "regions/butd-r101-vg-36 for 36 regions, else regions/precomp; "
        + ", ".join(f"{n} {IMPORT_FORMATS.get(n).default_set}" for n in IMPORT_FORMATS.names() if n != "precomp")
        + ")",
    ),
    dtype: str = typer.Option("float16", metavar="float16|float32", help="feature dtype: float16 or float32"),
    boxes: int | None = typer.Option(None, help="tsv/npz/vinvl: fixed box count K, fewer padded (default variable)"),
    caps_per_image: int = typer.Option(5, help="precomp: caption lines per image"),
    dataset: str | None = typer.Option(
        None, metavar="NAME", help="precomp: dataset name to record (default: the folder's name)"
    ),
    shard_mb: int = typer.Option(256, help="shard size in MiB"),
) -> None:
    """Import existing features into a store; rerun to resume after an interruption.

    precomp makes a store the retrieval heads train on (records, vocabulary, word ids); the region formats go into a dataset's store under the dataset's image ids, unmatched ids listed."""
    from lighthead.pipelines.store_io import import_features
    from lighthead.store import StoreError

    if dtype not in ("float16", "float32"):
        raise fail(f"--dtype must be float16 or float32, not {dtype!r}")
    try:
        with _progress(f"import {fmt.value}", *IMPORT_FORMATS.get(fmt.value).unit) as progress:
            summary = import_features(
                fmt.value,
                src,
                dest,
                name,
                dtype=dtype,
                boxes=boxes,
                caps_per_image=caps_per_image,
                dataset=dataset,
                progress=progress,
                shard_bytes=shard_mb << 20,
            )
    except (StoreError, ValueError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"imported {summary.added} new items into {dest}/{summary.feature_set}")
    for line in summary.notes:
        typer.echo(line)
    if summary.unmatched:
        shown = ", ".join(f"{i!r} ({where})" for i, where in summary.unmatched[:5])
        typer.echo(f"{len(summary.unmatched)} ids match no image of the store's dataset (skipped): {shown}", err=True)
    if summary.missing:
        typer.echo(
            f"{len(summary.missing)} images of the dataset have no features in {summary.feature_set}: "
            + ", ".join(repr(i) for i in summary.missing[:5]),
            err=True,
        )


@app.command("export")
@_with_formats({n: EXPORT_FORMATS.get(n).dest for n in EXPORT_FORMATS.names()})
def export(
    fmt: ExportFormat = typer.Argument(..., metavar="FORMAT", help=", ".join(EXPORT_FORMATS.names())),
    src: Path = typer.Argument(..., metavar="SRC", help="store directory"),
    dest: Path = typer.Argument(..., metavar="DEST", help="what FORMAT writes (below)"),
    name: str | None = typer.Option(
        None, metavar="NAME", help="feature set to export (default: regions/precomp or regions/butd-r101-vg-36)"
    ),
    dtype: str = typer.Option("float32", metavar="DTYPE", help="precomp: dtype of the .npy files"),
    split: str | None = typer.Option(
        None,
        metavar="NAME",
        help="precomp: every item as this one split, in storage order (ids need not be <split>/<i>)",
    ),
    layout: str = typer.Option(
        "auto", metavar="10|6|auto", help="tsv: 10 fields (LXMERT), 6 (Caffe), or auto: 10 when the set has object ids"
    ),
) -> None:
    """Export a feature set in one of the formats below."""
    from lighthead.pipelines.store_io import export_features
    from lighthead.store import StoreError

    try:
        with _progress(f"export {fmt.value}") as progress:
            files = export_features(
                fmt.value, src, dest, name, dtype=dtype, split=split, layout=layout, progress=progress
            )
    except (StoreError, ValueError, TypeError) as exc:
        raise fail(str(exc)) from None
    if len(files) > 8:
        typer.echo(f"wrote {len(files)} files into {dest}")
    else:
        typer.echo("wrote " + ", ".join(p.name for p in files))


if __name__ == "__main__":  # `python -m lighthead.pipelines.cli.store_cmd ...` without the root CLI
    app(prog_name="lighthead store")
