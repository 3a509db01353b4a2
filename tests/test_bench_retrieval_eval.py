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


OVERRIDES = {"casc": {"text": "text/x", "embed_size": "24", "label_hidden": "12"},
             "scan": {"text": "text/x", "embed_size": "24"},
             "mmca": {"embed_dim": "32", "heads": "4", "filters": "16"}}


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
