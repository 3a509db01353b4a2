"""The earlier code paths that the GPU fixes replaced, kept to measure "before" next to "after".

- `nms_one_image_at_a_time`: the per-class NMS run image by image (R sequential steps per image).
- `valid_masks_before`: the backbone copying two lists to the device per masked layer (blocking).
- `pad_then_pin`: padding a batch, then copying it into page-locked memory on the main thread.
- `score_blocks_before`: scoring with a fixed 1 GiB block budget, the masks asked of the device
  in every block and one device-to-host copy per block.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


def nms_one_image_at_a_time(
    boxes: list[torch.Tensor], probs: list[torch.Tensor], thresh: float, offset: float
) -> list[torch.Tensor]:
    """Per-ROI confidences, each image's NMS on its own (the lockstep steps repeat per image)."""
    from lighthead.extract.regions.box_selection import batch_max_confidence

    return [batch_max_confidence([b], [p], thresh, offset)[0] for b, p in zip(boxes, probs)]


def _apply_before(self: Any, x: torch.Tensor) -> torch.Tensor:
    """The earlier `ValidMask.apply`: the extents as two new device tensors at every call."""
    B, _, H, W = x.shape
    if all(h == H for h in self.heights) and all(w == W for w in self.widths):
        return x
    rows = torch.arange(H, device=x.device).reshape(1, H, 1)
    cols = torch.arange(W, device=x.device).reshape(1, 1, W)
    hs = torch.tensor(self.heights, device=x.device).reshape(B, 1, 1)
    ws = torch.tensor(self.widths, device=x.device).reshape(B, 1, 1)
    mask = ((rows < hs) & (cols < ws)).unsqueeze(1)  # (B, 1, H, W)
    return x * mask.to(x.dtype)


@contextlib.contextmanager
def valid_masks_before() -> Iterator[None]:
    """Within the block, the backbone masks padding as it did before (one upload per layer)."""
    from lighthead.extract.regions.backbone import ValidMask

    apply, upload = ValidMask.apply, ValidMask.upload
    ValidMask.apply, ValidMask.upload = _apply_before, lambda self, masks, device: None
    try:
        yield
    finally:
        ValidMask.apply, ValidMask.upload = apply, upload


def pad_then_pin(images: list[torch.Tensor], divisibility: int, pin: bool) -> torch.Tensor:
    """Pad, then copy into page-locked memory (`Batch.pin_memory`); without CUDA a clone stands
    in for that second host copy."""
    from lighthead.extract.regions.batching import pad_batch

    padded = pad_batch(images, divisibility)
    return padded.pin_memory() if pin else padded.clone()


@torch.no_grad()
def score_blocks_before(
    head: Any, img: dict[str, torch.Tensor], txt_chunks: list[dict[str, torch.Tensor]], precision: str = "fp32"
) -> torch.Tensor:
    """`score_blocks` as it was: 1 GiB blocks on a GPU, each block's masks asked of the device
    (the encodings' host copies dropped) and its scores copied to the host on their own."""
    from lighthead.pipelines.tasks.scoring import (
        CPU_BUDGET_MB,
        block_sizes,
        cast_floats,
        enc_len,
        precision_context,
        slice_enc,
    )

    def drop(enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in enc.items() if k != "host_mask"}

    img, txt_chunks = drop(img), [drop(c) for c in txt_chunks]
    device = next(iter(img.values())).device
    budget = (1 << 30) if device.type == "cuda" else (CPU_BUDGET_MB << 20)
    n_img = enc_len(img)
    out = torch.empty(n_img, sum(enc_len(c) for c in txt_chunks), dtype=torch.float32)
    dtype = torch.bfloat16 if precision == "bf16" else None
    img = cast_floats(img, dtype)
    col = 0
    with precision_context(device, precision):
        for chunk in txt_chunks:
            n_chunk = enc_len(chunk)
            bi, bt = block_sizes(head.pair_bytes(img, chunk), n_img, n_chunk, budget)
            for t0 in range(0, n_chunk, bt):
                txt = cast_floats(slice_enc(chunk, t0, min(n_chunk, t0 + bt)), dtype)
                for i0 in range(0, n_img, bi):
                    s = head.score(slice_enc(img, i0, min(n_img, i0 + bi)), txt)  # (bi, bt)
                    out[i0 : i0 + s.shape[0], col + t0 : col + t0 + s.shape[1]] = s.float().cpu()
            col += n_chunk
    return out
