"""lighthead's own `minilm` text job against the similarity matrix the sentence-transformers
documentation publishes for all-MiniLM-L6-v2 (../shared/realdata/minilm-reference.json).

The job stores token features; the model is meant to be used mean-pooled over its tokens and
L2-normalised, which is done here on what the store holds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.store import open_store
from tests.realdata.conftest import REALDATA

REFERENCE = REALDATA / "minilm-reference.json"


def test_the_minilm_job_reproduces_the_published_cosines(tmp_path):
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} is absent (real files for tests)")
    ref = json.loads(REFERENCE.read_text())
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    lines = [json.dumps({"image": "a.png", "caption": s}) for s in ref["sentences"]]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    store = tmp_path / "store"
    assert (
        run_app(
            app, ["extract", "--dataset", "images", "--root", str(root), "--store", str(store), "--features", "minilm"]
        )
        == 0
    )
    fs = open_store(store)["text/all-minilm-l6-v2"]
    vectors = []
    for j in range(len(ref["sentences"])):
        item = fs[f"a#{j}"]
        tokens = np.asarray(item["features"], np.float64)  # (L, D), special tokens included, no padding
        assert tokens.shape[0] == int(item["length"])
        v = tokens.mean(axis=0)
        vectors.append(v / np.linalg.norm(v))
    cosine = np.stack(vectors) @ np.stack(vectors).T
    assert np.round(cosine, ref["decimals"]).tolist() == ref["cosine"]
