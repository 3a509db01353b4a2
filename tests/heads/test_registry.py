"""Every registered head: config, inputs, and (retrieval heads) shapes, NaNs and gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import lighthead.heads
from lighthead.heads.base import BATCH_KEYS, HEADS
from lighthead.heads.build import build_head, make_config, parse_overrides, parse_value
from tests.heads.conftest import random_batch

# Tiny widths per head (width 32 or less, nothing downloaded); heads not listed use defaults.
TINY = {
    "scan": {"embed_size": "16", "word_dim": "8"},
    "casc": {"embed_size": "16", "word_dim": "8", "label_hidden": "8"},
    "vsepp": {"embed_size": "16", "word_dim": "8"},
    "mmca": {"embed_dim": "32", "heads": "2", "filters": "8"},
    "mfsr": {
        "embed_dim": "24",
        "word_dim": "8",
        "gru_layers": "2",
        "gen_width": "8",
        "disc_width": "8",
        "recon_size": "8",
    },
    "itin": {"d": "16", "k": "16"},
    "itm": {"d": "16", "heads": "2", "ff": "32", "k": "4"},
    "text-only": {"d": "16", "heads": "2", "ff": "32"},
}
INFO = {
    "dataset": "demo",
    "region_dim": 10,
    "global_dim": 10,
    "vocab_size": 20,
    "token_dim": 12,
    "num_labels": 7,
    "num_regions": 4,
    "thumb_size": 16,
}


def test_my_heads_are_registered():
    assert {"casc", "scan", "vsepp"} <= set(HEADS.names())
    assert lighthead.heads.HEADS is HEADS


@pytest.mark.parametrize("name", HEADS.names())
def test_config_defaults_and_inputs(name):
    cls = HEADS.get(name)
    assert dataclasses.is_dataclass(cls.config_class), name
    cfg = cls.config_class()  # paper defaults are valid
    assert cls.task in ("retrieval", "sentiment")
    for f in dataclasses.fields(cfg):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name


@pytest.mark.parametrize("name", [n for n in HEADS.names() if HEADS.get(n).task == "retrieval"])
def test_retrieval_head_forward_and_gradients(name):
    torch.manual_seed(0)
    head = build_head(name, INFO, TINY.get(name, {}))
    assert set(head.inputs) <= set(BATCH_KEYS)
    batch = random_batch(b=4, region_dim=10)
    out = head.loss(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {pname}"
    head.eval()
    with torch.no_grad():
        s = head.score(head.encode_image(batch), head.encode_text({k: v[:3] for k, v in batch.items()}))
    assert s.shape == (4, 3) and torch.isfinite(s).all()


def test_unknown_override_names_the_valid_keys():
    with pytest.raises(KeyError) as e:
        build_head("casc", INFO, {"lambda": "3"})
    assert "lambda_i2t" in str(e.value) and "label_type" in str(e.value)


def test_override_parsing():
    from lighthead.heads.casc import CASCConfig

    cfg = make_config(
        CASCConfig, parse_overrides(["beta=0.5", "max_violation=false", "num_labels=300", "label_type=verbs"])
    )
    assert (cfg.beta, cfg.max_violation, cfg.num_labels, cfg.label_type) == (0.5, False, 300, "verbs")
    assert parse_value("1,2,3", tuple[int, ...]) == (1, 2, 3)
    assert parse_value("none", int | None) is None
    assert parse_value("1e3", int) == 1000
    with pytest.raises(ValueError, match="boolean"):
        parse_value("maybe", bool)
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["beta"])


@pytest.mark.parametrize("head", ["scan", "casc"])
def test_attn_norm_none_means_no_normalisation(head):
    """`--set attn_norm=none` is SCAN's no_norm (the name earlier run configs used); it once
    parsed to None and silently took the recipe's clipped_l2norm. "null" leaves the recipe's."""
    from lighthead.heads.build import head_class

    config_class = head_class(head).config_class
    assert make_config(config_class, parse_overrides(["attn_norm=none"])).attn_norm == "no_norm"
    assert make_config(config_class, parse_overrides(["attn_norm=null"])).attn_norm == "clipped_l2norm"
    assert make_config(config_class, parse_overrides(["attn_norm=null", "recipe=paper"])).attn_norm == "no_norm"
    assert parse_value("none", str | None) == "none" and parse_value("NULL", str | None) is None
    assert parse_value("None", float | None) is None  # not a word a number field could mean
    with pytest.raises(ValueError, match="direction must be one of .*got 'none'"):
        make_config(config_class, parse_overrides(["direction=none"]))
