"""`vsepp`: scores vs the GRU equations written out per time step, the released contrastive loss
written out, gradients, and the released defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.heads.build import build_head
from tests.heads.conftest import TINY, random_batch, with_repeated_images

INFO = {"region_dim": 10, "global_dim": 10, "vocab_size": 20, "token_dim": 12}


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def gru_last_state(head, ids, length):
    """PyTorch's GRU equations (gates r, z, n) stepped by hand over the real words."""
    gru = head.txt_enc.gru
    w_ih, w_hh = gru.weight_ih_l0.detach().double().numpy(), gru.weight_hh_l0.detach().double().numpy()
    b_ih, b_hh = gru.bias_ih_l0.detach().double().numpy(), gru.bias_hh_l0.detach().double().numpy()
    emb = head.txt_enc.embed.weight.detach().double().numpy()
    h = np.zeros(gru.hidden_size)
    hs = gru.hidden_size
    for step in range(length):
        x = emb[ids[step]]
        gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
        r = _sigmoid(gi[:hs] + gh[:hs])
        z = _sigmoid(gi[hs : 2 * hs] + gh[hs : 2 * hs])
        n = np.tanh(gi[2 * hs :] + r * gh[2 * hs :])
        h = (1 - z) * n + z * h
    return h


@pytest.mark.parametrize("image_norm", [True, False])
@pytest.mark.parametrize("image", ["global/resnet152", "regions/butd-r101-vg-36"])
def test_score_equals_equations(image, image_norm):
    torch.manual_seed(0)
    head = build_head("vsepp", INFO, {**TINY, "image": image, "image_norm": str(image_norm)}).eval()
    batch = random_batch(region_dim=10)
    batch["region_mask"][2, 1:] = False
    with torch.no_grad():
        head.img_fc.bias.uniform_(-1, 1)  # a bias makes the scale of the image vector matter
        got = head.score(head.encode_image(batch), head.encode_text(batch)).double().numpy()
    w, b = head.img_fc.weight.detach().double().numpy(), head.img_fc.bias.detach().double().numpy()
    want = np.zeros_like(got)
    for i in range(len(got)):
        if image.startswith("global/"):
            x = batch["global"][i].double().numpy()
        else:
            real = batch["regions"][i][batch["region_mask"][i]].double().numpy()
            x = real.mean(0)
        if image_norm:  # EncoderImageFull: l2norm(features), then fc
            x = x / np.linalg.norm(x)
        f = w @ x + b
        for j in range(got.shape[1]):
            g = gru_last_state(head, batch["word_ids"][j].numpy(), int(batch["text_len"][j]))
            want[i, j] = f @ g / (np.linalg.norm(f) * np.linalg.norm(g))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_token_features_path():
    torch.manual_seed(0)
    head = build_head("vsepp", INFO, {**TINY, "text": "text/all-minilm-l6-v2"}).eval()
    batch = random_batch()
    with torch.no_grad():
        txt = head.encode_text(batch)["emb"].double().numpy()
    w, b = head.txt_enc.fc.weight.detach().double().numpy(), head.txt_enc.fc.bias.detach().double().numpy()
    for j in range(len(txt)):
        n = int(batch["text_len"][j])
        mean = np.mean([w @ batch["tokens"][j, k].double().numpy() + b for k in range(n)], axis=0)
        np.testing.assert_allclose(txt[j], mean / np.linalg.norm(mean), atol=1e-6)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = build_head("vsepp", INFO, TINY)
    head.loss(random_batch(region_dim=10))["loss"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


REPEATS = [0, 1, 0, 2, 1]  # pairs 0 and 2 share an image, and so do pairs 1 and 4


def released_contrastive_loss(s, max_violation: bool, image_index=None) -> float:
    """fartashf/vsepp model.py ContrastiveLoss written out: for every positive pair i, the hinge
    against each other caption j of the batch (cost_s, row i) and each other image j (cost_im,
    column i), the max over them (max_violation) or their sum, summed over the batch. Only the
    pair itself is masked (`torch.eye`), so another caption of the same image is a negative;
    with `image_index`, pairs of the same image are skipped instead (our switch)."""
    n, total = len(s), 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i and (image_index is None or image_index[j] != image_index[i])]
        cost_s = [max(0.0, 0.2 + s[i, j] - s[i, i]) for j in others]
        cost_im = [max(0.0, 0.2 + s[j, i] - s[i, i]) for j in others]
        total += (max(cost_s) + max(cost_im)) if max_violation else (sum(cost_s) + sum(cost_im))
    return total


@pytest.mark.parametrize("same_image", [False, True])
@pytest.mark.parametrize("max_violation", [True, False])
def test_loss_is_the_released_contrastive_loss(max_violation, same_image):
    """A batch sampled over captions repeats images: the released loss counts the other caption
    of a repeated image as a negative (the default); `same_image_positive=true` does not."""
    torch.manual_seed(0)
    head = build_head(
        "vsepp", INFO, {**TINY, "max_violation": str(max_violation), "same_image_positive": str(same_image)}
    )
    batch = with_repeated_images(random_batch(region_dim=10), REPEATS)
    got = float(head.loss(batch)["loss"].detach())
    with torch.no_grad():
        s = head.score(head.encode_image(batch), head.encode_text(batch)).double().numpy()
    released = released_contrastive_loss(s, max_violation)
    skipping = released_contrastive_loss(s, max_violation, REPEATS)
    assert released != pytest.approx(skipping, rel=1e-3)  # the batch tells the two rules apart
    assert got == pytest.approx(skipping if same_image else released, rel=1e-5) and released > 0


def test_defaults_are_the_released_values():
    from lighthead.heads.vsepp import VSEPPConfig

    cfg = VSEPPConfig()  # fartashf/vsepp train.py defaults, with the README's --max_violation for VSE++
    got = (
        cfg.margin,
        cfg.epochs,
        cfg.batch_size,
        cfg.word_dim,
        cfg.embed_size,
        cfg.grad_clip,
        cfg.gru_layers,
        cfg.lr,
        cfg.lr_decay_epochs,
        cfg.max_violation,
        cfg.image_norm,
        cfg.sum_negatives_epochs,
        cfg.same_image_positive,
    )
    assert got == (0.2, 30, 128, 300, 1024, 2.0, 1, 2e-4, 15, True, True, 0, False)
    head = build_head("vsepp", INFO, {})
    ((opt, sched),) = head.optimizers()
    assert isinstance(opt, torch.optim.Adam) and sched.step_size == 15 and sched.gamma == 0.1
    w = head.img_fc.weight.detach()
    bound = float(np.sqrt(6.0 / (w.shape[0] + w.shape[1])))  # Xavier uniform, zero bias
    assert float(w.abs().max()) <= bound and float(head.img_fc.bias.detach().abs().max()) == 0.0
    emb = head.txt_enc.embed.weight.detach()[1:]
    assert float(emb.abs().max()) <= 0.1  # uniform [-0.1, 0.1]


def test_config_validation():
    with pytest.raises(ValueError, match="image"):
        build_head("vsepp", INFO, {"image": "words/vocab"})
