"""Score every (image, caption) pair of a split with a retrieval head, in bounded memory.

Retrieval heads expose `encode_image(batch)`, `encode_text(batch)` (dicts of tensors with a
leading item axis) and `score(img, txt) -> (I, T)`. The pair-independent parts are encoded
once; then blocks of images x captions are scored with batched matrix products (on the GPU
when there is one). The block size comes from a memory budget and the head's
`pair_bytes(img, txt)` (working bytes per scored pair; heads without it count 64 bytes).
Captions are encoded in order of length, so each block carries little padding.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch

Enc = dict[str, torch.Tensor]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def slice_enc(enc: Enc, start: int, stop: int) -> Enc:
    return {k: v[start:stop] for k, v in enc.items()}


def enc_len(enc: Enc) -> int:
    return len(next(iter(enc.values())))


def cat_padded(chunks: list[Enc]) -> Enc:
    """Concatenate encodings along items; axis 1 of unequal width is zero-padded (masks -> False)."""
    out: Enc = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        if parts[0].dim() >= 2 and len({p.shape[1] for p in parts}) > 1:
            width = max(p.shape[1] for p in parts)
            parts = [_pad_axis1(p, width) for p in parts]
        out[key] = torch.cat(parts)
    return out


def _pad_axis1(x: torch.Tensor, width: int) -> torch.Tensor:
    out = x.new_zeros((x.shape[0], width, *x.shape[2:]))  # zeros / False on the padding
    out[:, : x.shape[1]] = x
    return out


@torch.no_grad()
def encode(fn: Callable[[dict[str, torch.Tensor]], Enc], batches: Iterable[dict[str, torch.Tensor]],
           device: torch.device) -> list[Enc]:
    """Run an encoder over batches; returns one encoding per batch (kept on `device`)."""
    return [fn(to_device(b, device)) for b in batches]


def block_sizes(per_pair: int, n_images: int, n_texts: int, budget_bytes: int) -> tuple[int, int]:
    """(images, texts) per block so that images * texts * per_pair stays within the budget."""
    pairs = max(1, budget_bytes // max(1, per_pair))
    texts = max(1, min(n_texts, pairs))
    images = max(1, min(n_images, pairs // texts))
    return images, texts


@torch.no_grad()
def score_blocks(head: Any, img: Enc, txt_chunks: list[Enc], budget_bytes: int = 1 << 30) -> torch.Tensor:
    """(I, T) float32 CPU scores of all images in `img` against all captions of `txt_chunks`.

    `img` is one encoding of every image (on the scoring device); `txt_chunks` are caption
    encodings in the column order of the result (each chunk keeps its own padding).
    """
    n_img = enc_len(img)
    n_txt = sum(enc_len(c) for c in txt_chunks)
    out = torch.empty(n_img, n_txt, dtype=torch.float32)
    pair_bytes = getattr(head, "pair_bytes", None)
    col = 0
    for chunk in txt_chunks:
        n_chunk = enc_len(chunk)
        per_pair = pair_bytes(img, chunk) if pair_bytes else 64
        bi, bt = block_sizes(per_pair, n_img, n_chunk, budget_bytes)
        for t0 in range(0, n_chunk, bt):
            txt = slice_enc(chunk, t0, min(n_chunk, t0 + bt))
            for i0 in range(0, n_img, bi):
                s = head.score(slice_enc(img, i0, min(n_img, i0 + bi)), txt)  # (bi, bt)
                out[i0:i0 + s.shape[0], col + t0:col + t0 + s.shape[1]] = s.float().cpu()
        col += n_chunk
    return out


def score_all(head: Any, image_batches: Iterable[dict[str, torch.Tensor]],
              text_batches: Iterable[dict[str, torch.Tensor]], device: torch.device,
              budget_bytes: int = 1 << 30, text_order: np.ndarray | None = None) -> np.ndarray:
    """Encode both sides and score every pair; returns (I, T) numpy scores.

    text_order: the permutation the text batches follow (e.g. captions sorted by length);
    columns are put back in the original caption order.
    """
    was_training = head.training
    head.eval()
    try:
        img = cat_padded(encode(head.encode_image, image_batches, device))
        txt = encode(head.encode_text, text_batches, device)
        sims = score_blocks(head, img, txt, budget_bytes).numpy()
    finally:
        head.train(was_training)
    if text_order is not None:
        restored = np.empty_like(sims)
        restored[:, text_order] = sims
        sims = restored
    return sims
