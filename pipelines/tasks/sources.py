"""Feature sources: which feature sets a head's config names, and fast batched reads of them.

A head's config declares the feature sets it reads (`lighthead.heads.base.source` fields); a
run reads one set per kind. A `Table` is
one feature set restricted to an ordered list of ids (a split's images or captions); it is
read into RAM once when it fits the preload budget (the demo and Flickr30K do), otherwise
read per batch through the store's grouped, sorted `get_batch` (one file handle per process,
so DataLoader workers are safe).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lighthead.heads.base import feature_sources

IMAGE_KINDS = ("regions", "global", "thumbs")  # keyed by record.image_id
TEXT_KINDS = ("words", "tokens")  # keyed by text id f"{record.id}#{j}"


def feature_sets_of(cfg: Any) -> dict[str, str]:
    """Source kind -> feature set name, from the config's declared sources (`feature_sources`)."""
    out: dict[str, str] = {}
    for kind, value in feature_sources(cfg).values():
        if kind in out and out[kind] != value:
            raise ValueError(f"config names two {kind} feature sets: {out[kind]!r} and {value!r}")
        out[kind] = value
    return out


class Table:
    """A feature set's fields for an ordered id list; `take(positions)` reads a batch."""

    def __init__(self, fs: Any, ids: Sequence[str], fields: Sequence[str], preload_bytes: int):
        missing = [i for i in ids if i not in fs]
        if missing:
            raise KeyError(
                f"feature set {fs.name!r} lacks {len(missing)} of {len(ids)} ids "
                f"(e.g. {missing[0]!r}); run `lighthead extract` for them"
            )
        self.fs, self.ids, self.fields = fs, list(ids), list(fields)
        self.data: dict[str, Any] | None = None
        if self.estimated_bytes() <= preload_bytes:
            self.data = self._checked(fs.get_batch(self.ids, self.fields), self.ids)

    def estimated_bytes(self) -> int:
        per_item = fs_bytes = 0
        for name in self.fields:
            fld = self.fs.fields[name]
            if fld.variable:
                fs_bytes = int(self.fs.nbytes / max(1, len(self.fs)))  # average item of the whole set
            else:
                per_item += int(np.prod(fld.shape, dtype=np.int64)) * np.dtype(fld.dtype).itemsize
        return (per_item + fs_bytes) * len(self.ids)

    def _checked(self, data: dict[str, Any], ids: Sequence[str]) -> dict[str, Any]:
        """Refuse non-finite features (e.g. float16 overflow at extraction), naming the items."""
        for name, value in data.items():
            arrays = [value] if isinstance(value, np.ndarray) else value
            if not arrays or arrays[0].dtype.kind != "f":
                continue
            if isinstance(value, np.ndarray):
                bad = np.flatnonzero(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))  # (N, prod(shape))
            else:
                bad = np.array([i for i, a in enumerate(value) if not np.isfinite(a).all()], dtype=np.int64)
            if len(bad):
                raise ValueError(
                    f"feature set {self.fs.name!r}, field {name!r}: non-finite values in {len(bad)} "
                    f"of {len(ids)} items (e.g. {ids[int(bad[0])]!r}); re-extract it (float32 "
                    f"storage avoids float16 overflow)"
                )
        return data

    @property
    def preloaded(self) -> bool:
        return self.data is not None

    def take(self, positions: np.ndarray) -> dict[str, Any]:
        """Fixed fields as (B, ...) arrays, variable ones as lists of arrays."""
        if self.data is None:
            ids = [self.ids[i] for i in positions]
            return self._checked(self.fs.get_batch(ids, self.fields), ids)
        return {
            n: (v[positions] if isinstance(v, np.ndarray) else [v[i] for i in positions]) for n, v in self.data.items()
        }


def pad(
    seqs: Sequence[np.ndarray], dtype: torch.dtype | None = None, max_len: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length items (L_i, ...) -> padded (B, L, ...) tensor and mask (B, L) (True = real)."""
    lengths = [len(s) for s in seqs]
    n = max(lengths) if lengths else 0
    if max_len:
        n = min(n, max_len)
    first = np.asarray(seqs[0])
    out = np.zeros((len(seqs), max(n, 1), *first.shape[1:]), dtype=first.dtype)
    mask = np.zeros((len(seqs), max(n, 1)), dtype=bool)
    for i, s in enumerate(seqs):
        k = min(len(s), n)
        out[i, :k] = s[:k]
        mask[i, :k] = True
    t = torch.from_numpy(out)
    return (t.to(dtype) if dtype is not None else t), torch.from_numpy(mask)


def region_batch(data: dict[str, Any], num_regions: int = 0) -> dict[str, torch.Tensor]:
    """Region fields -> "regions" (B, K, D), "region_mask" (B, K); "boxes" (B, K, 4) and
    "image_size" (B, 2) when stored."""
    feats = data["features"]
    out: dict[str, torch.Tensor] = {}
    if isinstance(feats, np.ndarray):  # fixed K
        if num_regions:
            feats = feats[:, :num_regions]
        out["regions"] = torch.from_numpy(np.ascontiguousarray(feats))  # (B, K, D)
        out["region_mask"] = torch.ones(feats.shape[:2], dtype=torch.bool)
        if "boxes" in data:
            boxes = data["boxes"][:, : feats.shape[1]]
            out["boxes"] = torch.from_numpy(np.ascontiguousarray(boxes)).float()
    else:  # variable K (adaptive or given boxes): pad and mask
        out["regions"], out["region_mask"] = pad(feats, max_len=num_regions)
        if "boxes" in data:
            out["boxes"], _ = pad(data["boxes"], torch.float32, max_len=num_regions)
    if "image_w" in data and "image_h" in data:
        size = np.stack([np.asarray(data["image_w"]), np.asarray(data["image_h"])], axis=1)  # (B, 2)
        out["image_size"] = torch.from_numpy(size.astype(np.float32))
    return out


def text_batch(data: dict[str, Any], kind: str) -> dict[str, torch.Tensor]:
    """Word ids or token features -> "word_ids"/"tokens", "text_mask", "text_len"."""
    if kind == "words":
        ids, mask = pad(data["word_ids"], torch.int64)
        out = {"word_ids": ids}
    else:
        feats, mask = pad(data["features"])
        out = {"tokens": feats}
    out["text_mask"] = mask
    out["text_len"] = mask.sum(1)
    return out


def multi_hot(label_lists: Sequence[Sequence[int]], num_labels: int) -> torch.Tensor:
    """Label index lists -> (B, C) float multi-hot."""
    out = torch.zeros(len(label_lists), num_labels)
    for i, labels in enumerate(label_lists):
        if len(labels):
            out[i, list(labels)] = 1.0
    return out
