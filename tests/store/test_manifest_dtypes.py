"""A manifest whose field dtype was edited (float16 -> int16: two bit flips) is refused on open,
naming the shard and the field, instead of reading reinterpreted bytes."""

import json
import re

import numpy as np
import pytest

from lighthead.store import FeatureSet, StoreError
from lighthead.store.manifest import read_manifest
from tests.store.helpers import FIELDS

# each field's dtype -> another of the same item size, so no size check can catch it
SWAPS = {
    "float16": "int16",
    "float32": "int32",
    "int64": "float64",
    "bool": "uint8",
    "uint8": "int8",
    "int32": "float32",
}


@pytest.mark.parametrize("field", [f.name for f in FIELDS])
def test_an_edited_dtype_in_the_manifest_names_shard_and_field(filled, field):
    directory = filled.path / "test/all"
    manifest = directory / "manifest.json"
    obj = json.loads(manifest.read_text())
    entry = next(f for f in obj["fields"] if f["name"] == field)
    stored, entry["dtype"] = entry["dtype"], SWAPS[entry["dtype"]]
    assert np.dtype(stored).itemsize == np.dtype(entry["dtype"]).itemsize
    manifest.write_text(json.dumps(obj))
    first = directory / read_manifest(directory).shards[0].file
    want = f"{first}: field {field!r} is stored as {stored}, the manifest says {entry['dtype']}"
    with pytest.raises(StoreError, match="^" + re.escape(want)):
        FeatureSet(directory)
