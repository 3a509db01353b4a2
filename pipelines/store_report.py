"""The store report: what `lighthead store info` and `lighthead demo` print about a store.

`store_summary(path)` is `lighthead.store.info` plus the most frequent object names of region
sets and (stats) value statistics of each `features` field; an empty store is an error.
`print_report(summary)` prints it as a table with those lines below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console


def empty_reason(path: str | os.PathLike, summary: dict) -> str | None:
    """Why a store is empty (nothing to read), or None: a failed import or extraction must not
    pass for a store."""
    if summary["json"] or any(fs["items"] for fs in summary["feature_sets"].values()):
        return None
    if not summary["feature_sets"]:
        return f"{path}: empty store (no feature sets, no JSON artifacts)"
    return f"{path}: empty store (feature sets {', '.join(summary['feature_sets'])} hold no items)"


def store_summary(path: str | os.PathLike, stats: bool = False) -> dict[str, Any]:
    """The JSON-able summary of the store at `path`; StoreError when it cannot be read or is empty."""
    from lighthead.pipelines.regions_view import add_object_names
    from lighthead.store import StoreError
    from lighthead.store import info as store_info

    summary = store_info(path)
    empty = empty_reason(path, summary)
    if empty:
        raise StoreError(empty)
    add_object_names(Path(path), summary)  # region sets: their most frequent object names
    if stats:
        from lighthead.store import open_store
        from lighthead.store.stats import field_stats

        store = open_store(path)
        for name, fs in summary["feature_sets"].items():
            if fs["items"] and "features" in fs["fields"]:
                fs["stats"] = {"features": field_stats(store[name], "features")}
    return summary


def print_report(summary: dict[str, Any], console: Console | None = None) -> None:
    """The table of feature sets and fields, then object names, value statistics and JSON artifacts."""
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
            table.add_row(
                *head, field, shape, spec["dtype"], weights if i == 0 else "", end_section=i == len(fs["fields"]) - 1
            )
    console = console or make_console()
    console.print(table)
    for name, fs in summary["feature_sets"].items():
        top = fs.get("objects", {}).get("top_objects")
        if top:
            console.print(
                f"{name}: most frequent objects: " + ", ".join(f"{n} ({c})" for n, c in top),
                markup=False,
                highlight=False,
            )
    for name, fs in summary["feature_sets"].items():
        st = fs.get("stats", {}).get("features")
        if st and st["items"]:
            console.print(
                f"{name}: features over {st['items']} items: min {st['min']:.4g}, max {st['max']:.4g}, "
                f"mean {st['mean']:.4g}; per item: mean {st['item_mean'][0]:.3g}-{st['item_mean'][1]:.3g}, "
                f"max {st['item_max'][0]:.3g}-{st['item_max'][1]:.3g}, "
                f"zeros {100 * st['zero_fraction'][0]:.0f}-{100 * st['zero_fraction'][1]:.0f}%",
                markup=False,
                highlight=False,
            )
    if summary["json"]:
        console.print("JSON artifacts: " + ", ".join(summary["json"]))
