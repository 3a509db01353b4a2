"""`lighthead demo`: the whole pipeline on the generated demo dataset, on a CPU, in minutes.

Stages, in order (each later project stage adds itself here):
1. generate the demo images and annotations (`pipelines.datasets.demo`);
2. open the store and save the dataset's records in it;
3. print what the store holds (`store info`).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

console = Console()


def run_demo(out: Path, n_images: int = 300, seed: int = 0) -> Path:
    """Run every demo stage under `out` (data/, store/, runs/); returns the store path."""
    from pipelines.datasets import demo, load_records
    from store import open_store

    out = Path(out)
    data = demo.generate(out / "data", n_images=n_images, seed=seed)
    console.print(f"[bold]demo data[/bold]: {n_images} images in {data}")

    store_path = out / "store"
    records = load_records("demo", data)
    store = open_store(store_path, create=True)
    store.write_json("records", [r.to_json() for r in records])
    store.write_json("dataset", {"name": "demo", "root": str(data.resolve())})
    console.print(f"[bold]store[/bold]: {store_path} ({len(records)} records)")

    print_store_info(store_path)
    return store_path


def print_store_info(store_path: Path) -> None:
    from pipelines.cli.store_cmd import info

    info(store_path, as_json=False)
