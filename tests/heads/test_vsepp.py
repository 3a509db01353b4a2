"""`vsepp`: scores vs the GRU equations written out per time step, gradients, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.heads.build import build_head
from tests.heads.conftest import TINY, random_batch

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
        z = _sigmoid(gi[hs:2 * hs] + gh[hs:2 * hs])
        n = np.tanh(gi[2 * hs:] + r * gh[2 * hs:])
        h = (1 - z) * n + z * h
    return h


@pytest.mark.parametrize("image", ["global/resnet152", "regions/butd-r101-vg-36"])
def test_score_equals_equations(image):
    torch.manual_seed(0)
    head = build_head("vsepp", INFO, {**TINY, "image": image}).eval()
    batch = random_batch(region_dim=10)
    batch["region_mask"][2, 1:] = False
    with torch.no_grad():
        got = head.score(head.encode_image(batch), head.encode_text(batch)).double().numpy()
    w, b = head.img_fc.weight.detach().double().numpy(), head.img_fc.bias.detach().double().numpy()
    want = np.zeros_like(got)
    for i in range(len(got)):
        if image.startswith("global/"):
            x = batch["global"][i].double().numpy()
        else:
            real = batch["regions"][i][batch["region_mask"][i]].double().numpy()
            x = real.mean(0)
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


def test_loss_goes_down_on_store_batches(retrieval_store):
    from tests.heads.test_casc import steps_on_store

    losses = steps_on_store(retrieval_store, "vsepp",
                            {"embed_size": "32", "word_dim": "16", "lr": "5e-3", "max_violation": "false"})
    assert losses[-1] < 0.8 * losses[0]


def test_config_validation():
    with pytest.raises(ValueError, match="image"):
        build_head("vsepp", INFO, {"image": "words/vocab"})
