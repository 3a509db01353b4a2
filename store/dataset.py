"""A torch Dataset joining several feature sets of one store by id.

This is the only module of `store` that imports torch, and `store` imports it lazily.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from lighthead.store.api import Store, open_store
from lighthead.store.errors import StoreError


class StoreDataset(Dataset):
    """Items joined by id across feature sets of one store.

    `StoreDataset(store, {"regions": "regions/x", "glob": "global/resnet18"}, ids)` yields
    `{"id": id, "regions": {field: np.ndarray}, "glob": {field: np.ndarray}}` (nested, so
    field names never collide). `fields={"regions": ["features"]}` reads only what a head
    asks for. `ids=None` takes the ids of the first set that all the others also have, in
    its order. Batched fetching (`__getitems__`) reads each set with one sorted `get_batch`.
    Pass `collate_fn=ds.collate` to a DataLoader when a set has variable-length fields.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike,
        sets: Mapping[str, str],
        ids: Sequence[str] | None = None,
        fields: Mapping[str, Sequence[str]] | None = None,
        preload: bool = False,
    ):
        self.store = store if isinstance(store, Store) else open_store(store)
        if not sets:
            raise ValueError("StoreDataset needs at least one feature set")
        self.sets = {key: self.store[name] for key, name in sets.items()}
        self.fields = {
            key: list(fields[key]) if fields and key in fields else list(fs.fields) for key, fs in self.sets.items()
        }
        for key, fs in self.sets.items():
            fs._fields(self.fields[key])  # raises on an unknown field name
            if preload:
                fs.preload(self.fields[key])
        if ids is None:
            first, *rest = self.sets.values()
            ids = [i for i in first.ids if all(i in fs for fs in rest)]
        self.ids = list(ids)
        # positions per set, resolved once: a missing id fails here, not in a worker
        self._pos: dict[str, np.ndarray] = {}
        for key, fs in self.sets.items():
            try:
                self._pos[key] = np.fromiter((fs.position(i) for i in self.ids), dtype=np.int64, count=len(self.ids))
            except KeyError as exc:
                raise StoreError(f"{fs.path}: {exc.args[0]} (set {key!r})") from None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.ids[index]}
        for key, fs in self.sets.items():
            item[key] = fs.get(int(self._pos[key][index]), self.fields[key])
        return item

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Items for a whole batch, read with one sorted `get_batch` per set.

        Fixed fields are read straight into tensors (in shared memory inside a DataLoader
        worker, which saves the copy torch would make to send them); `collate` then uses
        those tensors as they are. The items themselves are views into them.
        """
        idx = np.asarray(indices, dtype=np.int64)
        items = _Batch({"id": self.ids[i]} for i in idx.tolist())
        in_worker = get_worker_info() is not None
        for key, fs in self.sets.items():
            tensors = {}
            for n in self.fields[key]:
                fld = fs.fields[n]
                if not fld.variable:
                    tensors[n] = _empty((len(idx), *fld.shape), fld.np_dtype, in_worker)
            batch = fs.get_batch(self._pos[key][idx], self.fields[key], out={n: t.numpy() for n, t in tensors.items()})
            items.tensors[key] = tensors
            for j, item in enumerate(items):
                item[key] = {n: v[j] for n, v in batch.items()}
        return items

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """`collate_fn` for a DataLoader: fixed fields stacked to tensors `[B, *shape]`;
        variable-length fields zero-padded to the longest item, `[B, L, *rest]`, with a
        `<field>_len` tensor `[B]` beside them (always, so every batch has the same keys)."""
        out: dict[str, Any] = {"id": [it["id"] for it in items]}
        ready = items.tensors if isinstance(items, _Batch) else {}
        for key, fs in self.sets.items():
            group: dict[str, Any] = {}
            for n in self.fields[key]:
                if n in ready.get(key, {}):
                    group[n] = ready[key][n]
                    continue
                values = [it[key][n] for it in items]
                if fs.fields[n].variable:
                    group[n], group[f"{n}_len"] = pad(values)
                else:
                    group[n] = torch.from_numpy(np.stack(values))
            out[key] = group
        return out


def _empty(shape: tuple, dtype: np.dtype, shared: bool) -> torch.Tensor:
    """An uninitialised tensor, allocated in shared memory when `shared` (as torch's own
    collate does in workers: `share_memory_()` on a filled tensor would copy it once more)."""
    if not shared:
        return torch.from_numpy(np.empty(shape, dtype=dtype))
    like = torch.from_numpy(np.empty(0, dtype=dtype))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return like.set_(torch.UntypedStorage._new_shared(nbytes), 0, shape)


class _Batch(list):
    """The list of items `__getitems__` returns, plus the batch tensors they are views of."""

    def __init__(self, items=()):
        super().__init__(items)
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}


def pad(values: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad arrays `[L_i, *rest]` to `[B, max L_i, *rest]`; returns (padded, lengths [B])."""
    lengths = [len(v) for v in values]
    rest, dtype = values[0].shape[1:], values[0].dtype
    padded = np.zeros((len(values), max(lengths, default=0), *rest), dtype=dtype)
    for j, v in enumerate(values):
        padded[j, : len(v)] = v
    return torch.from_numpy(padded), torch.tensor(lengths, dtype=torch.long)
