"""Field specs, name rules and the on-disk constants of a feature set.

A feature set stores, per item (one image, one caption...), a fixed set of named fields.
A field is either fixed-size (every item has the same shape, possibly `()` for a scalar)
or variable-length (a leading `None` in the shape: adaptive boxes, token sequences).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lighthead.store.errors import StoreError

FORMAT = "lighthead-store"  # written into every manifest and shard, checked on read
VERSION = 1  # bumped on incompatible layout changes
MANIFEST = "manifest.json"
SHARD_RE = re.compile(r"^shard-(?P<tag>[A-Za-z0-9_.-]+)-(?P<num>\d{5,})\.h5(?P<tmp>\.tmp)?$")

_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Numeric kinds only: HDF5 stores them natively and the raw read path can map them.
_KINDS = {"f", "i", "u", "b"}


def check_name(name: str, what: str = "feature set") -> str:
    """Validate a relative path name like `regions/butd-r101-vg-36`; returns it normalised."""
    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"empty {what} name")
    parts = name.strip("/").split("/")
    for part in parts:
        if not _NAME_PART.match(part):
            raise ValueError(f"bad {what} name {name!r}: part {part!r} must match {_NAME_PART.pattern}")
    if what == "feature set" and parts[0] == "meta":
        raise ValueError(f"bad feature set name {name!r}: 'meta/' holds JSON artifacts")
    return "/".join(parts)


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise ValueError(f"bad writer tag {tag!r}: use 1-64 of [A-Za-z0-9_.-]")
    return tag


def shard_name(tag: str, num: int) -> str:
    return f"shard-{tag}-{num:05d}.h5"


@dataclass(frozen=True)
class Field:
    """One named array per item.

    `Field("features", (36, 2048))` is a fixed `[K, D]` field stored as `[N, K, D]`;
    `Field("boxes", (None, 4), "float32")` is variable-length, stored flat as `[total, 4]`
    plus `offsets [N+1]`; `Field("image_w", (), "int32")` is a scalar stored as `[N]`.
    """

    name: str  # key of the field in item dicts and the HDF5 dataset name
    shape: tuple = ()  # per-item shape; a leading None marks a variable first axis
    dtype: str = "float16"  # numpy dtype name; float16 keeps region features at half size

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PART.match(self.name) or "." in self.name:
            raise ValueError(f"bad field name {self.name!r}")
        shape = tuple(self.shape)
        for i, dim in enumerate(shape):
            if dim is None and i == 0:
                continue
            if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
                raise ValueError(f"field {self.name!r}: bad shape {shape} (None only first, dims >= 1)")
        dt = np.dtype(self.dtype)
        if dt.kind not in _KINDS:
            raise ValueError(f"field {self.name!r}: dtype {dt} is not numeric or bool")
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in shape))
        object.__setattr__(self, "dtype", dt.name)

    @property
    def variable(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] is None

    @property
    def row_shape(self) -> tuple:
        """Shape of one stored row: the item shape for fixed fields, shape[1:] for variable."""
        return self.shape[1:] if self.variable else self.shape

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Field:
        return cls(obj["name"], tuple(obj["shape"]), obj["dtype"])

    def coerce(self, value: Any, item_id: str) -> np.ndarray:
        """Cast one item's value to this field's dtype and check its shape and values
        (`value_problem`): a value the field cannot hold unchanged is an error, never stored."""
        src = np.asarray(value)
        # integers into any integer field (value_problem refuses those that would wrap)
        casting = "unsafe" if src.dtype.kind in "iub" and self.np_dtype.kind in "iu" else "same_kind"
        try:
            # always a copy: the writer buffers items and callers may reuse their arrays;
            # overflow here is not a warning but value_problem's error below
            with np.errstate(over="ignore", invalid="ignore"):
                arr = src.astype(self.np_dtype, order="C", casting=casting, copy=True)
        except TypeError as exc:
            raise StoreError(f"id {item_id!r}, field {self.name!r}: cannot store {src.dtype} as {self.dtype}") from exc
        problem = value_problem(src, arr)
        if problem:
            raise StoreError(f"id {item_id!r}, field {self.name!r}: {problem}")
        if self.variable:
            ok = arr.ndim == len(self.shape) and arr.shape[1:] == self.row_shape
        else:
            ok = arr.shape == self.shape
        if not ok:
            want = tuple("*" if d is None else d for d in self.shape)
            raise StoreError(f"id {item_id!r}, field {self.name!r}: shape {arr.shape}, expected {want}")
        return arr


FLOAT32_HINT = "keep float32 with --dtype float32"  # how to store what float16 cannot hold


def value_problem(src: np.ndarray, stored: np.ndarray) -> str | None:
    """Why `stored` (`src` cast to a field's dtype) differs from `src`, or None when it does not.

    The one value check of every writer (extraction jobs and imports alike): NaN/inf in a
    float field, floats beyond the stored dtype's range (float16 tops out at 65504; the cast
    would make them inf), integers the stored dtype cannot hold (the cast would wrap them).
    """
    kind = stored.dtype.kind
    if kind == "f":
        if stored.size == 0 or np.isfinite(stored).all():
            return None
        if src.dtype.kind == "f" and not np.isfinite(src).all():
            return "holds NaN or inf"
        big = np.abs(src[~np.isfinite(stored)].astype(np.float64)).max()
        name = stored.dtype.name
        hint = f"; {FLOAT32_HINT}" if name == "float16" else ""
        return f"value {big:.6g} overflows {name} (largest {float(np.finfo(stored.dtype).max):.6g}){hint}"
    if kind in "iu" and src.dtype.kind in "iub" and src.size and src.dtype != stored.dtype:
        info = np.iinfo(stored.dtype)
        lo, hi = src.min(), src.max()
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            return f"value {int(bad)} does not fit {stored.dtype.name} ({info.min}..{info.max})"
    return None


def check_shard_file(name: Any, manifest: Any) -> str:
    """A shard name from a manifest: a plain finished-shard file name inside the feature set.
    Anything else (absolute paths, `..`, sub-folders, `.tmp`) would read files the feature set
    does not own, so it is refused."""
    m = SHARD_RE.fullmatch(name) if isinstance(name, str) else None
    if m is None or m["tmp"]:
        raise StoreError(
            f"{manifest}: bad shard file name {name!r} (expected shard-<tag>-<num>.h5 inside the feature set)"
        )
    return name


def fields_from_json(items: Sequence[Mapping[str, Any]]) -> dict[str, Field]:
    return {f.name: f for f in (Field.from_json(o) for o in items)}


def check_fields(fields: Sequence[Field]) -> dict[str, Field]:
    out: dict[str, Field] = {}
    for f in fields:
        if not isinstance(f, Field):
            raise TypeError(f"expected Field, got {type(f).__name__}")
        if f.name in out:
            raise ValueError(f"field {f.name!r} given twice")
        out[f.name] = f
    if not out:
        raise ValueError("a feature set needs at least one field")
    return out


def check_id(item_id: Any) -> str:
    # ids must be str: an int key means a position when reading (`fs[3]`).
    if not isinstance(item_id, str) or not item_id or "\x00" in item_id:
        raise TypeError(f"item ids are non-empty str without NUL, got {item_id!r}")
    return item_id
