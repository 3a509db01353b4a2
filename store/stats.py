"""Value statistics of a feature set's float fields, read from the items themselves.

`info` summarises a store from its manifests; `field_stats` reads values, so a set can be compared
with what its extractor is known to produce (bottom-up-attention region features come after a
ReLU: no negative value, a per-image mean of about 0.5-0.85 and a quarter to two fifths zeros).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lighthead.store.reader import FeatureSet

DEFAULT_LIMIT = 1000  # items read per set: enough for ranges, quick on any store


def field_stats(fs: FeatureSet, field: str, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """Over the first `limit` items of `fs`: overall min / max / mean, and the range over items of
    each item's mean, max and fraction of zeros. Padding rows of fixed-K region sets (past
    `num_boxes`) are left out, so a padded image does not look sparse."""
    spec = fs.fields[field]
    if np.dtype(spec.dtype).kind != "f":
        raise ValueError(f"{field}: not a float field ({spec.dtype})")
    padded = "num_boxes" in fs.fields and len(spec.shape) == 2
    names = [field, "num_boxes"] if padded else [field]
    total = count = 0.0
    lo, hi = np.inf, -np.inf
    means, maxima, zeros = [], [], []
    n = min(len(fs), limit)
    for _, item in zip(range(n), fs.items(fields=names)):
        values = np.asarray(item[1][field], np.float64)
        if padded:
            values = values[: int(item[1]["num_boxes"])]
        if values.size == 0:
            continue
        total += values.sum()
        count += values.size
        lo, hi = min(lo, values.min()), max(hi, values.max())
        means.append(values.mean())
        maxima.append(values.max())
        zeros.append(float((values == 0).mean()))
    if not means:
        return {"items": 0}
    return {
        "items": len(means),
        "min": float(lo),
        "max": float(hi),
        "mean": float(total / count),
        "item_mean": [float(min(means)), float(max(means))],
        "item_max": [float(min(maxima)), float(max(maxima))],
        "zero_fraction": [float(min(zeros)), float(max(zeros))],
    }
