"""`lighthead show STORE ID`: draw an image's stored regions with their labels."""

from __future__ import annotations

from pathlib import Path

import typer


def show(
    store: Path = typer.Argument(..., metavar="STORE", help="store directory"),
    item_id: str = typer.Argument(..., metavar="ID", help="image id in the region feature set"),
    out: Path = typer.Option(
        ...,
        metavar="FILE.png",
        help="PNG to write (the image's size, one pixel per pixel; an image above 16 megapixels shrunk to 16)",
    ),
    image: Path | None = typer.Option(
        None, metavar="PATH", help="the image file (default: the one the store's records name)"
    ),
    top: int = typer.Option(20, metavar="N", help="draw the N most confident regions (0: all)"),
    features: str | None = typer.Option(
        None, metavar="regions/...", help="region feature set (default: the first holding ID)"
    ),
    attr_threshold: float = typer.Option(0.1, metavar="P", help="name a region's attribute only above this score"),
) -> None:
    """Draw the stored boxes of ID on its image with "attribute object score" labels."""
    from lighthead.pipelines.regions_view import show_regions

    info = show_regions(store, item_id, out, image=image, top=top, feature_set=features, attr_threshold=attr_threshold)
    w, h = info["size"]
    typer.echo(
        f"wrote {info['out']}: {len(info['labels'])} regions of {info['feature_set']} on {info['image']} ({w}x{h})"
    )
