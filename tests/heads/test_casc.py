"""`casc`: test score (Eq. 13) and training loss (Eq. 8-12) vs loops, gradients, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.heads.build import build_head
from lighthead.heads.casc import CASCConfig
from tests.heads import reference as ref
from tests.heads.conftest import TINY, random_batch

INFO = {"region_dim": 10, "vocab_size": 20, "num_labels": 7, "label_pos_weight": [1.0, 2.0, 0.5, 3.0, 1.0, 4.0, 1.5]}
CFG = {**TINY, "label_hidden": "5"}


def _np(x):
    return x.detach().double().numpy()


def test_test_score_equals_eq13_with_loops():
    torch.manual_seed(0)
    head = build_head("casc", INFO, CFG).eval()
    batch = random_batch()
    batch["labels"][2] = 0  # a caption without any label word: S_G = 0
    batch["region_mask"][3, 1:] = False
    with torch.no_grad():
        img, txt = head.encode_image(batch), head.encode_text(batch)
        got = _np(head.score(img, txt))
    v, vm, t, tm = _np(img["regions"]), img["mask"].numpy(), _np(txt["words"]), txt["mask"].numpy()
    w1, b1, w2, b2 = (_np(p) for p in (head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias))
    beta = head.cfg.beta
    want = np.zeros_like(got)
    for i in range(len(v)):
        for j in range(len(t)):
            p = ref.pair(v[i][vm[i]], t[j][tm[j]], head.cfg.lambda_i2t, head.cfg.lambda_t2i)
            s_g = ref.label_score(p["a_img"], w1, b1, w2, b2, batch["labels"][j].numpy())
            want[i, j] = beta * (p["i2t"] + p["t2i"]) + (1 - beta) * s_g
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_beta_one_is_the_local_score():
    torch.manual_seed(0)
    head = build_head("casc", INFO, {**CFG, "beta": "1"}).eval()
    scan_like = build_head("scan", INFO, TINY).eval()
    scan_like.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith(("fc", "pos"))})
    batch = random_batch()
    with torch.no_grad():
        a = head.score(head.encode_image(batch), head.encode_text(batch))
        b = scan_like.score(scan_like.encode_image(batch), scan_like.encode_text(batch))
    torch.testing.assert_close(a, b)


def test_training_loss_equals_eq8_to_12_with_loops():
    torch.manual_seed(0)
    head = build_head("casc", INFO, CFG)
    batch = random_batch()
    with torch.no_grad():
        out = head.loss(batch)
        img, txt = head.encode_image(batch), head.encode_text(batch)
    v, vm, t, tm = _np(img["regions"]), img["mask"].numpy(), _np(txt["words"]), txt["mask"].numpy()
    b = len(v)
    s = np.zeros((b, b))
    pairs = {}
    for i in range(b):
        for j in range(b):
            pairs[i, j] = ref.pair(v[i][vm[i]], t[j][tm[j]], head.cfg.lambda_i2t, head.cfg.lambda_t2i)
            s[i, j] = 0.5 * (pairs[i, j]["i2t"] + pairs[i, j]["t2i"])
    triplet = sum(max(max(0.0, 0.2 - s[i, i] + s[i, j]) for j in range(b) if j != i) for i in range(b))
    triplet += sum(max(max(0.0, 0.2 - s[j, j] + s[i, j]) for i in range(b) if i != j) for j in range(b))
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


def test_two_optimisers_split_the_parameters():
    head = build_head("casc", INFO, CFG)
    (local, s1), (glob, s2) = head.optimizers()
    ids_local = {id(p) for g in local.param_groups for p in g["params"]}
    ids_glob = {id(p) for g in glob.param_groups for p in g["params"]}
    assert ids_glob == {id(p) for p in (head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias)}
    assert not ids_local & ids_glob and len(ids_local | ids_glob) == len(list(head.parameters()))
    assert glob.param_groups[0]["lr"] == 1e-2 and s2.step_size == 10 and local.param_groups[0]["lr"] == 2e-4


def test_config_validation():
    with pytest.raises(ValueError, match="label_type"):
        CASCConfig(label_type="pronouns")
    with pytest.raises(ValueError, match="beta"):
        CASCConfig(beta=1.5)


def steps_on_store(store_path, head_name: str, overrides: dict, steps: int = 12) -> list[float]:
    """Loss over a few Adam steps on one fixed batch of a store (the data path included)."""
    from lighthead.heads.build import head_class, make_config
    from lighthead.pipelines.tasks import TASKS
    from lighthead.store import open_store

    torch.manual_seed(0)
    store = open_store(store_path)
    cfg = make_config(head_class(head_name).config_class, overrides)
    task = TASKS.get(head_class(head_name).task)(store, cfg, "synthetic")
    head = build_head(head_name, task.data_info(), overrides)
    batch = next(iter(task.train_batches(head.inputs, 32, seed=0, epoch=0)))
    opts = head.optimizers()
    losses = []
    for _ in range(steps):
        for o, _ in opts:
            o.zero_grad()
        loss = head.loss(batch)["loss"]
        loss.backward()
        for o, _ in opts:
            o.step()
        losses.append(loss.item())
    return losses


def test_loss_goes_down_on_store_batches(retrieval_store):
    losses = steps_on_store(retrieval_store, "casc", {"embed_size": "32", "word_dim": "16", "label_hidden": "16",
                                                      "lr": "5e-3", "max_violation": "false"})
    assert losses[-1] < 0.8 * losses[0]
