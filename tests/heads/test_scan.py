"""`scan` (CASC-base): batched scores vs the equations with loops, gradients, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.heads.build import build_head
from lighthead.heads.scan import SCANConfig
from tests.heads import reference as ref
from tests.heads.conftest import TINY, random_batch

INFO = {"region_dim": 10, "vocab_size": 20, "token_dim": 12}


def loop_scores(head, img, txt, clipped=False):
    v, vm = img["regions"].double().numpy(), img["mask"].numpy()
    t, tm = txt["words"].double().numpy(), txt["mask"].numpy()
    out = np.zeros((len(v), len(t)))
    for i in range(len(v)):
        for j in range(len(t)):
            p = ref.pair(v[i][vm[i]], t[j][tm[j]], head.cfg.lambda_i2t, head.cfg.lambda_t2i, clipped)
            out[i, j] = 0.5 * (p["i2t"] + p["t2i"])
    return out


@pytest.mark.parametrize("attn_norm", ["none", "clipped_l2"])
@pytest.mark.parametrize("text", ["words/vocab", "text/all-minilm-l6-v2"])
def test_batched_score_equals_loops(attn_norm, text):
    torch.manual_seed(0)
    head = build_head("scan", INFO, {**TINY, "attn_norm": attn_norm, "text": text}).eval()
    batch = random_batch()
    batch["region_mask"][1, 2:] = False  # an image with fewer regions (variable-K feature sets)
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        got = head.score(img, txt).double().numpy()
    want = loop_scores(head, img, txt, clipped=attn_norm == "clipped_l2")
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_large_lambdas_and_cached_grams_give_the_same_scores():
    # lambdas above 20 take the max-shifted exponentials; cached Gram matrices change nothing
    torch.manual_seed(2)
    head = build_head("scan", INFO, {**TINY, "lambda_i2t": "60", "lambda_t2i": "35"}).eval()
    batch = random_batch(seed=4)
    batch["region_mask"][2, 1:] = False
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        got = head.score(img, txt).double().numpy()
        bare = head.score({k: v for k, v in img.items() if k != "gram"},
                          {k: v for k, v in txt.items() if k != "gram"}).double().numpy()
    np.testing.assert_allclose(got, loop_scores(head, img, txt), atol=1e-5)
    np.testing.assert_allclose(bare, got, atol=1e-6)


def test_score_blocks_are_consistent():
    # scoring a sub-block gives the same numbers as the full matrix (no cross-pair leakage)
    torch.manual_seed(1)
    head = build_head("scan", INFO, TINY).eval()
    batch = random_batch(b=6, seed=3)
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        full = head.score(img, txt)
        part = head.score({k: v[2:5] for k, v in img.items()}, {k: v[1:3] for k, v in txt.items()})
    torch.testing.assert_close(part, full[2:5, 1:3], atol=1e-6, rtol=0)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = build_head("scan", INFO, TINY)
    out = head.loss(random_batch())
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    out["loss"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_loss_is_the_triplet_of_the_scores():
    torch.manual_seed(0)
    head = build_head("scan", INFO, TINY)
    batch = random_batch()
    with torch.no_grad():
        scores = head.score(head.encode_image(batch), head.encode_text(batch))
        loss = head.loss(batch)["loss"]
    b = scores.shape[0]
    want = 0.0
    for i in range(b):
        want += max(max(0.0, 0.2 - scores[i, i].item() + scores[i, j].item()) for j in range(b) if j != i)
        want += max(max(0.0, 0.2 - scores[i, i].item() + scores[j, i].item()) for j in range(b) if j != i)
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_sum_of_negatives_for_the_first_epochs():
    torch.manual_seed(0)
    head = build_head("scan", INFO, {**TINY, "sum_negatives_epochs": "2"})
    batch = random_batch()
    head.start_epoch(0)
    summed = head.loss(batch)["loss"].item()
    head.start_epoch(2)
    hardest = head.loss(batch)["loss"].item()
    assert summed > hardest > 0


def test_loss_goes_down_on_store_batches(retrieval_store):
    from tests.heads.test_casc import steps_on_store

    losses = steps_on_store(retrieval_store, "scan",
                            {"embed_size": "32", "word_dim": "16", "lr": "5e-3", "max_violation": "false"})
    assert losses[-1] < 0.8 * losses[0]


def test_config_validation_and_dataset_defaults():
    with pytest.raises(ValueError, match="attn_norm"):
        SCANConfig(attn_norm="softmax")
    with pytest.raises(ValueError, match="text"):
        SCANConfig(text="global/resnet152")
    coco = build_head("scan", {**INFO, "dataset": "coco"}, TINY)
    f30k = build_head("scan", {**INFO, "dataset": "f30k"}, TINY)
    assert (coco.cfg.lr, f30k.cfg.lr) == (5e-4, 2e-4)
    assert build_head("scan", {**INFO, "dataset": "coco"}, {**TINY, "lr": "1e-3"}).cfg.lr == 1e-3
