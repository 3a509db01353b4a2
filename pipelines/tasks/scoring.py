"""Score every (image, caption) pair of a split with a retrieval head, in bounded memory.

Retrieval heads expose `encode_image(batch)`, `encode_text(batch)` (dicts of tensors with a
leading item axis) and `score(img, txt) -> (I, T)`. The pair-independent parts are encoded
once; then blocks of images x captions are scored with batched matrix products (on the GPU
when there is one). The block size comes from a memory budget and the head's
`pair_bytes(img, txt)` (working bytes per scored pair; `RetrievalHead` counts 64 unless a head says).
Captions are encoded in order of length, so each block carries little padding.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable

import numpy as np
import torch

Enc = dict[str, torch.Tensor]
PRECISIONS = ("fp32", "bf16")
CPU_BUDGET_MB = 64  # blocks whose (images, regions, captions, words) tensors stay in a CPU's cache
# Share of a GPU's free memory one block may use: the heads' per-pair estimates are rough and the
# encodings, the result row and the allocator's cache need room besides.
CUDA_FREE_FRACTION = 0.25
CUDA_MIN_BUDGET_MB = 256  # a GPU nearly full (another process) still gets blocks of this size


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def slice_enc(enc: Enc, start: int, stop: int) -> Enc:
    return {k: v[start:stop] for k, v in enc.items()}


def cast_floats(enc: Enc, dtype: torch.dtype | None) -> Enc:
    """The encoding with its floating tensors in `dtype` (None: unchanged)."""
    if dtype is None:
        return enc
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in enc.items()}


def enc_len(enc: Enc) -> int:
    return len(next(iter(enc.values())))


def cat_padded(chunks: list[Enc]) -> Enc:
    """Concatenate encodings along items; other axes of unequal size are zero-padded at the end
    (masks -> False), e.g. words (B, L, D) and word Gram matrices (B, L, L)."""
    out: Enc = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        shape = [max(p.shape[a] for p in parts) for a in range(1, parts[0].dim())]
        parts = [p if list(p.shape[1:]) == shape else _pad_to(p, shape) for p in parts]
        out[key] = torch.cat(parts)
    return out


def _pad_to(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    out = x.new_zeros((x.shape[0], *shape))  # zeros / False on the padding
    out[tuple(slice(0, n) for n in x.shape)] = x
    return out


@torch.no_grad()
def encode(
    fn: Callable[[dict[str, torch.Tensor]], Enc], batches: Iterable[dict[str, torch.Tensor]], device: torch.device
) -> list[Enc]:
    """Run an encoder over batches; returns one encoding per batch (kept on `device`)."""
    return [fn(to_device(b, device)) for b in batches]


def block_sizes(per_pair: int, n_images: int, n_texts: int, budget_bytes: int) -> tuple[int, int]:
    """(images, texts) per block so that images * texts * per_pair stays within the budget.

    Blocks are about four captions per image (e.g. 32 x 128): both sides of the block's
    region-word GEMM stay a few hundred rows wide, which keeps it efficient.
    """
    pairs = max(1, budget_bytes // max(1, per_pair))
    texts = max(1, min(n_texts, pairs, math.isqrt(4 * pairs)))
    images = max(1, min(n_images, pairs // texts))
    if images == n_images:  # every image fits: give the rest of the budget to the captions
        texts = max(1, min(n_texts, pairs // images))
    return images, texts


def default_budget(device: torch.device) -> int:
    """Bytes of working memory per scored block: cache-sized on a CPU; on a GPU a share of its
    free memory (`torch.cuda.mem_get_info`), so that a few large blocks keep it busy (a fixed
    1 GiB made about 4,000 small blocks of COCO 5K, each a round of launches and host waits)."""
    if device.type != "cuda":
        return CPU_BUDGET_MB << 20
    free, _ = torch.cuda.mem_get_info(device)
    return max(CUDA_MIN_BUDGET_MB << 20, int(free * CUDA_FREE_FRACTION))


def fast_precision(device: torch.device) -> str:
    """ "bf16" where the device multiplies bfloat16 natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs), else "fp32"."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:  # oneDNN also "supports" bf16 on plain AVX512 by emulation, which is slower than fp32
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except (AttributeError, RuntimeError):  # a torch without these probes
        native = False
    return "bf16" if native and torch.backends.mkldnn.is_available() else "fp32"


def precision_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """ "fp32": exact float32 products; "bf16": products in bfloat16 under autocast (float32
    accumulation, nonlinearities in float32), about 2-4x faster on CPUs with AVX512-BF16/AMX and
    on GPUs with bf16 tensor cores, scores within about 1e-3 of float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


@torch.no_grad()
def score_blocks(
    head: Any, img: Enc, txt_chunks: list[Enc], budget_bytes: int | None = None, precision: str = "fp32"
) -> torch.Tensor:
    """(I, T) float32 CPU scores of all images in `img` against all captions of `txt_chunks`.

    `img` is one encoding of every image (on the scoring device); `txt_chunks` are caption
    encodings in the column order of the result (each chunk keeps its own padding).
    budget_bytes: working memory of one block (None: `default_budget` of the device).
    The scores of a row of blocks (one caption block against every image block) stay on the
    device and come to the host in one copy: a copy per block would make the host wait for
    each block. Heads whose encodings carry host copies of their masks ask the device nothing
    else (see `SCAN.encode_image`).
    """
    # the scoring device: that of the encodings' tensors (host copies of masks aside)
    device = next((v.device for v in img.values() if v.device.type != "cpu"), torch.device("cpu"))
    budget = default_budget(device) if budget_bytes is None else budget_bytes
    n_img = enc_len(img)
    n_txt = sum(enc_len(c) for c in txt_chunks)
    out = torch.empty(n_img, n_txt, dtype=torch.float32)
    col = 0
    dtype = torch.bfloat16 if precision == "bf16" else None
    img = cast_floats(img, dtype)  # cast once here, not in every product of every block
    with precision_context(device, precision):
        for chunk in txt_chunks:
            n_chunk = enc_len(chunk)
            per_pair = head.pair_bytes(img, chunk)  # RetrievalHead: 64 bytes unless the head says
            bi, bt = block_sizes(per_pair, n_img, n_chunk, budget)
            for t0 in range(0, n_chunk, bt):
                t1 = min(n_chunk, t0 + bt)
                txt = cast_floats(slice_enc(chunk, t0, t1), dtype)
                row = torch.empty((n_img, t1 - t0), dtype=torch.float32, device=device)  # (I, bt)
                for i0 in range(0, n_img, bi):
                    s = head.score(slice_enc(img, i0, min(n_img, i0 + bi)), txt)  # (bi, bt)
                    row[i0 : i0 + s.shape[0]] = s
                out[:, col + t0 : col + t1] = row.cpu()
            col += n_chunk
    return out


def score_all(
    head: Any,
    image_batches: Iterable[dict[str, torch.Tensor]],
    text_batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    budget_bytes: int | None = None,
    text_order: np.ndarray | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Encode both sides and score every pair; returns (I, T) numpy scores.

    text_order: the permutation the text batches follow (e.g. captions sorted by length);
    columns are put back in the original caption order. Encoding always runs in float32;
    `precision` applies to scoring (see `precision_context`).
    """
    was_training = head.training
    head.eval()
    try:
        img = cat_padded(encode(head.encode_image, image_batches, device))
        txt = encode(head.encode_text, text_batches, device)
        sims = score_blocks(head, img, txt, budget_bytes, precision).numpy()
    finally:
        head.train(was_training)
    if text_order is not None:
        restored = np.empty_like(sims)
        restored[:, text_order] = sims
        sims = restored
    return sims
