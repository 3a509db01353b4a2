"""The store's own per-chunk checksums: XXH3-64 of each chunk's rows, kept beside the data.

Every field dataset of a shard is chunked, and HDF5 keeps a Fletcher-32 sum after each chunk
(checked whenever HDF5 reads it). The raw reader copies rows straight out of a mapped file
instead, so it checks each chunk itself the first time a reader reads it. Fletcher-32 is a
serial loop over 16-bit words: even vectorised with numpy (store/fletcher.py) it costs
about three times the copy of the chunk, so a first epoch would be spent checking. XXH3
(the `xxhash` package) runs at memory speed, a fraction of the copy, and is 64 bits wide.

So a shard also holds, for each field, `/sums/<field>`: one uint64 per chunk, the XXH3-64
(seed 0) of the bytes of the chunk's rows as the reader copies them (little-endian,
C order; the rows past the end of the dataset that pad the last chunk are not included).
That dataset is itself chunked with Fletcher-32 and read through HDF5, so a damaged sum
is an error when the shard is opened. Shards written before it have no `/sums` and are
checked with Fletcher-32 as before.
"""

from __future__ import annotations

import numpy as np
import xxhash

ALGORITHM = "xxh3_64"  # the `algorithm` attribute of the /sums group; readers that meet another fall back
GROUP = "sums"


def digest(data: np.ndarray) -> int:
    """XXH3-64 of a contiguous array's bytes (a view of a mapped file or a copy)."""
    return xxhash.xxh3_64_intdigest(data)


def chunk_sums(data: np.ndarray, rows: int) -> np.ndarray:
    """The sum of each chunk of `rows` rows of `data` (C-contiguous), as /sums/<field> holds them."""
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    flat = data.reshape(len(data), -1).view(np.uint8) if data.size else data  # (N, row bytes)
    n_chunks = -(-len(data) // rows)
    return np.array([digest(flat[k * rows : (k + 1) * rows]) for k in range(n_chunks)], dtype=np.uint64)
