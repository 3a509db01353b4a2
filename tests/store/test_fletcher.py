"""store/fletcher.py computes HDF5's Fletcher-32: against HDF5's loop written out, and against
the checksums HDF5 itself stored after real chunks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lighthead.store import fletcher
from lighthead.store.fletcher import fletcher32, stored


def hdf5_loop(data: bytes) -> int:
    """H5_checksum_fletcher32 (H5checksum.c) as written there: big-endian words, sums folded
    to 16 bits every 360 words, an odd last byte as the high byte of a last word."""
    sum1 = sum2 = 0
    length, i = len(data) // 2, 0
    while length:
        tlen = min(length, 360)
        length -= tlen
        for _ in range(tlen):
            sum1 += (data[i] << 8) | data[i + 1]
            sum2 += sum1
            i += 2
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    if len(data) % 2:
        sum1 += data[i] << 8
        sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


SIZES = [0, 1, 2, 3, 15, 16, 17, 32, 33, 721, 722, 4095, 4096, 20_001]


@pytest.mark.parametrize("fill", ["random", "zeros", "ones"])
def test_equals_hdf5s_loop(fill):
    rng = np.random.default_rng(0)
    for n in SIZES:
        data = {
            "random": rng.integers(0, 256, n, dtype=np.uint8),
            "zeros": np.zeros(n, np.uint8),
            "ones": np.full(n, 0xFF, np.uint8),
        }[fill]
        assert fletcher32(data) == hdf5_loop(data.tobytes()), n


def test_segments_add_up(monkeypatch):
    """Long chunks are summed in segments (exact float64 tails); tiny segments show they combine."""
    rng = np.random.default_rng(1)
    monkeypatch.setattr(fletcher, "SEGMENT_WORDS", 7)
    for n in (13, 14, 15, 28, 29, 1001):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        assert fletcher32(data) == hdf5_loop(data.tobytes()), n


def test_unaligned_views_of_a_mapped_file():
    data = np.random.default_rng(2).integers(0, 256, 4099, dtype=np.uint8)
    for start in (1, 3):
        assert fletcher32(data[start : start + 4000]) == hdf5_loop(data[start : start + 4000].tobytes())


@pytest.mark.parametrize(
    "dtype,shape,chunks",
    [
        ("float16", (40, 36, 64), (1, 36, 64)),  # one region item per chunk, as the store writes them
        ("uint8", (101,), (33,)),  # odd chunk sizes
        ("int64", (50,), (50,)),
        ("float32", (7, 3), (4, 3)),  # a partial edge chunk (stored full size)
        ("uint8", (64,), (64,)),  # all zeros
    ],
)
def test_equals_the_checksums_hdf5_stored(tmp_path, dtype, shape, chunks):
    rng = np.random.default_rng(3)
    values = (
        np.zeros(shape, dtype)
        if dtype == "uint8" and shape == (64,)
        else (rng.standard_normal(shape) * 100).astype(dtype)
    )
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=values, chunks=chunks, fletcher32=True)
    with h5py.File(path, "r") as f:
        ds = f["x"]
        for k in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(k)
            mask, raw = ds.id.read_direct_chunk(info.chunk_offset)
            assert mask == 0  # the checksum filter ran
            raw = np.frombuffer(raw, np.uint8)
            assert fletcher32(raw[:-4]) == stored(raw), (k, len(raw))
