"""Real files no one on this project wrote (../shared/realdata, see its README): the original Caffe
bottom-up-attention features of 10 COCO images with the images, and a published MiniLM similarity
matrix. A plain clone has no such folder: every test here then skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest_helpers import lxmert_load_obj_tsv

ROOT = Path(__file__).resolve().parents[2]
# beside the checkout (../shared), or inside it where a checkout carries shared/
REALDATA = next(
    (p for p in (ROOT.parent / "shared" / "realdata", ROOT / "shared" / "realdata") if p.is_dir()),
    ROOT.parent / "shared" / "realdata",
)
COCO10 = REALDATA / "pba-coco10"
TSV = COCO10 / "train2014_obj36.tsv"
IMAGES = COCO10 / "images"


def read_caffe_tsv(path: Path) -> dict[str, dict]:
    """image id -> row, the TSV read the way LXMERT reads it (not through the project's importer)."""
    return {row["img_id"]: row for row in lxmert_load_obj_tsv(path)}


@pytest.fixture(scope="session")
def caffe() -> dict[str, dict]:
    if not TSV.is_file():
        pytest.skip(f"{REALDATA} is absent (real files for tests; see docs/contributing.md, Tests)")
    return read_caffe_tsv(TSV)
