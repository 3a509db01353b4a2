"""A new head written outside `heads/` (tests/heads/toy_head.py) with the public contract only:
registered by name, built through `build_head`, its hooks left at their documented defaults,
trained one epoch and evaluated through the same functions `lighthead train` and `evaluate` call."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lighthead.heads.base import HEADS, DataInfo, RetrievalHead, feature_sources
from lighthead.heads.build import build_head, head_class, make_config
from tests.heads.conftest import random_batch
from tests.heads.toy_fixture import toy_head_registered

INFO = {"dataset": "demo", "region_dim": 10, "vocab_size": 20, "num_regions": 4}


@pytest.fixture
def toy():
    with toy_head_registered() as module:
        yield module


def test_the_toy_head_registers_by_name_for_its_test_only(toy):
    assert head_class("toy") is toy.ToyHead and issubclass(toy.ToyHead, RetrievalHead)
    assert toy.ToyHead.task == "retrieval" and toy.ToyHead.config_class is toy.ToyConfig


def test_no_other_test_meets_the_toy_head():
    assert "toy" not in HEADS.names()
    with toy_head_registered():
        assert "toy" in HEADS.names()
    assert "toy" not in HEADS.names()


def test_the_toy_head_builds_through_build_head_with_its_config_and_sizes(toy):
    head = build_head("toy", INFO, {"embed_size": "8", "lr": "0.01"})
    assert isinstance(head, toy.ToyHead)
    assert (head.cfg.embed_size, head.cfg.lr, head.cfg.regions) == (8, 0.01, "regions/butd-r101-vg-given")  # demo's
    assert (head.img_fc.in_features, head.embed.num_embeddings) == (10, 20)
    same = toy.ToyHead.from_config(make_config(toy.ToyConfig, {"embed_size": "8"}, "demo"), DataInfo.of(INFO))
    assert {k: v.shape for k, v in same.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}
    with pytest.raises(KeyError, match="unknown toy config key 'nonsense'"):
        build_head("toy", INFO, {"nonsense": "1"})


def test_the_toy_config_declares_its_sources_and_the_loop_settings(toy):
    cfg = toy.ToyConfig()
    assert feature_sources(cfg) == {"regions": ("regions", "regions/butd-r101-vg-36"), "text": ("words", "words/vocab")}
    assert (cfg.epochs, cfg.batch_size, cfg.grad_clip, cfg.num_regions) == (2, 16, 2.0, 0)
    assert cfg.semantic_labels() is None
    assert {"epochs", "batch_size", "grad_clip"} <= {f.name for f in dataclasses.fields(cfg)}


def test_the_toy_hooks_are_the_documented_defaults(toy):
    torch.manual_seed(0)
    head = build_head("toy", INFO, {"embed_size": "8"})
    batch = random_batch(b=4, region_dim=10)
    assert head.start_epoch(1) is None and head.optimizer_for(batch) is None
    img, txt = head.encode_image(batch), head.encode_text({k: v[:3] for k, v in batch.items()})
    assert head.pair_bytes(img, txt) == 64
    scores = head.score(img, txt)
    assert scores.shape == (4, 3) and torch.isfinite(scores).all()
    assert (scores.abs() <= 1 + 1e-6).all()  # cosines of unit vectors


def test_the_toy_head_trains_a_step(toy):
    torch.manual_seed(0)
    head = build_head("toy", INFO, {"embed_size": "8", "lr": "0.05"})
    batch = random_batch(b=4, region_dim=10)
    ((opt, sched),) = head.optimizers()
    assert sched is None  # lr_decay_epochs=0
    before = head.loss(batch)["loss"]
    before.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    opt.step()
    assert head.loss(batch)["loss"] < before


def test_the_toy_head_trains_an_epoch_and_evaluates_through_the_pipeline(toy, tmp_path):
    """The whole contract in use: `lighthead train` / `evaluate`'s functions find the toy by name,
    read its declared sources from the store, call its hooks, and score it like any retrieval head."""
    from lighthead.pipelines.training.evaluate import evaluate_run
    from lighthead.pipelines.training.loop import train
    from tests.conftest_helpers import build_small_retrieval_store

    store = build_small_retrieval_store(tmp_path / "store", seed=0)
    out = tmp_path / "run"
    metrics = train("toy", store, out, epochs=1, overrides={"embed_size": "8"}, progress=False)
    assert len(metrics["history"]) == 1  # one epoch
    test = metrics["test"]
    assert 0 <= test["i2t_r1"] <= 100 and test["rsum"] == pytest.approx(
        sum(test[f"{d}_r{k}"] for k in (1, 5, 10) for d in ("i2t", "t2i"))
    )
    again = evaluate_run(out, split="test")
    assert again["rsum"] == pytest.approx(test["rsum"])  # the saved checkpoint scores what training scored
