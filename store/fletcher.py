"""HDF5's Fletcher-32 chunk checksum, computed with numpy in a few vectorised passes.

HDF5's filter (`H5_checksum_fletcher32` in H5checksum.c) reads a chunk as big-endian 16-bit
words w_0 .. w_{n-1} (an odd last byte b counts as the word b << 8) and keeps, modulo 65535,

    sum1 = w_0 + ... + w_{n-1}        sum2 = sum over i of (n - i) * w_i

each folded to 16 bits as a ones'-complement sum does (so a nonzero multiple of 65535 ends as
65535, zero as 0); the checksum `sum2 << 16 | sum1` follows the chunk's bytes on disk as a
little-endian uint32 (H5Zfletcher32.c). HDF5 runs a scalar loop over the words; a shard
reader that checks every chunk it reads the first time (store/shard.py) would spend most of
its first epoch there, and in h5py's per-call overhead. Here the sums are two small matrix
products instead (about 3x the time of copying the chunk, several times faster than reading
it through h5py):

- no byte swap: 2**16 = 1 (mod 65535), so a big-endian word w = 256 * v (mod 65535) where v
  is the little-endian word of the same two bytes;
- the words of a segment, padded with zeros to 16 * m, are laid out as V (16, m) in float32
  with V[j, a] = v[j * m + a]; W (2, 16) = [ones, 0..15] gives C = W[0] @ V and D = W[1] @ V,
  both exact in float32 (at most 16 * 65535 and 120 * 65535 < 2**24);
- sum v = sum C and sum (j * m + a) * v = m * sum D + sum a * C_a, in float64 (exact below
  2**53: segments hold at most 2**18 words).

`tests/store/test_fletcher.py` checks the result against a transcription of HDF5's loop and
against the checksums HDF5 itself stored in chunks of every size class.
"""

from __future__ import annotations

import threading

import numpy as np

SEGMENT_WORDS = 1 << 18  # words summed in one go: 1 MiB of float32 scratch, exact float64 tails
_ROWS = 16  # rows of the (16, m) layout; 16 keeps D = sum j * v below 2**24
_W = np.stack([np.ones(_ROWS, np.float32), np.arange(_ROWS, dtype=np.float32)])  # (2, 16)
_MOD = 65535


class _Scratch(threading.local):
    """Buffers reused between calls (a fresh large array per chunk would page-fault every
    time), one set per thread."""

    def __init__(self) -> None:
        self.m = -1

    def get(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if m != self.m:
            self.m = m
            self.v = np.zeros(_ROWS * m, np.float32)  # (16 m,) words as float32
            self.cd = np.empty((2, m), np.float32)  # (2, m): C and D
            # (m, 2): 1, a; column-major, which BLAS reads fastest for this product
            self.ar = np.asfortranarray(np.stack([np.ones(m), np.arange(m, dtype=np.float64)], 1))
        return self.v, self.cd, self.ar


_scratch = _Scratch()


def _fold(s: int) -> int:
    """A sum modulo 65535 as HDF5's 16-bit folding leaves it: 0 only for a zero sum."""
    r = s % _MOD
    return r if r or not s else _MOD


def _segment_sums(words: np.ndarray, tail: int | None) -> tuple[int, int]:
    """(sum v, sum i * v) of little-endian words `words` (and a last odd byte `tail`), exact."""
    n = len(words) + (tail is not None)
    m = -(-n // _ROWS)
    v, cd, ar = _scratch.get(m)
    v[: len(words)] = words  # uint16 -> float32, exact
    v[len(words) :] = 0
    if tail is not None:
        v[len(words)] = tail
    np.matmul(_W, v.reshape(_ROWS, m), out=cd)  # (2, m): per column a, C_a and D_a
    (c_sum, c_weighted), (d_sum, _) = cd.astype(np.float64) @ ar  # (2, 2)
    return int(c_sum), m * int(d_sum) + int(c_weighted)


def fletcher32(data: np.ndarray) -> int:
    """HDF5's Fletcher-32 checksum of the bytes `data` (a 1-D uint8 array, e.g. a view of a
    chunk in a memory-mapped file)."""
    n_bytes = len(data)
    n_words = (n_bytes + 1) // 2  # an odd last byte is one more word
    sum1 = sum2 = 0
    for a in range(0, n_words, SEGMENT_WORDS):
        b = min(n_words, a + SEGMENT_WORDS)
        odd = n_bytes % 2 == 1 and b == n_words
        full = b - a - odd
        words = data[2 * a : 2 * (a + full)].view("<u2")
        s1, weighted = _segment_sums(words, int(data[-1]) if odd else None)
        # words a..b-1 have weights n_words - a - k for k = 0..b-a-1
        sum1 += s1
        sum2 += (n_words - a) * s1 - weighted
    # big-endian words are 256 times the little-endian ones, modulo 65535
    return _fold(256 * sum2) << 16 | _fold(256 * sum1)


def stored(data: np.ndarray) -> int:
    """The checksum HDF5 stored after a chunk: its last 4 bytes, little-endian."""
    return int.from_bytes(data[-4:].tobytes(), "little")
