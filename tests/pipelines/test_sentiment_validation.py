"""Sentiment validation scores the whole dev split (the loop's `val_images` caps retrieval
images only), weighted F1 sits beside macro F1 in metrics.json, and config.json records which
ITM reading ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lighthead.pipelines.datasets.base import Record
from lighthead.pipelines.tasks.sentiment import SentimentTask
from lighthead.store import Field, open_store
from tests.pipelines.test_sentiment import TINY, build_store

TEXT, TD = "text/all-minilm-l6-v2", 8
SPLITS = {"train": 48, "val": 1200, "test": 30}  # a dev split larger than the default val_images (1,000)


@pytest.fixture(scope="module")
def big_dev_store(tmp_path_factory) -> Path:
    """Posts with token features only (enough for the text-only head): label c puts a shifted
    first token in the text, so the head can learn something."""
    root = tmp_path_factory.mktemp("bigdev") / "store"
    rng = np.random.default_rng(0)
    records = []
    for split, n in SPLITS.items():
        for i in range(n):
            records.append(
                Record(
                    id=f"{split}{i}",
                    image_id=f"{split}{i}",
                    image_path=f"/none/{split}{i}.png",
                    texts=["a post"],
                    split=split,
                    kind="post",
                    label=int(rng.integers(0, 3)),
                )
            )
    s = open_store(root, create=True)
    s.write_json("records", [r.to_json() for r in records])
    s.write_json("dataset", {"name": "demo"})
    with s.writer(TEXT, [Field("features", (None, TD)), Field("length", (), "int32")]) as w:
        for r in records:
            n = int(rng.integers(2, 6))
            feats = rng.normal(0, 1, (n, TD))
            feats[0, r.label] += 3.0
            w.add(f"{r.id}#0", {"features": feats, "length": n})
    return root


def test_the_whole_dev_split_is_scored(big_dev_store, tmp_path):
    from lighthead.pipelines.training.loop import train

    metrics = train(
        "text-only",
        big_dev_store,
        tmp_path / "run",
        epochs=2,
        overrides={**TINY["text-only"], "records": "post"},
        progress=False,
    )
    assert metrics["val"]["n"] == 1200  # not the first 1,000
    assert all(h["val"]["n"] == 1200 for h in metrics["history"])
    for split in ("val", "test"):
        assert {"accuracy", "macro_f1", "weighted_f1"} <= set(metrics[split])
        assert 0 <= metrics[split]["weighted_f1"] <= 100
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["val"]["weighted_f1"] == metrics["val"]["weighted_f1"]
    # the best epoch is the one with the highest accuracy on the whole split
    best = max(metrics["history"], key=lambda h: h["val"]["accuracy"])
    assert metrics["best_epoch"] == best["epoch"]


def test_evaluate_ignores_the_retrieval_image_cap(big_dev_store):
    from lighthead.heads.base import DataInfo
    from lighthead.heads.build import head_class, make_config

    cls = head_class("text-only")
    cfg = make_config(cls.config_class, {**TINY["text-only"], "records": "post"}, "demo")
    task = SentimentTask(open_store(big_dev_store), cfg, "demo")
    torch.manual_seed(0)
    head = cls.from_config(cfg, DataInfo.of(task.data_info()))
    got = task.evaluate(head, "val", torch.device("cpu"), limit=1000)
    whole = task.evaluate(head, "val", torch.device("cpu"))
    assert got["n"] == whole["n"] == 1200 and got == whole
    assert len(task.predict(head, "val", torch.device("cpu"), limit=10)["label"]) == 10  # a quick look


@pytest.fixture(scope="module")
def itm_store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("itmcfg"), n_images=40)


@pytest.mark.parametrize(
    "sets,want",
    [
        (
            {},
            {
                "recipe": "code",
                "layer_type": "bert",
                "alignment": "mean_scores",
                "optimizer": "bertadam",
                "schedule": "warmup_linear_twice",
                "epochs": 1,
            },
        ),
        (
            {"recipe": "paper"},
            {
                "recipe": "paper",
                "layer_type": "transformer",
                "alignment": "mean_probs",
                "optimizer": "adamw",
                "schedule": "constant",
                "epochs": 1,
            },
        ),
    ],
)
def test_config_json_records_the_reading(itm_store, tmp_path, sets, want):
    from lighthead.pipelines.training.loop import train

    train("itm", itm_store, tmp_path / "run", epochs=1, overrides={**TINY["itm"], **sets}, progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert {k: config[k] for k in want} == want
    info = json.loads((tmp_path / "run" / "data_info.json").read_text())
    assert info["train_samples"] > 0 and 0 < info["aux_train_samples"] <= info["train_samples"]
