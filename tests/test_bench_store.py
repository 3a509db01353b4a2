"""bench/store.py at a tiny size: it reads the same values through both sides, prints every
figure the docs name, and its store keeps both per-chunk sums."""

from __future__ import annotations

import re

from bench import store as bench_store


def test_bench_store_prints_its_figures(tmp_path, capsys):
    bench_store.main(["--items", "40", "--batch", "8", "--batches", "2", "--workers", "0", "--seconds", "0.05"])
    out = capsys.readouterr().out
    figures = dict(re.findall(r"^(\w+): ([\d.]+)$", out, re.M))
    assert list(figures) == [
        "store_read_vs_memmap",
        "store_first_read_vs_memmap",
        "store_first_read_unchecked_vs_memmap",
        "store_first_read_fresh_vs_fresh_memmap",
        "store_bytes_per_item",
    ]
    assert all(float(v) > 0 for v in figures.values())
    payload = bench_store.K * bench_store.D * 2
    # one item per chunk: its payload, HDF5's 4-byte Fletcher-32, its 8-byte XXH3 sum, index and headers
    assert payload + 12 <= int(figures["store_bytes_per_item"]) < payload + 4096
