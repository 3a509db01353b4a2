from __future__ import annotations

import pytest

from lighthead.store import open_store
from tests.store.helpers import FIELDS, item_id, make_item


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "st", create=True)


@pytest.fixture
def filled(store):
    """A store with 50 items of every field kind in 4 shards (16 items each, the last 2)."""
    with store.writer("test/all", FIELDS, {"extractor": "test"}, shard_items=16, fsync=False) as w:
        for i in range(50):
            w.add(item_id(i), make_item(i))
    return store
