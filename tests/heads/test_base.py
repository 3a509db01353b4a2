"""The head contract of `heads/base.py`: every head and config subclasses its kind's base, and
the hooks the pipeline calls have the documented defaults."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lighthead.heads.base import (HEADS, HeadConfig, RetrievalConfig, RetrievalHead, SentimentConfig,
                                  SentimentHead)
from lighthead.heads.build import head_class

KIND = {"retrieval": (RetrievalHead, RetrievalConfig), "sentiment": (SentimentHead, SentimentConfig)}


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_and_config_subclass_the_base_of_its_kind(name):
    cls = head_class(name)
    head_base, config_base = KIND[cls.task]
    assert issubclass(cls, head_base) and issubclass(cls.config_class, config_base), name
    cfg = cls.config_class()
    # what the loop reads from every config is a field, so `--set` and config.json cover it
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert {"epochs", "batch_size", "grad_clip"} <= fields, name
    assert isinstance(cfg.num_regions, int) and cfg.num_regions >= 0


def test_config_hooks_have_the_documented_defaults():
    @dataclasses.dataclass
    class Plain(SentimentConfig):
        pass

    cfg = Plain()
    assert (cfg.epochs, cfg.batch_size, cfg.grad_clip, cfg.num_regions) == (10, 128, 0.0, 0)
    assert (cfg.records, cfg.aux_every, cfg.aux_store) == ("auto", 0, "")
    assert Plain.DATASET_DEFAULTS == {} and RetrievalConfig().semantic_labels() is None
    assert issubclass(Plain, HeadConfig)


def test_config_hooks_read_the_heads_own_settings():
    itin, itm, text_only = (head_class(n).config_class for n in ("itin", "itm", "text-only"))
    assert itin(m=3).num_regions == 3 and itin().records == "post"
    assert itm(k=7).num_regions == 7 and itm().records == "target"
    assert (itm(aux_every=2, aux_store="/x").aux_every, itm(aux_store="/x").aux_store) == (2, "/x")
    assert text_only(records="post").records == "post"
    assert head_class("scan").config_class(num_regions=5).num_regions == 5
    labels = {n: head_class(n).config_class().semantic_labels() for n in HEADS.names()
              if head_class(n).task == "retrieval"}
    assert labels == {"casc": ("nouns", 500), "scan": None, "vsepp": None, "mmca": None, "mfsr": None}


def test_sentiment_hooks_default_to_the_logits_and_no_alignment():
    from lighthead.heads.text_only import TextOnly, TextOnlyConfig

    torch.manual_seed(0)
    head = TextOnly(TextOnlyConfig(d=8, heads=2, ff=16), token_dim=6).eval()
    batch = {"tokens": torch.randn(3, 4, 6), "text_mask": torch.ones(3, 4, dtype=torch.bool),
             "label": torch.tensor([0, 1, 2])}
    with torch.no_grad():
        out = head.explain(batch)
        assert set(out) == {"logits"} and torch.equal(out["logits"], head(batch))
    assert head.alignment_target(batch) is None
    assert head.optimizer_for(batch) is None and head.start_epoch(3) is None


def test_itm_names_the_optimizer_of_each_phase():
    from lighthead.heads.itm import Itm, ItmConfig

    head = Itm(ItmConfig(d=8, heads=2, ff=16, k=4), region_dim=6, token_dim=6)
    assert head.optimizer_for({}) == 0 and head.optimizer_for({"phase": "aux"}) == 1


def test_a_head_missing_a_method_of_its_kind_cannot_be_built():
    class NoScore(RetrievalHead):
        def encode_image(self, batch):
            return {}

        def encode_text(self, batch):
            return {}

        def loss(self, batch):
            return {}

        def optimizers(self):
            return []

    with pytest.raises(TypeError, match="score"):
        NoScore()
