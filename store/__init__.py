"""Sharded HDF5 feature store: one directory per dataset, one feature set per extractor config.

Layout::

    <store>/
      meta/<name>.json                 small JSON artifacts (records, vocabularies, label lists)
      regions/butd-r101-vg-36/         a feature set; its name is the relative path
        manifest.json                  fields, attrs, library versions, finished shards
        shard-<tag>-00000.h5           ids + one dataset per field (see store/shard.py)

Python API::

    from lighthead.store import open_store, Field, verify, info, StoreError

    s = open_store(path, create=False)        # Store; create=True makes the directory;
                                              # check_reads=False skips per-chunk checksums
    s.names() -> list[str]                    # feature-set names
    fs = s["regions/butd-r101-vg-36"]         # FeatureSet (KeyError if absent)
    fs.ids -> list[str]; len(fs); id in fs
    fs[id] / fs[position] -> {field: np.ndarray}
    fs.get(key, fields=None) -> {field: np.ndarray}
    fs.get_batch(ids_or_positions, fields=None)
        -> {field: [B, *shape] array (fixed) | list of B arrays (variable)}
    fs.fields -> {name: Field}; fs.attrs -> dict (caller attrs + "library_versions")
    fs.preload(fields=None) -> fs             # read everything into RAM
    fs.position(id) -> int; fs.items(fields=None, batch=256) -> iterator of (id, item)

    Field(name, shape=(), dtype="float16")    # shape (None, D) = variable length
    with s.writer(name, fields, attrs=None, config=None, **overrides) as w:
        # overrides are WriterConfig fields: tag=None, shard_bytes=256 MiB,
        # shard_items=10_000, fsync=True; fields/attrs may be None to resume as stored
        w.done_ids -> frozenset[str]; w.is_done(id) -> bool
        w.add(id, {field: array}) -> bool     # False when the id is already stored; refuses
                                              # NaN/inf, float16 overflow, wrapping integers
        w.add_batch(ids, [item, ...] or {field: batch}) -> int   # number buffered
        w.flush(); w.refresh(); w.written     # items this writer committed (its "new" count)

    s.write_json(name, obj) -> Path; s.read_json(name); s.has_json(name); s.json_names()
    verify(path, checksums=True, strict=False) -> list[str]    # one line per problem, all of them
    info(path) -> dict                                          # JSON-able summary
    upgrade(path, name=None) -> {set: (rewritten, had sums)}    # old shards rewritten with XXH3 sums

    from lighthead.store import StoreDataset            # imports torch (only this does)
    ds = StoreDataset(s, {"regions": "regions/x", "glob": "global/resnet18"}, ids=None,
                      fields={"regions": ["features", "boxes"]}, preload=False)
    ds[i] -> {"id": str, "regions": {field: np.ndarray}, "glob": {...}}
    DataLoader(ds, batch_size=..., num_workers=2, collate_fn=ds.collate)

    from lighthead.store import IMPORT_FORMATS, EXPORT_FORMATS   # the formats, by name:
    IMPORT_FORMATS.get("tsv").read(src, s, "regions/x")  # import_precomp/_tsv/_npz/_vinvl
    EXPORT_FORMATS.get("npz").write(s, dest, "regions/x")  # export_precomp/_tsv/_npz
    IMPORT_FORMATS.names() -> ["npz", "precomp", "tsv", "vinvl"]   # (store/formats.py: a new
                                                                   # format is one entry there)

Errors in data (truncated shard, missing file, checksum, malformed import input, a value a
field cannot hold) raise `StoreError`, whose message names the file (and line or id). Every
chunk of a shard has an XXH3 sum (and HDF5's Fletcher-32) that a reader checks the first time
it reads the chunk (store/checksums.py); manifests may only name shard files inside their
feature set.
"""

from __future__ import annotations

from typing import Any

from lighthead.store.api import Store, open_store
from lighthead.store.errors import StoreError
from lighthead.store.formats import EXPORT_FORMATS, IMPORT_FORMATS
from lighthead.store.manifest import sha256_file
from lighthead.store.reader import FeatureSet
from lighthead.store.schema import Field
from lighthead.store.shard_upgrade import upgrade
from lighthead.store.verify import info, verify
from lighthead.store.writer import Writer, WriterConfig

__all__ = [
    "EXPORT_FORMATS",
    "FeatureSet",
    "Field",
    "IMPORT_FORMATS",
    "Store",
    "StoreDataset",
    "StoreError",
    "Writer",
    "WriterConfig",
    "info",
    "open_store",
    "sha256_file",
    "upgrade",
    "verify",
]


def __getattr__(name: str) -> Any:
    # StoreDataset needs torch; importing it only on first use keeps `import lighthead.store` light.
    if name == "StoreDataset":
        from lighthead.store.dataset import StoreDataset

        return StoreDataset
    raise AttributeError(f"module 'store' has no attribute {name!r}")
