"""Evaluation: block scoring, COCO folds, `evaluate_run` files, the CLI end to end."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from lighthead.heads.build import build_head
from lighthead.pipelines.tasks.scoring import (
    block_sizes,
    cat_padded,
    fast_precision,
    precision_context,
    score_all,
    score_blocks,
)
from tests.conftest_helpers import build_retrieval_store
from tests.heads.conftest import random_batch

TINY = {"embed_size": "8", "word_dim": "8", "batch_size": "16", "val_images": "0"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_retrieval_store(
        tmp_path_factory.mktemp("eval") / "store",
        n_images=30,
        splits=(20, 5, 5),
        region_dim=32,
        num_regions=6,
        global_dim=32,
        token_dim=8,
        seed=3,
    )


@pytest.mark.parametrize("name", ["casc", "scan", "vsepp"])
def test_blocks_under_a_tiny_budget_equal_one_shot(name):
    torch.manual_seed(0)
    info = {"region_dim": 10, "global_dim": 10, "vocab_size": 20, "num_labels": 7}
    head = build_head(name, info, {"embed_size": "8", "word_dim": "6"}).eval()
    batch = random_batch(b=7, region_dim=10)
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        full = head.score(img, txt)
        chunks = [{k: v[:3] for k, v in txt.items()}, {k: v[3:] for k, v in txt.items()}]
        tiny = score_blocks(head, img, chunks, budget_bytes=1)  # one pair per block
    torch.testing.assert_close(tiny, full, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["casc", "scan", "vsepp", "mfsr", "mmca"])
def test_bf16_scores_are_close_to_fp32_and_rank_alike(name):
    """bf16 products (autocast, float32 nonlinearities) move scores by ~1e-3, not the ranking."""
    torch.manual_seed(0)
    info = {"region_dim": 64, "global_dim": 64, "vocab_size": 20, "num_labels": 7, "token_dim": 12, "thumb_size": 16}
    over = {
        "mfsr": {"word_dim": "16", "embed_dim": "48", "part_dim": "16", "gen_width": "8", "disc_width": "8"},
        "mmca": {"embed_dim": "32", "heads": "4", "filters": "16"},
    }.get(name, {"embed_size": "64", "word_dim": "16"})
    head = build_head(name, info, over).eval()
    batch = random_batch(b=12, k=6, region_dim=64, token_dim=12)
    batch["global"] = torch.randn(12, 64)
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
    fp32 = score_blocks(head, img, [txt], precision="fp32")
    bf16 = score_blocks(head, img, [txt], precision="bf16")
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max().item() < 1e-2
    # the best caption of each image is the same (up to near-ties within the bf16 error)
    best = fp32.argmax(1)
    gap = fp32.max(1).values - fp32.gather(1, bf16.argmax(1, keepdim=True)).squeeze(1)
    assert ((bf16.argmax(1) == best) | (gap < 1e-2)).all()


def test_fast_precision_asks_for_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert fast_precision(cpu) == "fp32"  # plain AVX512 would emulate bf16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert fast_precision(cpu) == ("bf16" if torch.backends.mkldnn.is_available() else "fp32")


def test_precision_is_checked_and_cat_padded_pads_every_axis():
    from lighthead.pipelines.tasks.base import TaskOptions

    with pytest.raises(ValueError, match="precision"):
        precision_context(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="eval_precision"):
        TaskOptions(eval_precision="fp16")
    a = {"gram": torch.ones(2, 3, 3), "mask": torch.ones(2, 3, dtype=torch.bool)}
    b = {"gram": torch.ones(1, 5, 5), "mask": torch.ones(1, 5, dtype=torch.bool)}
    out = cat_padded([a, b])
    assert out["gram"].shape == (3, 5, 5) and out["mask"].shape == (3, 5)
    assert out["gram"][:2, 3:].abs().sum() == 0 and out["gram"][:2, :, 3:].abs().sum() == 0
    assert not out["mask"][:2, 3:].any() and out["gram"][2].sum() == 25


def test_score_all_restores_the_caption_order():
    torch.manual_seed(0)
    head = build_head("vsepp", {"global_dim": 10, "vocab_size": 20}, {"embed_size": "8", "word_dim": "6"})
    batch = random_batch(b=6, region_dim=10)
    order = np.array([3, 0, 5, 1, 4, 2])  # captions encoded in this order
    texts = [{k: v[order[a : a + 2]] for k, v in batch.items()} for a in range(0, 6, 2)]
    sims = score_all(head, [batch], texts, torch.device("cpu"), text_order=order)
    with torch.no_grad():
        want = head.score(head.encode_image(batch), head.encode_text(batch)).numpy()
    np.testing.assert_allclose(sims, want, atol=1e-6)
    assert head.training  # evaluation puts the head back in training mode


def test_gpu_blocks_are_sized_from_the_free_memory(monkeypatch):
    from lighthead.pipelines.tasks import scoring

    free = {"bytes": 40 << 30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 << 30))
    assert scoring.default_budget(torch.device("cuda")) == 10 << 30  # a quarter of the free memory
    free["bytes"] = 100 << 20  # nearly full: still blocks of the floor size
    assert scoring.default_budget(torch.device("cuda:1")) == scoring.CUDA_MIN_BUDGET_MB << 20
    assert scoring.default_budget(torch.device("cpu")) == scoring.CPU_BUDGET_MB << 20


@pytest.mark.parametrize("name", ["scan", "casc"])
def test_scoring_asks_the_device_once_per_row_of_blocks(name, monkeypatch):
    """On a GPU every scalar read (`.item()`, `bool(tensor)`) and every `.cpu()` makes the host
    wait for the device. Scoring reads no scalar per block and copies each row of blocks (one
    caption block against every image block) once; the scores equal those of the path that
    asks the masks on the device."""
    from lighthead.pipelines.tasks import scoring
    from tests.dispatch_count import OpCounter

    torch.manual_seed(0)
    info = {"region_dim": 10, "vocab_size": 20, "num_labels": 7}
    over = {"embed_size": "8", "word_dim": "6"} | ({"direction": "both"} if name == "scan" else {})
    head = build_head(name, info, over).eval()
    batch = random_batch(b=16, k=5, max_len=6, seed=2)
    batch["region_mask"][5, 3:] = False  # one padded image: one image block has padded regions
    order = torch.argsort(batch["text_len"], stable=True)  # by length, as evaluation encodes captions
    captions = {k: v[order] for k, v in batch.items()}
    with torch.no_grad():
        img = head.encode_image(batch)
        chunks = [head.encode_text({k: v[s] for k, v in captions.items()}) for s in (slice(0, 8), slice(8, 16))]
    assert "host_mask" in img and all("host_mask" in c for c in chunks)
    monkeypatch.setattr(scoring, "block_sizes", lambda *a: (4, 2))  # 4 x 4 blocks per chunk: 32 blocks, 8 rows

    copies = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        copies.append(self.shape)
        return real_cpu(self, *args, **kwargs)

    def run(img, chunks):
        copies.clear()
        monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
        try:
            with OpCounter() as ops:
                scores = score_blocks(head, img, chunks)
        finally:
            monkeypatch.setattr(torch.Tensor, "cpu", real_cpu)
        return scores, ops.counts["aten._local_scalar_dense.default"], len(copies)

    got, reads, n_copies = run(img, chunks)
    assert reads == 0 and n_copies == 8  # one copy per row of blocks, nothing per block
    drop = lambda enc: {k: v for k, v in enc.items() if k != "host_mask"}  # noqa: E731
    asked, asked_reads, _ = run(drop(img), [drop(c) for c in chunks])
    assert asked_reads >= 32  # without host copies each block asks the device (the earlier path)
    assert torch.equal(got, asked)


def test_block_sizes_respect_the_budget():
    bi, bt = block_sizes(per_pair=1000, n_images=5000, n_texts=256, budget_bytes=1 << 20)
    assert bi * bt * 1000 <= 1 << 20 and (bi, bt) == (16, 64)  # 1,048 pairs: about 4 captions per image
    assert block_sizes(10**9, 10, 10, 1) == (1, 1)
    # every image fits: the rest of the budget goes to the captions
    assert block_sizes(per_pair=10, n_images=8, n_texts=5000, budget_bytes=10 * 4000) == (8, 500)
    # few captions: the images take the rest
    assert block_sizes(per_pair=10, n_images=5000, n_texts=20, budget_bytes=10 * 4000) == (200, 20)


def test_coco_1k_is_the_mean_of_five_folds(store, monkeypatch):
    """A 5,000-image split is scored as five 1,000-image folds (1k) or whole (5k)."""
    from lighthead.heads.build import head_class, make_config
    from lighthead.pipelines.tasks.retrieval import RetrievalTask, SplitData
    from lighthead.store import open_store

    cfg = make_config(head_class("vsepp").config_class, {})
    task = RetrievalTask(open_store(store), cfg, "coco")
    fake = SplitData(image_ids=[f"i{i}" for i in range(5000)], record_ids=[], text_ids=[], texts=[], image_paths=[])
    monkeypatch.setattr(task, "_require", lambda split: fake)
    calls = []

    def scores(head, split, device, start=0, stop=None):
        calls.append((start, stop))
        n = stop - start
        perfect = np.kron(np.eye(n), np.ones((1, 5)))
        return perfect if start == 0 else np.zeros((n, 5 * n))  # fold 0 perfect, others all ties

    monkeypatch.setattr(task, "scores", scores)
    m = task.evaluate(None, "test", torch.device("cpu"), protocol="1k")
    assert calls == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 4000), (4000, 5000)]
    assert m["folds"] == 5 and m["i2t_r1"] == pytest.approx(20.0) and m["rsum"] == pytest.approx(120.0)
    assert m["fold_rsum"] == [600.0, 0.0, 0.0, 0.0, 0.0]
    calls.clear()
    m5 = task.evaluate(None, "test", torch.device("cpu"), protocol="5k")
    assert calls == [(0, 5000)] and m5["folds"] == 1 and m5["protocol"] == "5k"


def test_evaluate_run_writes_json_markdown_and_figure(store, tmp_path, monkeypatch):
    from lighthead.pipelines.training.evaluate import evaluate_run
    from lighthead.pipelines.training.loop import train

    run = tmp_path / "run"
    trained = train("casc", store, run, epochs=1, overrides={**TINY, "label_hidden": "8"}, progress=False)
    m = evaluate_run(run, split="test", protocol="1k", examples=2)
    assert m["rsum"] == pytest.approx(trained["test"]["rsum"])  # same checkpoint, same scores
    assert json.loads((run / "eval-test-1k.json").read_text())["i2t_r1"] == m["i2t_r1"]
    table = (run / "eval-test-1k.md").read_text()
    assert "| i2t R@1 |" in table and f"{m['rsum']:.1f}" in table
    assert (run / "examples-test.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="protocol"):
        evaluate_run(run, protocol="10k")
    assert m["precision"] == "fp32"
    fast = evaluate_run(run, split="test", precision="bf16")
    assert fast["precision"] == "bf16" and abs(fast["rsum"] - m["rsum"]) <= 40  # 5 test images: 20 points a rank
    assert "bf16 scoring" in (run / "eval-test-1k.md").read_text() and "bf16" not in table
    with pytest.raises(ValueError, match="precision"):
        evaluate_run(run, precision="fp16")
    monkeypatch.setattr("lighthead.pipelines.training.evaluate.fast_precision", lambda device: "fp32")
    with pytest.warns(UserWarning, match="no native bfloat16"):
        evaluate_run(run, split="test", precision="bf16")


def test_cli_train_then_evaluate(store, tmp_path):
    from typer.testing import CliRunner

    from lighthead.pipelines.cli import app

    runner = CliRunner()
    run = tmp_path / "cli-run"
    args = ["train", "heads", "vsepp", "--store", str(store), "--out", str(run), "--epochs", "1", "--no-progress"]
    for kv in ("embed_size=8", "word_dim=8", "batch_size=16"):
        args += ["--set", kv]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (run / "metrics.json").is_file() and (run / "config.json").is_file()
    result = runner.invoke(app, ["evaluate", str(run), "--split", "val", "--examples", "1"])
    assert result.exit_code == 0, result.output
    assert "rsum" in result.output and (run / "eval-val-1k.json").is_file() and (run / "examples-val.png").is_file()


@contextlib.contextmanager
def ieee_rnn_context():
    """cuDNN RNNs in IEEE float32, restored after. torch >= 2.9 runs fp32 cuDNN RNNs in TF32 by
    default (`torch.backends.cudnn.rnn.fp32_precision == "tf32"`): SCAN's caption GRU alone then
    moves scores by up to about 2.3e-4, while the comparison below is about the scoring code at
    1e-4. torch < 2.9 has one cuDNN flag for convolutions and RNNs."""
    cudnn = torch.backends.cudnn
    per_op = hasattr(cudnn, "rnn")  # torch >= 2.9: per-op precision flags
    before = cudnn.rnn.fp32_precision if per_op else cudnn.allow_tf32
    if per_op:
        cudnn.rnn.fp32_precision = "ieee"
    else:
        cudnn.allow_tf32 = False
    try:
        yield
    finally:
        if per_op:
            cudnn.rnn.fp32_precision = before
        else:
            cudnn.allow_tf32 = before


@pytest.fixture
def ieee_rnns():
    with ieee_rnn_context():
        yield


def test_ieee_rnn_context_sets_the_flag_and_restores_it():
    rnn = torch.backends.cudnn.rnn
    before = rnn.fp32_precision
    with pytest.raises(RuntimeError, match="inside"):
        with ieee_rnn_context():
            assert rnn.fp32_precision == "ieee"
            raise RuntimeError("inside")
    assert rnn.fp32_precision == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["casc", "scan", "vsepp"])
def test_cuda_scores_match_cpu_in_both_precisions(name, ieee_rnns):
    torch.manual_seed(0)
    info = {"region_dim": 64, "global_dim": 64, "vocab_size": 20, "num_labels": 7}
    head = build_head(name, info, {"embed_size": "64", "word_dim": "16"}).eval()
    batch = random_batch(b=12, k=6, region_dim=64)
    batch["global"] = torch.randn(12, 64)
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        cpu = score_blocks(head, img, [txt])
        head.cuda()
        img = {k: v.cuda() for k, v in head.encode_image({k: v.cuda() for k, v in batch.items()}).items()}
        txt = {k: v.cuda() for k, v in head.encode_text({k: v.cuda() for k, v in batch.items()}).items()}
    for precision, tol in (("fp32", 1e-4), ("bf16", 1e-2)):
        gpu = score_blocks(head, img, [txt], precision=precision)
        assert gpu.device.type == "cpu"
        torch.testing.assert_close(gpu, cpu, atol=tol, rtol=0)
