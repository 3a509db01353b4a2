"""The shard-loop baseline of bench/retrieval_eval.py scores what the batched scorer scores."""

from __future__ import annotations

import pytest
import torch

from lighthead.heads.build import build_head
from lighthead.pipelines.tasks.scoring import cat_padded, encode, score_blocks
from tests.bench_helpers import load_bench_script


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("retrieval_eval")


OVERRIDES = {
    "casc": {"text": "text/x", "embed_size": "24", "label_hidden": "12"},
    "scan": {"text": "text/x", "embed_size": "24"},
    "mmca": {"embed_dim": "32", "heads": "4", "filters": "16"},
}


@pytest.mark.parametrize("name", ["casc", "scan", "mmca"])
def test_shard_loop_equals_batched_scores(bench, name):
    torch.manual_seed(0)
    info = {"region_dim": 32, "vocab_size": 50, "token_dim": 16, "num_labels": 20}
    head = build_head(name, info, OVERRIDES[name]).eval()
    images, texts = bench.random_data(6, 140, 20, 16)  # 140 captions: two shards of the loop
    images["regions"] = images["regions"][..., :32].contiguous()
    cpu = torch.device("cpu")
    img = cat_padded(encode(head.encode_image, bench.batches(images, 4), cpu))
    chunks = encode(head.encode_text, bench.batches(texts, 64), cpu)
    want = score_blocks(head, img, chunks)
    got = (bench.scan_loop if name in ("scan", "casc") else bench.caption_loop)(head, img, cat_padded(chunks), 6, 140)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    fast = score_blocks(head, img, chunks, precision="bf16")
    assert (fast - want).abs().max() < bench.TOLERANCE["bf16"]


@pytest.mark.parametrize(
    "name,overrides", [("scan", {}), ("scan", {"direction": "both"}), ("casc", {}), ("casc", {"test_score": "paper"})]
)
def test_flop_count_matches_the_products_the_scorer_runs(bench, name, overrides):
    """score_flops = the matrix products torch counts while scoring (FlopCounterMode) plus the
    sums of products done elementwise, which it does not count (no padding here)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    info = {"region_dim": 32, "vocab_size": 50, "token_dim": 16, "num_labels": 20}
    head = build_head(name, info, {**OVERRIDES[name], **overrides}).eval()
    images, texts = bench.random_data(3, 5, 20, 16)
    images["regions"] = images["regions"][..., :32].contiguous()
    k, length = 36, texts["text_mask"].shape[1]
    texts["text_mask"][:] = True  # every caption as long as the longest: no padding
    texts["text_len"][:] = length
    cpu = torch.device("cpu")
    img = cat_padded(encode(head.encode_image, bench.batches(images, 4), cpu))
    txt = cat_padded(encode(head.encode_text, bench.batches(texts, 8), cpu))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        head.score(img, txt)
    cfg, pairs, kl = head.cfg, 3 * 5, k * length
    elementwise = {"t2i": 2 * kl, "i2t": 2 * kl, "both": 4 * kl}[cfg.direction]  # sum e s, sum (G e) e
    if name == "casc":  # the weights of A^I (and A^T), and the cosine of the label vectors
        c = head.fc2.out_features
        # code: (p * q).sum and two norms; paper: the dot with the caption's labels is an einsum
        # (counted by torch), the two norms are not
        elementwise += 2 * kl + 3 * c if cfg.test_score == "code" else kl + 2 * c
    assert bench.score_flops(head, img, txt) == counter.get_total_flops() + 2 * elementwise * pairs
