"""Store read benchmark: random batches through our reader vs a numpy memmap of the same data.

    python -m bench.store            # 20,000 items of [36, 2048] float16 (about 3 GB twice)
    python -m bench.store --quick    # 2,000 items, a minute or two

Both copies are read before timing so both are warm in the page cache. Our reader checks
each chunk's XXH3 checksum the first time a reader reads it; later reads are direct copies.
So two rates matter: random reads once every chunk has been checked (`store_read_vs_memmap`,
what every epoch after the first sees) and one pass over every item in a fresh reader
(`store_first_read_vs_memmap`, checks included), beside the same pass with the checks
switched off (`check_reads=False`) to show what they cost.

Readers of a shard in one process share its mapping (store/shard.py, `map_shard`), and the
memmap is mapped once, so those passes compare copying and checking, page tables warm on both
sides. A new process maps the files anew, and touching a page of a fresh mapping costs about
as much as copying it: `store_first_read_fresh_vs_fresh_memmap` compares a checked pass whose
reader maps the shards anew (no other reader holds them) with a memmap mapped anew for the pass.

Each comparison is timed in interleaved rounds (bench/ratio.py: at least 5, and 10 s per
side, 3 s with `--quick`); a ratio is the median over the rounds, printed with its min-max.
The last lines are for scripts: those medians and `store_bytes_per_item: <shard bytes on
disk / items>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.ratio import add_arguments, interleave, options, report

K, D = 36, 2048  # boxes x feature size of bottom-up-attention region features


def generate(root: Path, n: int, seed: int = 0):
    """Write n items to a store and to a .npy; returns (feature set, memmap)."""
    from lighthead.store import Field, open_store

    rng = np.random.default_rng(seed)
    block = rng.standard_normal((256, K, D), dtype=np.float32).astype(np.float16)  # (256, K, D)
    ref = np.lib.format.open_memmap(root / "ref.npy", mode="w+", dtype=np.float16, shape=(n, K, D))
    s = open_store(root / "store", create=True)
    with s.writer("regions/bench", [Field("features", (K, D))], {"extractor": "bench"}, fsync=False) as w:
        for a in range(0, n, 256):
            b = min(n, a + 256)
            batch = block[: b - a].copy()
            batch[:, 0, 0] = np.arange(a, b)  # makes every item distinct and checkable
            ref[a:b] = batch
            w.add_batch([f"{i}" for i in range(a, b)], {"features": batch})
    ref.flush()
    del ref
    return s["regions/bench"], np.load(root / "ref.npy", mmap_mode="r")


def pass_rate(read, batches: np.ndarray) -> float:
    """Items/s of `read(positions)` over every batch of positions."""
    t0 = time.perf_counter()
    for p in batches:
        read(p)
    return batches.size / (time.perf_counter() - t0)


def first_read_rate(store_path: Path, name: str, order: np.ndarray, batch: int, check: bool) -> float:
    """Items/s of one pass over `order` in a freshly opened feature set (every chunk read for
    the first time in it, so checked when `check`)."""
    from lighthead.store import open_store

    fs = open_store(store_path, check_reads=check)[name]
    t0 = time.perf_counter()
    for a in range(0, len(order), batch):
        fs.get_batch(order[a : a + batch], ["features"])
    rate = len(order) / (time.perf_counter() - t0)
    fs.close()
    return rate


def loader_rate(fs, store_path: Path, batch: int, n_batches: int, workers: int) -> float:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from lighthead.store import StoreDataset, open_store

    ds = StoreDataset(open_store(store_path), {"regions": fs.name})
    gen = torch.Generator().manual_seed(0)
    sampler = RandomSampler(ds, replacement=True, num_samples=batch * (n_batches + 2), generator=gen)
    dl = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=ds.collate)
    it = iter(dl)
    next(it), next(it)  # worker start-up is not what we measure
    t0 = time.perf_counter()
    count = sum(len(b["id"]) for b in it)
    return count / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=20_000, help="items in the generated feature set")
    ap.add_argument("--quick", action="store_true", help="2,000 items, fewer batches and seconds")
    ap.add_argument("--batch", type=int, default=128, help="items per random batch")
    ap.add_argument("--batches", type=int, default=0, help="batches per timed pass (0: auto)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--dir", default=None, help="where to put the temporary data")
    add_arguments(ap)
    args = ap.parse_args(argv)
    n = 2_000 if args.quick else args.items
    n_batches = args.batches or (60 if args.quick else 200)

    with tempfile.TemporaryDirectory(prefix="lighthead-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        fs, mm = generate(root, n)
        print(f"generated {n} items of [{K}, {D}] float16 in {time.perf_counter() - t0:.1f}s")

        def read_all(memmap_too: bool) -> None:  # page cache and page tables warm; fs checks every chunk
            for a in range(0, n, 512):
                fs.get_batch(range(a, min(n, a + 512)))
                if memmap_too:
                    np.asarray(mm[a : a + 512]).max()

        for _ in range(2):
            read_all(memmap_too=True)
        rng = np.random.default_rng(1)
        batches = rng.integers(0, n, size=(n_batches, args.batch))
        got = fs.get_batch(batches[0])["features"]
        assert np.array_equal(got, mm[batches[0]]), "store and memmap disagree"

        random = interleave(
            {
                "memmap": lambda: pass_rate(lambda p: mm[p], batches),
                "store": lambda: pass_rate(lambda p: fs.get_batch(p, ["features"]), batches),
            },
            **options(args),
        )
        order = rng.permutation(n)  # one pass over every item, in random batches
        sorted_batches = [np.sort(order[a : a + args.batch]) for a in range(0, n, args.batch)]

        def memmap_pass(fresh: bool) -> float:
            t0 = time.perf_counter()
            m = np.load(root / "ref.npy", mmap_mode="r") if fresh else mm  # fresh: mapped anew, as a reader is
            for p in sorted_batches:
                m[p]
            return n / (time.perf_counter() - t0)

        def fresh_mapping_pass() -> float:
            fs.close()  # no reader holds the shards: the pass maps them anew, as a new process does
            rate = first_read_rate(root / "store", fs.name, order, args.batch, True)
            read_all(memmap_too=False)  # fs maps them again, warm for the other sides (not timed)
            return rate

        first = interleave(
            {
                "memmap": lambda: memmap_pass(False),
                "checked": lambda: first_read_rate(root / "store", fs.name, order, args.batch, True),
                "unchecked": lambda: first_read_rate(root / "store", fs.name, order, args.batch, False),
                "fresh memmap": lambda: memmap_pass(True),
                "checked, fresh mapping": fresh_mapping_pass,
            },
            **options(args),
        )
        dl_rate = loader_rate(fs, root / "store", args.batch, n_batches, args.workers)
        per_item = fs.nbytes / len(fs)
        print(
            f"random reads (median items/s over {len(random)} rounds): memmap {random.median('memmap'):.0f}, "
            f"store {random.median('store'):.0f} (every chunk already checked)"
        )
        print(f"store+DataLoader {dl_rate:.0f} items/s ({args.workers} workers, batch {args.batch}; one run)")
        print(
            f"first pass (median items/s over {len(first)} rounds): memmap {first.median('memmap'):.0f}, "
            f"store {first.median('checked'):.0f} with checksums, {first.median('unchecked'):.0f} without; "
            f"freshly mapped: memmap {first.median('fresh memmap'):.0f}, "
            f"store {first.median('checked, fresh mapping'):.0f} with checksums"
        )
        print(f"item payload {K * D * 2} bytes, on disk {per_item:.0f} bytes")
        fs.close()
    report(
        {
            "store_read_vs_memmap": random.ratio("store", "memmap"),
            "store_first_read_vs_memmap": first.ratio("checked", "memmap"),
            "store_first_read_unchecked_vs_memmap": first.ratio("unchecked", "memmap"),
            "store_first_read_fresh_vs_fresh_memmap": first.ratio("checked, fresh mapping", "fresh memmap"),
            "store_bytes_per_item": round(per_item),
        }
    )


if __name__ == "__main__":
    main()
