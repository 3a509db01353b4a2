"""The numeric precision a feature job runs its model in: one setting, recorded with the features.

Values of the `precision` job option:
- "fp32": no autocast;
- "bf16" / "fp16": autocast to that dtype (convolutions and matmuls; each model keeps its own
  float32 parts, e.g. the detector's RPN outputs, class scores and box arithmetic);
- "auto" (the default): the job's GPU choice on CUDA (`gpu`: the detector bf16, or fp16 on a GPU
  without bf16; the text encoders and ResNets fp16), fp32 on a CPU.

`resolve` gives the concrete value (never "auto"), which the feature set records: a CPU run
(fp32) and a GPU run (bf16) compute different features and must not append to one set.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(precision: str, device: torch.device | str, gpu: str) -> str:
    """ "fp32", "bf16" or "fp16": `precision` as asked, or for "auto" `gpu` on CUDA and fp32 elsewhere.
    "auto" falls back from bf16 to fp16 on a GPU without bf16; an explicit bf16 there is an error."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    chosen = (gpu if device.type == "cuda" else "fp32") if precision == "auto" else precision
    if chosen == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if precision == "auto":
            return "fp16"
        raise ValueError(f"precision bf16: {device} has no bfloat16 support; use fp16 or fp32")
    return chosen


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs under for a resolved `precision` (fp32: autocast off)."""
    device = torch.device(device)
    dtype = DTYPES[precision]
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
