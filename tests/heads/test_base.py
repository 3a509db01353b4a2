"""The head contract of `heads/base.py`: every head and config subclasses its kind's base, and
the hooks the pipeline calls have the documented defaults."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lighthead.heads.base import HEADS, HeadConfig, RetrievalConfig, RetrievalHead, SentimentConfig, SentimentHead
from lighthead.heads.build import head_class
from tests.heads.test_registry import TINY

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
    labels = {
        n: head_class(n).config_class().semantic_labels() for n in HEADS.names() if head_class(n).task == "retrieval"
    }
    assert labels == {"casc": ("nouns", 500), "scan": None, "vsepp": None, "mmca": None, "mfsr": None}


def test_sentiment_hooks_default_to_the_logits_and_no_alignment():
    from lighthead.heads.text_only import TextOnly, TextOnlyConfig

    torch.manual_seed(0)
    head = TextOnly(TextOnlyConfig(d=8, heads=2, ff=16), token_dim=6).eval()
    batch = {
        "tokens": torch.randn(3, 4, 6),
        "text_mask": torch.ones(3, 4, dtype=torch.bool),
        "label": torch.tensor([0, 1, 2]),
    }
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


# ---- building from the config and the data's sizes -------------------------------------------

INFO = {
    "dataset": "demo",
    "region_dim": 10,
    "num_regions": 4,
    "global_dim": 9,
    "thumb_size": 16,
    "vocab_size": 20,
    "token_dim": 12,
    "num_labels": 7,
    "label_pos_weight": [0.5] * 7,
    "records": "target",
    "train_samples": 30,
    "aux_train_samples": 10,
}


def by_signature(cls, cfg, info):
    """The head built the way the sizes used to be passed: each constructor parameter named in `info`."""
    import inspect

    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "cfg")]
    return cls(cfg, **{p: info[p] for p in params if p in info})


@pytest.mark.parametrize("name", HEADS.names())
@pytest.mark.parametrize("keys", ["all", "few"])
def test_from_config_passes_every_size_its_constructor_takes(name, keys):
    from lighthead.heads.build import build_head, make_config

    cls = head_class(name)
    assert "from_config" in vars(cls), f"{name} inherits from_config: implement it, naming its sizes"
    info = INFO if keys == "all" else {"vocab_size": 20}  # the others: the constructor's defaults
    torch.manual_seed(0)
    head = build_head(name, info, TINY.get(name, {}))
    torch.manual_seed(0)
    ref = by_signature(cls, make_config(cls.config_class, TINY.get(name, {}), info.get("dataset")), info)
    assert type(head) is cls
    assert {k: v.shape for k, v in head.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    for k, v in ref.state_dict().items():
        assert torch.equal(head.state_dict()[k], v), (name, k)


def test_data_info_reads_a_task_mapping_and_refuses_unknown_or_mistyped_sizes():
    import numpy as np

    from lighthead.heads.base import DataInfo

    data = DataInfo.of({**INFO, "region_dim": np.int64(10), "num_regions": None})
    assert (data.region_dim, data.num_regions, data.label_pos_weight) == (10, None, (0.5,) * 7)
    assert type(data.region_dim) is int and DataInfo.of(data) is data
    assert DataInfo.of(data.to_json()) == data and data.to_json()["label_pos_weight"] == [0.5] * 7
    with pytest.raises(ValueError, match="^unknown data size 'vocab'; known: aux_train_samples, dataset, "):
        DataInfo.of({"vocab": 3})
    for bad, message in [
        ({"vocab_size": "many"}, "vocab_size must be a non-negative integer, got 'many'"),
        ({"token_dim": -1}, "token_dim must be a non-negative integer"),
        ({"region_dim": True}, "region_dim must be a non-negative integer"),
        ({"dataset": 3}, "dataset must be a string"),
        ({"label_pos_weight": ["a"]}, "label_pos_weight must be a list of numbers"),
    ]:
        with pytest.raises(ValueError, match=message):
            DataInfo.of(bad)


def test_build_head_takes_a_data_info():
    from lighthead.heads.base import DataInfo
    from lighthead.heads.build import build_head

    head = build_head("casc", DataInfo(dataset="coco", region_dim=6, vocab_size=9, num_labels=3), TINY["casc"])
    assert head.img_fc.in_features == 6 and head.fc2.out_features == 3 and head.cfg.lr == 5e-4  # coco's rate


# ---- feature sources ----------------------------------------------------------------------------


def looks_like_a_feature_set(value) -> bool:
    from lighthead.heads.base import SOURCE_PREFIXES

    return isinstance(value, str) and value.startswith(tuple(SOURCE_PREFIXES.values()))


def configs_to_check():
    """Every head's default config, its demo config, and the variants that switch a source's kind."""
    from lighthead.heads.build import make_config

    for name in HEADS.names():
        cls = head_class(name).config_class
        yield name, cls()
        yield f"{name} demo", make_config(cls, {}, "demo")
    yield "vsepp regions", make_config(head_class("vsepp").config_class, {"image": "regions/x", "text": "text/y"})
    yield "scan tokens", make_config(head_class("scan").config_class, {"text": "text/y"})


@pytest.mark.parametrize("name", HEADS.names())
def test_every_field_that_names_a_feature_set_is_a_declared_source(name):
    from lighthead.heads.base import source_kinds

    cls = head_class(name).config_class
    named = {f.name for f in dataclasses.fields(cls) if looks_like_a_feature_set(f.default)}
    assert named == set(source_kinds(cls)), (
        f"{name}: declare {sorted(named - set(source_kinds(cls)))} with heads.base.source(KIND, default=...)"
    )


@pytest.mark.parametrize("label, cfg", list(configs_to_check()), ids=lambda x: x if isinstance(x, str) else "")
def test_feature_sources_reads_every_declared_source_with_the_kind_of_its_value(label, cfg):
    from lighthead.heads.base import SOURCE_PREFIXES, feature_sources, source_kinds

    got = feature_sources(cfg)
    declared = source_kinds(type(cfg))
    want = {}
    for name in declared:
        value = getattr(cfg, name)
        if value:
            kind = next(k for k, prefix in SOURCE_PREFIXES.items() if value.startswith(prefix))
            want[name] = (kind, value)
            assert kind in declared[name], (label, name)
    assert got == want, label
    # ... and nothing else the config holds is a source, whatever its value looks like
    others = {f.name for f in dataclasses.fields(cfg) if f.name not in declared}
    assert not {n for n in others if looks_like_a_feature_set(getattr(cfg, n))}, label


def test_a_head_without_thumbnails_reads_none_and_an_aux_store_is_no_source():
    from lighthead.heads.base import feature_sources

    mfsr = head_class("mfsr").config_class(img_re=False)
    assert "thumbs" not in feature_sources(mfsr) and feature_sources(mfsr)["image"] == ("global", "global/resnet152")
    itm = head_class("itm").config_class(aux_store="regions/not-a-set")  # a store's path, whatever it looks like
    assert set(feature_sources(itm)) == {"regions", "text"}


def test_a_source_of_another_kind_is_refused_naming_the_field():
    from lighthead.heads.base import feature_sources, source

    @dataclasses.dataclass
    class Cfg(RetrievalConfig):
        image: str = source("global", "regions", default="words/vocab")

    with pytest.raises(
        ValueError,
        match=r"^image must name a global/\.\.\. or regions/\.\.\. feature set, "
        r"got 'words/vocab'$",
    ):
        feature_sources(Cfg())
    with pytest.raises(ValueError, match="source kinds must be among regions, global, thumbs, words, tokens"):
        source("text", default="text/x")


def test_a_head_keeps_its_building_blocks_in_its_own_module():
    """Split by concept, not by length: no `*_parts.py` grab-bag re-exported under a second name."""
    from pathlib import Path

    import lighthead.heads as heads
    from lighthead.heads import itm, mfsr, mmca

    assert not sorted(p.name for p in Path(heads.__file__).resolve().parent.glob("*_parts.py"))
    for module, names in [
        (mmca, ("TextCNN", "pair_cat", "region_mean", "transformer_unit")),
        (itm, ("alignment_target", "bert_init", "head_mean_scores")),
        (mfsr, ("Generator", "Discriminator", "CaptionDecoder", "caption_loss", "bce")),
    ]:
        for name in names:
            assert vars(module)[name].__module__ == module.__name__, name
