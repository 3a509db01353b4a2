"""bench/train.py measures every registered head on its synthetic store (none skipped), and
swaps a feature set a head names but the store lacks for one of the same kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.gpu_parts.sizes import DRY
from lighthead.heads.base import HEADS
from lighthead.store import open_store
from tests.bench_helpers import load_bench_script
from tests.conftest_helpers import build_retrieval_store

TINY = DRY.train_extra  # the bench's dry-run widths: tiny, every head's keys (keys a head lacks are dropped)


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("train")


@pytest.fixture(scope="module")
def store(bench, tmp_path_factory) -> Path:
    path = build_retrieval_store(
        tmp_path_factory.mktemp("bench") / "store",
        n_images=24,
        splits=(16, 4, 4),
        region_dim=32,
        num_regions=8,
        global_dim=32,
        token_dim=16,
    )
    return bench.add_sentiment(path, n_images=24, token_dim=16, region_dim=32)


def test_sentiment_records_and_sets(bench, store):
    s = open_store(store)
    records = s.read_json("records")
    posts = [r for r in records if r["kind"] == "post"]
    targets = [r for r in records if r["kind"] == "target"]
    assert len(posts) == len(targets) == 24
    assert all("$T$" in t["texts"][0] and t["target"] for t in targets)
    related = [t for t in targets if t["extra"]["relevance"] == 1]
    assert related and all(len(t["extra"]["box"]) == 4 for t in related)
    assert all(t["extra"]["box"] is None for t in targets if t["extra"]["relevance"] == 0)
    assert s["regions/butd-r101-vg-100"].fields["features"].shape == (100, 32)
    assert {f"{r['id']}#0" for r in posts + targets} <= set(s["text/roberta-base"].ids)


def test_every_registered_head_is_measured(bench, store, capsys):
    torch.manual_seed(0)
    results = bench.measure(HEADS.names(), store, torch.device("cpu"), quick=True, batch_size=4, steps=1, extra=TINY)
    assert set(results) == set(HEADS.names())
    assert all(r["loader"] > 0 and r["step"] > 0 for r in results.values())
    assert "skipped" not in capsys.readouterr().out


@pytest.fixture(scope="module")
def bare_store(tmp_path_factory) -> Path:
    """A retrieval store only: no sentiment records, no BERT / RoBERTa tokens, no ResNet-18 set."""
    return build_retrieval_store(
        tmp_path_factory.mktemp("bare") / "store",
        n_images=12,
        splits=(8, 2, 2),
        region_dim=16,
        num_regions=4,
        global_dim=16,
        token_dim=8,
    )


def test_a_missing_feature_set_is_replaced_by_one_of_its_kind(bench, store, bare_store):
    assert bench.overrides_for("mmca", store, quick=False, batch_size=None) == {}  # it has them all
    assert bench.overrides_for("mmca", bare_store, quick=False, batch_size=None) == {"text": "text/all-minilm-l6-v2"}
    over = bench.overrides_for("itin", bare_store, quick=True, batch_size=8)
    assert over["global_features"] == "global/resnet152" and over["text"] == "text/all-minilm-l6-v2"
    assert over["batch_size"] == "8" and over["d"] == "256" and "embed_size" not in over


def test_without_skipping_an_unserved_head_is_an_error(bench, bare_store, capsys):
    with pytest.raises(ValueError, match="post"):
        bench.measure(["itin"], bare_store, torch.device("cpu"), quick=True, batch_size=4, steps=1, extra=TINY)
    assert (
        bench.measure(
            ["itin"], bare_store, torch.device("cpu"), quick=True, batch_size=4, steps=1, extra=TINY, skip_unserved=True
        )
        == {}
    )
    assert "itin       skipped" in capsys.readouterr().out


def test_unknown_head_one_line_error(bench, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["train.py", "--heads", "casc,nope"])
    with pytest.raises(SystemExit) as e:
        bench.main()
    assert e.value.code == "error: --heads nope: unknown head; known: " + ", ".join(HEADS.names())
    assert capsys.readouterr().out == ""  # stopped before any store was written or measured


def test_the_step_is_timed_in_each_precision_labelled(bench, store, capsys, monkeypatch):
    """`lighthead train` runs bf16 autocast on a GPU: the bench times that as well as fp32."""
    assert bench.default_precisions(torch.device("cpu")) == ["fp32"]  # what `lighthead train` runs on a CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert bench.default_precisions(torch.device("cuda")) == ["fp32", "fp16"]
    results = bench.measure(
        ["casc"], store, torch.device("cpu"), quick=True, batch_size=4, steps=1, extra=TINY, precisions=["fp32", "bf16"]
    )
    assert results["casc"]["step"] > 0 and results["casc"]["step_bf16"] > 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("casc")]
    assert [" step fp32 " in lines[0], " step bf16 " in lines[1]] == [True, True]
