"""`scan`: batched scores vs the released code's formulas with loops, defaults, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.heads.attention import NORMS, XAttn, xattn_all_pairs, xattn_paired
from lighthead.heads.build import build_head
from lighthead.heads.losses import triplet_loss
from lighthead.heads.scan import SCANConfig
from tests.heads import reference as ref
from tests.heads.conftest import TINY, random_batch, with_repeated_images

INFO = {"region_dim": 10, "vocab_size": 20, "token_dim": 12}


def _np(x):
    return x.detach().double().numpy()


def ref_pairs(img, txt, **options) -> dict:
    """(I, T) reference pair results of encoded blocks, real regions and words only."""
    v, vm, t, tm = _np(img["regions"]), img["mask"].numpy(), _np(txt["words"]), txt["mask"].numpy()
    return {(i, j): ref.pair(v[i][vm[i]], t[j][tm[j]], **options) for i in range(len(v)) for j in range(len(t))}


def ref_scores(img, txt, direction: str, **options) -> np.ndarray:
    pairs = ref_pairs(img, txt, **options)
    out = np.zeros((len(img["regions"]), len(txt["words"])))
    for (i, j), p in pairs.items():
        out[i, j] = 0.5 * (p["t2i"] + p["i2t"]) if direction == "both" else p[direction]
    return out


def encoded(head, seed: int = 0):
    batch = random_batch(seed=seed)
    batch["region_mask"][1, 2:] = False  # an image with fewer regions (variable-K feature sets)
    with torch.no_grad():
        return batch, head.encode_image(batch), head.encode_text(batch)


@pytest.mark.parametrize("direction", ["t2i", "i2t", "both"])
@pytest.mark.parametrize("agg", ["lse", "mean"])
@pytest.mark.parametrize("norm", NORMS)
def test_batched_score_equals_released_loops(norm, agg, direction):
    torch.manual_seed(0)
    head = build_head(
        "scan", INFO, {**TINY, "attn_norm": norm, "agg_t2i": agg, "agg_i2t": agg, "direction": direction}
    ).eval()
    _, img, txt = encoded(head)
    with torch.no_grad():
        got = _np(head.score(img, txt))
    want = ref_scores(img, txt, direction, **ref.options(head.cfg))
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_token_text_and_mixed_aggregations_equal_the_loops():
    # cached token features instead of the GRU; T2I mean + I2T LSE 20 (CASC's mix, COCO's temperature)
    torch.manual_seed(1)
    head = build_head(
        "scan",
        INFO,
        {
            **TINY,
            "text": "text/all-minilm-l6-v2",
            "direction": "both",
            "agg_t2i": "mean",
            "agg_i2t": "lse",
            "lambda_lse_i2t": "20",
        },
    ).eval()
    _, img, txt = encoded(head, seed=2)
    with torch.no_grad():
        got = _np(head.score(img, txt))
    np.testing.assert_allclose(got, ref_scores(img, txt, "both", **ref.options(head.cfg)), atol=2e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_paired_scores_and_attention_weights_equal_the_loops(norm):
    # xattn_paired (CASC's global vectors) and the all-pairs weights against the attended vectors
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    v = torch.nn.functional.normalize(torch.randn(3, 4, 6, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(3, 5, 6, generator=g), dim=-1)
    v_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    t_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    v, t = v * v_mask[..., None], t * t_mask[..., None]
    opts = XAttn(lambda_t2i=7.0, lambda_i2t=3.0, norm=norm, agg_t2i="lse", agg_i2t="mean", lse_t2i=4.0)
    paired = xattn_paired(v, v_mask, t, t_mask, opts, weights=("region", "word"))
    every = xattn_all_pairs(v, v_mask, t, t_mask, opts, weights=("region", "word"))
    for b in range(3):
        p = ref.pair(v[b][v_mask[b]].numpy(), t[b][t_mask[b]].numpy(), 7.0, 3.0, norm, "lse", "mean", 4.0, 5.0)
        for out in (paired, {k: x[:, b] for k, x in every.items()}):
            assert out["t2i"][b].item() == pytest.approx(p["t2i"], abs=2e-5)
            assert out["i2t"][b].item() == pytest.approx(p["i2t"], abs=2e-5)
            a_img = (out["region_weights"][b][:, None] * v[b]).sum(0).double().numpy()  # A^I
            a_txt = (out["word_weights"][b][:, None] * t[b]).sum(0).double().numpy()  # A^T
            np.testing.assert_allclose(a_img, p["a_img"], atol=2e-6)
            np.testing.assert_allclose(a_txt, p["a_txt"], atol=2e-6)


def test_one_direction_computes_only_that_direction():
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(2, 3, 4, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(2, 5, 4, generator=g), dim=-1)
    ones_v, ones_t = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    assert set(xattn_all_pairs(v, ones_v, t, ones_t, XAttn(directions=("t2i",)))) == {"t2i"}
    assert set(xattn_all_pairs(v, ones_v, t, ones_t, XAttn(directions=("i2t",)))) == {"i2t"}


def test_default_head_scores_as_scans_released_default():
    # no overrides: t2i only, temperature 9, clipped_l2norm, LogSumExp 6 (SCAN's train.py defaults,
    # the README's "t-i LSE" row) - the options spelled out here, not read from the config
    torch.manual_seed(0)
    head = build_head("scan", INFO, TINY).eval()
    _, img, txt = encoded(head)
    with torch.no_grad():
        got = _np(head.score(img, txt))
    want = ref_scores(img, txt, "t2i", lambda_t2i=9.0, norm="clipped_l2norm", agg_t2i="lse", lse_t2i=6.0)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # i2t alone: temperature 4, LogSumExp 5 (the README's "i-t LSE" row on Flickr30K)
    head = build_head("scan", INFO, {**TINY, "direction": "i2t"}).eval()
    _, img, txt = encoded(head)
    with torch.no_grad():
        got = _np(head.score(img, txt))
    want = ref_scores(img, txt, "i2t", lambda_i2t=4.0, norm="clipped_l2norm", agg_i2t="lse", lse_i2t=5.0)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_defaults_are_the_released_codes():
    code = SCANConfig()
    assert (code.recipe, code.direction, code.lambda_t2i, code.lambda_i2t, code.attn_norm) == (
        "code",
        "t2i",
        9.0,
        4.0,
        "clipped_l2norm",
    )
    assert (code.agg_t2i, code.agg_i2t, code.lambda_lse_t2i, code.lambda_lse_i2t) == ("lse", "lse", 6.0, 5.0)
    assert (code.margin, code.max_violation, code.same_image_positive) == (0.2, True, False)
    assert (code.lr, code.lr_decay_epochs, code.epochs, code.batch_size, code.grad_clip) == (2e-4, 15, 30, 128, 2.0)
    # both directions under the code recipe = CASC's released cross_attn=all: T2I mean, I2T LSE
    both = SCANConfig(direction="both")
    assert (both.agg_t2i, both.agg_i2t) == ("mean", "lse")
    # SCAN's README, COCO rows
    coco = build_head("scan", {**INFO, "dataset": "coco"}, TINY).cfg
    assert (coco.lr, coco.epochs, coco.lr_decay_epochs, coco.lambda_lse_i2t) == (5e-4, 20, 10, 20.0)
    # the paper's text (CASC-base): both directions averaged, lambda1 = 9 (I2T), lambda2 = 4, plain cosines
    paper = SCANConfig(recipe="paper")
    assert (paper.direction, paper.lambda_t2i, paper.lambda_i2t, paper.attn_norm, paper.agg_t2i, paper.agg_i2t) == (
        "both",
        4.0,
        9.0,
        "no_norm",
        "mean",
        "mean",
    )
    # a field set explicitly wins over the recipe
    assert SCANConfig(recipe="paper", lambda_t2i=9.0, agg_i2t="lse").lambda_t2i == 9.0
    assert SCANConfig(recipe="paper", agg_i2t="lse").agg_i2t == "lse"


def test_old_norm_names_are_read():
    # configs of earlier runs wrote "none" / "clipped_l2"
    assert SCANConfig(attn_norm="none").attn_norm == "no_norm"
    assert SCANConfig(attn_norm="clipped_l2").attn_norm == "clipped_l2norm"


def test_large_lambdas_and_cached_grams_give_the_same_scores():
    # lambdas above 20 take the max-shifted exponentials; cached Gram matrices change nothing
    torch.manual_seed(2)
    head = build_head("scan", INFO, {**TINY, "lambda_i2t": "60", "lambda_t2i": "35", "direction": "both"}).eval()
    batch = random_batch(seed=4)
    batch["region_mask"][2, 1:] = False
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        got = _np(head.score(img, txt))
        bare = _np(
            head.score({k: v for k, v in img.items() if k != "gram"}, {k: v for k, v in txt.items() if k != "gram"})
        )
    np.testing.assert_allclose(got, ref_scores(img, txt, "both", **ref.options(head.cfg)), atol=2e-5)
    np.testing.assert_allclose(bare, got, atol=1e-6)


def test_score_blocks_are_consistent():
    # scoring a sub-block gives the same numbers as the full matrix (no cross-pair leakage)
    torch.manual_seed(1)
    head = build_head("scan", INFO, {**TINY, "direction": "both"}).eval()
    batch = random_batch(b=6, seed=3)
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        full = head.score(img, txt)
        part = head.score({k: v[2:5] for k, v in img.items()}, {k: v[1:3] for k, v in txt.items()})
    torch.testing.assert_close(part, full[2:5, 1:3], atol=1e-6, rtol=0)


@pytest.mark.parametrize("direction", ["t2i", "i2t", "both"])
def test_every_parameter_gets_a_gradient(direction):
    torch.manual_seed(0)
    head = build_head("scan", INFO, {**TINY, "direction": direction})
    out = head.loss(random_batch())
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    out["loss"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def hinge(scores: np.ndarray, positives: np.ndarray, hardest: bool) -> float:
    """Eq. 8-9 with loops: caption negatives per image (rows), image negatives per caption (columns).
    kuanghuei/SCAN model.py ContrastiveLoss masks the diagonal only: `positives` = the identity."""
    b, total = len(scores), 0.0
    for i in range(b):
        row = [max(0.0, 0.2 - scores[i, i] + scores[i, j]) for j in range(b) if not positives[i, j]]
        col = [max(0.0, 0.2 - scores[i, i] + scores[j, i]) for j in range(b) if not positives[j, i]]
        total += (max(row, default=0.0) + max(col, default=0.0)) if hardest else (sum(row) + sum(col))
    return total


@pytest.mark.parametrize("same_image", [False, True])
def test_loss_is_the_triplet_of_the_scores(same_image):
    torch.manual_seed(0)
    head = build_head("scan", INFO, {**TINY, "same_image_positive": str(same_image)})
    batch = with_repeated_images(random_batch(), [0, 1, 0, 2, 3])  # pairs 0 and 2 share their image
    with torch.no_grad():
        scores = _np(head.score(head.encode_image(batch), head.encode_text(batch)))
        loss = head.loss(batch)["loss"].item()
    diagonal = np.eye(5, dtype=bool)  # the released code: only the pair itself is positive
    shared = diagonal.copy()
    shared[0, 2] = shared[2, 0] = True
    want, other = hinge(scores, shared, True), hinge(scores, diagonal, True)
    if not same_image:
        want, other = other, want
    assert want != pytest.approx(other, rel=1e-3)  # the batch tells the two apart
    assert loss == pytest.approx(want, rel=1e-5)


def test_sum_of_negatives_for_the_first_epochs():
    torch.manual_seed(0)
    head = build_head("scan", INFO, {**TINY, "sum_negatives_epochs": "2"})
    batch = random_batch()
    with torch.no_grad():
        scores = head.score(head.encode_image(batch), head.encode_text(batch))
        head.start_epoch(1)
        summed = head.loss(batch)["loss"].item()
        head.start_epoch(2)
        hardest = head.loss(batch)["loss"].item()
    assert summed == pytest.approx(triplet_loss(scores, hardest=False).item(), rel=1e-6)
    assert hardest == pytest.approx(triplet_loss(scores, hardest=True).item(), rel=1e-6)
    assert summed > hardest


def test_config_validation_and_dataset_defaults():
    for bad in (
        {"attn_norm": "l1norm"},
        {"agg_t2i": "max"},
        {"direction": "all"},
        {"recipe": "mine"},
        {"lambda_lse_t2i": 0.0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
            SCANConfig(**bad)
    with pytest.raises(ValueError, match="text"):
        SCANConfig(text="global/resnet152")
    assert build_head("scan", {**INFO, "dataset": "coco"}, {**TINY, "lr": "1e-3"}).cfg.lr == 1e-3
    assert build_head("scan", {**INFO, "dataset": "f30k"}, TINY).cfg.lr == 2e-4
