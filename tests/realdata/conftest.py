"""Real files no one on this project wrote (../shared/realdata, see its README): the original Caffe
bottom-up-attention features of 10 COCO images with the images, and a published MiniLM similarity
matrix. A plain clone has no such folder: every test here then skips."""

from __future__ import annotations

import base64
import csv
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# beside the checkout (../shared), or inside it where a checkout carries shared/
REALDATA = next(
    (p for p in (ROOT.parent / "shared" / "realdata", ROOT / "shared" / "realdata") if p.is_dir()),
    ROOT.parent / "shared" / "realdata",
)
COCO10 = REALDATA / "pba-coco10"
TSV = COCO10 / "train2014_obj36.tsv"
IMAGES = COCO10 / "images"

# LXMERT's `load_obj_tsv` columns, and the dtype each base64 field holds.
FIELDS = [
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
]
DTYPES = {
    "objects_id": np.int64,
    "objects_conf": np.float32,
    "attrs_id": np.int64,
    "attrs_conf": np.float32,
    "boxes": np.float32,
    "features": np.float32,
}


def read_caffe_tsv(path: Path) -> dict[str, dict]:
    """The TSV read the way LXMERT reads it (csv, base64 numpy buffers), written out here so the
    comparison does not go through the project's importer."""
    csv.field_size_limit(sys.maxsize)
    rows = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh, FIELDS, delimiter="\t"):
            n = int(row["num_boxes"])
            item = {"img_h": int(row["img_h"]), "img_w": int(row["img_w"]), "num_boxes": n}
            for key, dtype in DTYPES.items():
                item[key] = np.frombuffer(base64.b64decode(row[key]), dtype=dtype)
            item["boxes"] = item["boxes"].reshape(n, 4)
            item["features"] = item["features"].reshape(n, -1)
            rows[row["img_id"]] = item
    return rows


@pytest.fixture(scope="session")
def caffe() -> dict[str, dict]:
    if not TSV.is_file():
        pytest.skip(f"{REALDATA} is absent (real files for tests; see docs/contributing.md, Tests)")
    return read_caffe_tsv(TSV)
