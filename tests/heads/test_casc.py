"""`casc`: test scores (released evaluation; Eq. 13) and training loss (Eq. 8-12) vs loops,
the released defaults, optimisers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.heads.attention import NORMS
from lighthead.heads.build import build_head
from lighthead.heads.casc import CASCConfig
from tests.heads import reference as ref
from tests.heads.conftest import TINY, random_batch, with_repeated_images

INFO = {"region_dim": 10, "vocab_size": 20, "num_labels": 7, "label_pos_weight": [1.0, 2.0, 0.5, 3.0, 1.0, 4.0, 1.5]}
CFG = {**TINY, "label_hidden": "5"}


def _np(x):
    return x.detach().double().numpy()


def scored(head, seed: int = 0):
    """(head scores, encoded image side, text side, batch) of a random batch."""
    batch = random_batch(seed=seed)
    batch["labels"][2] = 0  # a caption without any label word
    batch["region_mask"][3, 1:] = False
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        return _np(head.score(img, txt)), img, txt, batch


def ref_casc(head, img, txt, batch, pair_options: dict, form: str, beta: float) -> np.ndarray:
    v, vm, t, tm = _np(img["regions"]), img["mask"].numpy(), _np(txt["words"]), txt["mask"].numpy()
    fc = tuple(_np(p) for p in (head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias))
    want = np.zeros((len(v), len(t)))
    for i in range(len(v)):
        for j in range(len(t)):
            p = ref.pair(v[i][vm[i]], t[j][tm[j]], **pair_options)
            want[i, j] = ref.casc_score(p, fc, beta, form, batch["labels"][j].numpy())
    return want


@pytest.mark.parametrize("form", ["code", "paper"])
@pytest.mark.parametrize("norm", NORMS)
def test_test_score_equals_the_loops(norm, form):
    torch.manual_seed(0)
    head = build_head("casc", INFO, {**CFG, "attn_norm": norm, "test_score": form}).eval()
    got, img, txt, batch = scored(head)
    np.testing.assert_allclose(got, ref_casc(head, img, txt, batch, ref.options(head.cfg), form, 0.8), atol=2e-5)


@pytest.mark.parametrize("recipe", ["code", "paper"])
def test_default_test_score_is_the_released_evaluation(recipe):
    # The values spelled out, not read from the config: code = shard_xattn_all with T2I mean
    # (temperature 9), I2T LogSumExp 5 (temperature 4), clipped_l2norm, beta 0.8, labels predicted
    # from both sides; paper = Eq. 13 with lambda1 = 9 (I2T), lambda2 = 4, plain cosines, mean.
    torch.manual_seed(0)
    head = build_head("casc", INFO, {**CFG, "recipe": recipe}).eval()
    got, img, txt, batch = scored(head, seed=1)
    if recipe == "code":
        pair_options = {
            "lambda_t2i": 9.0,
            "lambda_i2t": 4.0,
            "norm": "clipped_l2norm",
            "agg_t2i": "mean",
            "agg_i2t": "lse",
            "lse_i2t": 5.0,
        }
    else:
        pair_options = {"lambda_t2i": 4.0, "lambda_i2t": 9.0, "norm": "no_norm", "agg_t2i": "mean", "agg_i2t": "mean"}
    np.testing.assert_allclose(got, ref_casc(head, img, txt, batch, pair_options, recipe, 0.8), atol=2e-5)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_beta_one_is_the_local_score(form):
    torch.manual_seed(0)
    head = build_head("casc", INFO, {**CFG, "beta": "1", "test_score": form}).eval()
    scan_like = build_head("scan", INFO, {**TINY, "direction": "both"}).eval()
    scan_like.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith(("fc", "pos"))})
    batch = random_batch()
    with torch.no_grad():
        a = head.score(head.encode_image(batch), head.encode_text(batch))
        b = scan_like.score(scan_like.encode_image(batch), scan_like.encode_text(batch))
    # code: 0.5 (t2i + i2t), as training ranks; paper: Eq. 13's t2i + i2t
    torch.testing.assert_close(a, b if form == "code" else 2 * b)


def test_label_probs_from_projections_equal_the_classifier():
    # Scoring projects regions / words through fc1's weight once per item and folds tanh's
    # affine part into fc2; on (2, I, T, h) stacked vectors it must equal sigmoid(FC1(A)).
    torch.manual_seed(0)
    head = build_head("casc", INFO, CFG).eval()
    a = torch.randn(2, 3, 4, head.fc1.in_features)  # (2, I, T, h): A^I and A^T of every pair
    with torch.no_grad():
        want = torch.sigmoid(head.classify(a))
        got = head._label_probs(a @ head.fc1.weight.T)  # (2, I, T, C)
        assert got.dtype == torch.float32 and got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 scoring: probabilities still float32
            fast = head._label_probs((a @ head.fc1.weight.T).bfloat16())
        assert fast.dtype == torch.float32
        torch.testing.assert_close(fast, want, atol=2e-2, rtol=0)


def test_the_paper_score_needs_caption_labels():
    head = build_head("casc", INFO, {**CFG, "test_score": "paper"}).eval()
    batch = random_batch()
    del batch["labels"]
    with torch.no_grad(), pytest.raises(ValueError, match="labels"):
        head.score(head.encode_image(batch), head.encode_text(batch))


@pytest.mark.parametrize("recipe", ["code", "paper"])
def test_training_loss_equals_eq8_to_12_with_loops(recipe):
    """Pairs 0 and 3 share an image: Code_CASC model.py ContrastiveLoss masks the diagonal only,
    so each is the other's negative (Eq. 8's M != I, N != T over the minibatch's items)."""
    torch.manual_seed(0)
    head = build_head("casc", INFO, {**CFG, "recipe": recipe})
    batch = with_repeated_images(random_batch(), [0, 1, 2, 0, 3])
    with torch.no_grad():
        out = head.loss(batch)
        img, txt = head.encode_image(batch), head.encode_text(batch)
    v, vm, t, tm = _np(img["regions"]), img["mask"].numpy(), _np(txt["words"]), txt["mask"].numpy()
    b = len(v)
    s = np.zeros((b, b))
    pairs = {}
    for i in range(b):
        for j in range(b):
            pairs[i, j] = ref.pair(v[i][vm[i]], t[j][tm[j]], **ref.options(head.cfg))
            s[i, j] = 0.5 * (pairs[i, j]["i2t"] + pairs[i, j]["t2i"])  # both recipes train on the mean
    triplet = sum(max(max(0.0, 0.2 - s[i, i] + s[i, j]) for j in range(b) if j != i) for i in range(b))
    triplet += sum(max(max(0.0, 0.2 - s[j, j] + s[i, j]) for i in range(b) if i != j) for j in range(b))
    image = batch["image_index"].tolist()  # the rule that skips captions of the same image instead
    other_rule = sum(max(max(0.0, 0.2 - s[i, i] + s[i, j]) for j in range(b) if image[j] != image[i]) for i in range(b))
    other_rule += sum(
        max(max(0.0, 0.2 - s[j, j] + s[i, j]) for i in range(b) if image[i] != image[j]) for j in range(b)
    )
    assert other_rule != pytest.approx(triplet, rel=1e-3)  # the shared image changes the loss
    w1, b1, w2, b2 = (_np(p) for p in (head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias))
    pw, y = np.array(INFO["label_pos_weight"]), batch["labels"].double().numpy()

    def bce(a, y_i):
        logits = w2 @ np.tanh(w1 @ a + b1) + b2
        p = 1 / (1 + np.exp(-logits))
        return -np.mean(pw * y_i * np.log(p) + (1 - y_i) * np.log(1 - p))

    # image and text global vectors of the positive pairs, mean over samples and labels
    total_bce = sum(bce(pairs[i, i]["a_img"], y[i]) + bce(pairs[i, i]["a_txt"], y[i]) for i in range(b)) / b
    assert out["triplet"].item() == pytest.approx(triplet, rel=1e-5)
    assert out["bce"].item() == pytest.approx(total_bce, rel=1e-5)
    assert out["loss"].item() == pytest.approx(triplet + 10.0 * total_bce, rel=1e-5)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = build_head("casc", INFO, CFG)
    head.loss(random_batch())["loss"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def lr_per_epoch(opt, sched, epochs: int) -> list[float]:
    """The rate each epoch trains with, the scheduler stepped once per epoch as the loop does."""
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize("recipe", ["code", "paper"])
def test_two_optimisers_and_their_schedules(recipe):
    head = build_head("casc", INFO, {**CFG, "recipe": recipe})
    (local, s1), (glob, s2) = head.optimizers()
    ids_local = {id(p) for g in local.param_groups for p in g["params"]}
    ids_glob = {id(p) for g in glob.param_groups for p in g["params"]}
    assert ids_glob == {id(p) for p in (head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias)}
    assert not ids_local & ids_glob and len(ids_local | ids_glob) == len(list(head.parameters()))
    # local: SCAN's adjust_learning_rate, 2e-4 * 0.1 ** (epoch // 15)
    assert lr_per_epoch(local, s1, 31) == pytest.approx([2e-4 * 0.1 ** (e // 15) for e in range(31)])
    # global: the released adjust_learning_rate1, 0.01 * 0.8 ** (epoch // 3); the paper: x0.1 every 10
    want = [0.01 * 0.8 ** (e // 3) if recipe == "code" else 0.01 * 0.1 ** (e // 10) for e in range(30)]
    assert lr_per_epoch(glob, s2, 30) == pytest.approx(want)


def test_defaults_are_the_released_codes():
    code = CASCConfig()
    assert (code.recipe, code.direction, code.lambda_t2i, code.lambda_i2t, code.attn_norm) == (
        "code",
        "both",
        9.0,
        4.0,
        "clipped_l2norm",
    )
    assert (code.agg_t2i, code.agg_i2t, code.lambda_lse_i2t) == ("mean", "lse", 5.0)
    assert (code.test_score, code.beta, code.alpha) == ("code", 0.8, 10.0)
    assert (code.label_hidden, code.num_labels, code.label_type) == (512, 500, "nouns")
    assert (code.lr_global, code.global_decay_epochs, code.global_decay_gamma) == (1e-2, 3, 0.8)
    assert (code.lr, code.lr_decay_epochs, code.margin, code.max_violation, code.same_image_positive) == (
        2e-4,
        15,
        0.2,
        True,
        False,
    )
    head = build_head("casc", {**INFO, "region_dim": 2048}, {})
    assert (head.fc1.in_features, head.fc1.out_features, head.fc2.out_features) == (1024, 512, 7)
    # CASC's code has no COCO temperature of its own: I2T LogSumExp stays 5 (SCAN's 20 is for scan)
    coco = build_head("casc", {**INFO, "dataset": "coco"}, CFG).cfg
    assert (coco.lr, coco.epochs, coco.lambda_lse_i2t) == (5e-4, 20, 5.0)
    paper = CASCConfig(recipe="paper")
    assert (paper.lambda_t2i, paper.lambda_i2t, paper.attn_norm, paper.agg_t2i, paper.agg_i2t) == (
        4.0,
        9.0,
        "no_norm",
        "mean",
        "mean",
    )
    assert (paper.test_score, paper.global_decay_epochs, paper.global_decay_gamma) == ("paper", 10, 0.1)
    assert CASCConfig(recipe="paper", test_score="code").test_score == "code"


def test_config_validation():
    with pytest.raises(ValueError, match="label_type"):
        CASCConfig(label_type="pronouns")
    with pytest.raises(ValueError, match="beta"):
        CASCConfig(beta=1.5)
    with pytest.raises(ValueError, match="test_score"):
        CASCConfig(test_score="eq13")
    with pytest.raises(ValueError, match="direction"):
        CASCConfig(direction="t2i")
    with pytest.raises(ValueError, match="global_decay_gamma"):
        CASCConfig(global_decay_gamma=0.0)
