import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lighthead.store import Field, StoreDataset, StoreError
from tests.store.helpers import item_id, make_item


@pytest.fixture
def joined(filled):
    """Adds a global feature set holding every other id of test/all, in reverse order."""
    with filled.writer("global/g", [Field("features", (5,), "float32")], fsync=False, shard_items=7) as w:
        for i in range(48, -1, -2):
            w.add(item_id(i), {"features": np.full(5, i, np.float32)})
    return filled


def test_join_by_id_nested(joined):
    ds = StoreDataset(joined, {"regions": "test/all", "glob": "global/g"}, fields={"regions": ["features", "boxes"]})
    assert ds.ids == [item_id(i) for i in range(0, 50, 2)]  # first set's order, ids all sets have
    item = ds[3]
    assert item["id"] == item_id(6) and set(item) == {"id", "regions", "glob"}
    assert set(item["regions"]) == {"features", "boxes"}
    assert np.array_equal(item["regions"]["boxes"], make_item(6)["boxes"])
    assert item["glob"]["features"].tolist() == [6.0] * 5


def test_explicit_ids_and_missing_id(joined):
    ds = StoreDataset(joined.path, {"glob": "global/g"}, ids=[item_id(4), item_id(0)])
    assert [ds[k]["glob"]["features"][0] for k in range(2)] == [4.0, 0.0]
    with pytest.raises(StoreError, match="img-00001"):
        StoreDataset(joined, {"glob": "global/g"}, ids=[item_id(1)])
    with pytest.raises(KeyError, match="no field"):
        StoreDataset(joined, {"glob": "global/g"}, fields={"glob": ["nope"]})


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_match_direct_reads(joined, workers):
    ds = StoreDataset(joined, {"regions": "test/all", "glob": "global/g"})
    dl = DataLoader(
        ds,
        batch_size=4,
        shuffle=True,
        num_workers=workers,
        collate_fn=ds.collate,
        generator=torch.Generator().manual_seed(0),
    )
    seen = []
    for batch in dl:
        ids = batch["id"]
        seen += ids
        r = batch["regions"]
        assert r["features"].dtype == torch.float16 and r["features"].shape == (len(ids), 6, 8)
        for j, i in enumerate(ids):
            want = make_item(int(i.split("-")[1]))
            assert np.array_equal(r["features"][j].numpy(), want["features"])
            n = int(r["boxes_len"][j])
            assert n == len(want["boxes"]) and np.array_equal(r["boxes"][j, :n].numpy(), want["boxes"])
            assert not r["boxes"][j, n:].any()  # zero padding
            assert int(r["tokens_len"][j]) == len(want["tokens"])
            assert float(batch["glob"]["features"][j, 0]) == int(i.split("-")[1])
    assert sorted(seen) == sorted(ds.ids)


def test_default_collate_and_preload(joined):
    ds = StoreDataset(joined, {"glob": "global/g"}, preload=True)
    batch = next(iter(DataLoader(ds, batch_size=5, num_workers=2)))
    assert batch["glob"]["features"].shape == (5, 5) and batch["id"][0] == item_id(48)  # the set's order
    assert batch["glob"]["features"][:, 0].tolist() == [48.0, 46.0, 44.0, 42.0, 40.0]
