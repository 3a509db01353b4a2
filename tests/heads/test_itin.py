"""ITIN: the paper's equations written out with loops vs the batched head; ablation switches."""

from __future__ import annotations

import math

import pytest
import torch

from lighthead.heads.itin import Itin, ItinConfig

RD, TD, GD, D, K, M = 10, 6, 5, 8, 4, 3  # region, token, global widths; d, k, m


def tiny(recipe="paper", **kw) -> Itin:
    torch.manual_seed(0)
    return Itin(ItinConfig(recipe=recipe, d=D, k=K, m=M, **kw), region_dim=RD, token_dim=TD, global_dim=GD).eval()


def make_batch(b: int = 3, regions: int = 5, length: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([length, 2, 4, 1, 5][:b])
    return {
        "regions": torch.randn(b, regions, RD, generator=g),
        "tokens": torch.randn(b, length, TD, generator=g),
        "text_mask": torch.arange(length)[None] < lengths[:, None],
        "global": torch.randn(b, GD, generator=g),
        "label": torch.randint(0, 3, (b,), generator=g),
    }


def gru_direction(gru: torch.nn.GRU, xs: list[torch.Tensor], suffix: str) -> list[torch.Tensor]:
    """One GRU direction step by step (PyTorch's gate order r, z, n)."""
    w_ih, w_hh = getattr(gru, "weight_ih_l0" + suffix), getattr(gru, "weight_hh_l0" + suffix)
    b_ih, b_hh = getattr(gru, "bias_ih_l0" + suffix), getattr(gru, "bias_hh_l0" + suffix)
    h = torch.zeros(gru.hidden_size)
    out = []
    for x in xs:
        gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
        r = torch.sigmoid(gi[:D] + gh[:D])
        z = torch.sigmoid(gi[D : 2 * D] + gh[D : 2 * D])
        n = torch.tanh(gi[2 * D :] + r * gh[2 * D :])
        h = (1 - z) * n + z * h
        out.append(h)
    return out


def reference(head: Itin, batch: dict, b: int) -> dict:
    """Eq. 1-19 for sample b, one region / word / coordinate at a time, with the ablations of
    Table III: uniform attention (w/o Align), g = 1 (w/o Gating), F = MLP(C) (w/o Context),
    F from V and S alone (only Context)."""
    cfg = head.cfg
    n = int(batch["text_mask"][b].sum())
    xs = [batch["tokens"][b, j] for j in range(n)]
    fw = gru_direction(head.gru, xs, "")
    bw = gru_direction(head.gru, xs[::-1], "_reverse")[::-1]
    w = [(fw[j] + bw[j]) / 2 for j in range(n)]  # Eq. 4
    s = sum(w) / n  # Eq. 15
    out: dict = {}
    big_c = None
    if not cfg.context_only:
        r = [head.region_proj.weight @ batch["regions"][b, i] + head.region_proj.bias for i in range(M)]  # Eq. 1
        attn, gates, zs = [], [], []
        for i in range(M):
            if cfg.align:
                a = [float(head.aff_r.weight @ r[i] @ (head.aff_t.weight @ w[j])) / math.sqrt(K) for j in range(n)]  # Eq. 5-6
            else:
                a = [0.0] * n
            e = [math.exp(x - max(a)) for x in a]
            abar = [x / sum(e) for x in e]
            u = sum(abar[j] * w[j] for j in range(n))  # Eq. 7
            g = 1 / (1 + math.exp(-sum(float(r[i][c] * u[c]) for c in range(D)))) if cfg.gating else 1.0  # Eq. 8
            c = g * torch.cat([r[i], u])  # Eq. 9
            o = torch.relu(head.fuse.weight @ c + head.fuse.bias)  # Eq. 10
            zs.append(o + r[i])  # Eq. 11
            attn.append(abar)
            gates.append(g)
        scores = [float(head.tran_z(z)) for z in zs]
        e = [math.exp(x - max(scores)) for x in scores]
        alpha = [x / sum(e) for x in e]  # Eq. 12
        big_c = sum(alpha[i] * zs[i] for i in range(M))  # Eq. 13
        out.update(attn=attn, gate=gates, alpha=alpha)
    if not cfg.context:
        f = head.mlp_c(big_c)
    else:
        v_in = [batch["global"][b]] + ([] if big_c is None else [big_c])
        s_in = [s] + ([] if big_c is None else [big_c])
        f1 = head.mlp_v(torch.cat(v_in))  # Eq. 16
        f2 = head.mlp_s(torch.cat(s_in))  # Eq. 17
        f = 0.2 * f1 + 0.8 * f2  # Eq. 18, lambda = 0.2
    out["logits"] = head.classifier.weight @ f + head.classifier.bias
    return out


ABLATIONS = {"ITIN": {}, "w/o Align": {"align": False}, "w/o Gating": {"gating": False},
             "w/o Context": {"context": False}, "only Context": {"context_only": True}}


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_equations_match_loops(row):
    head, batch = tiny(**ABLATIONS[row]), make_batch()
    with torch.no_grad():
        out = head.explain(batch)
        for b in range(3):
            ref = reference(head, batch, b)
            torch.testing.assert_close(out["logits"][b], ref["logits"], atol=1e-5, rtol=1e-4)
            if head.cfg.context_only:
                continue
            n = int(batch["text_mask"][b].sum())
            torch.testing.assert_close(out["attn"][b, :, :n], torch.tensor(ref["attn"]), atol=1e-5, rtol=1e-4)
            assert out["attn"][b, :, n:].abs().sum() == 0  # padding gets no attention
            torch.testing.assert_close(out["gate"][b], torch.tensor(ref["gate"], dtype=torch.float32),
                                       atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out["alpha"][b], torch.tensor(ref["alpha"]), atol=1e-5, rtol=1e-4)


def test_padding_and_extra_regions_do_not_change_logits():
    head, batch = tiny(), make_batch()
    with torch.no_grad():
        base = head(batch)
        padded = dict(batch)
        padded["tokens"] = torch.cat([batch["tokens"], torch.randn(3, 3, TD)], 1)
        padded["text_mask"] = torch.cat([batch["text_mask"], torch.zeros(3, 3, dtype=torch.bool)], 1)
        padded["regions"] = batch["regions"].clone()
        padded["regions"][:, M:] = 100.0  # regions past the first m are not read
        torch.testing.assert_close(head(padded), base, atol=1e-5, rtol=1e-4)


def test_missing_regions_get_no_pooling_weight():
    head, batch = tiny(), make_batch()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 1:] = False  # the first image has a single region
    with torch.no_grad():
        out = head.explain(dict(batch, region_mask=mask))
    assert torch.allclose(out["alpha"][0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(out["alpha"][1:].sum(-1), torch.ones(2)) and (out["alpha"][1:] > 0).all()


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_every_ablation_gets_gradients_and_its_loss_is_the_cross_entropy(row):
    head = tiny(**ABLATIONS[row]).train()
    head.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, torch.nn.Dropout) else None)  # deterministic
    batch = make_batch()
    out = head.loss(batch)
    with torch.no_grad():
        logits = head(batch)
    want = -sum(float(torch.log_softmax(logits[b], -1)[batch["label"][b]]) for b in range(3)) / 3  # Eq. 20, mean
    assert abs(float(out["loss"].detach()) - want) < 1e-5
    out["loss"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient in {row}"


def test_optimizer_is_the_papers():
    (opt, sched), = tiny().optimizers()  # Adam 1e-3, decay 1e-5, x0.1 every 10 epochs
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-5
    assert sched.step_size == 10 and sched.gamma == 0.1


def test_ablation_semantics():
    batch = make_batch()
    with torch.no_grad():
        no_align = tiny(align=False).explain(batch)
        mask = batch["text_mask"]
        uniform = mask[:, None, :].float() / mask.sum(1)[:, None, None]
        torch.testing.assert_close(no_align["attn"], uniform.expand(-1, M, -1))
        assert torch.equal(tiny(gating=False).explain(batch)["gate"], torch.ones(3, M))
        only = tiny(context_only=True)
        other = dict(batch, regions=torch.randn_like(batch["regions"]))
        torch.testing.assert_close(only(batch), only(other))  # no region input at all
        full = tiny()
        assert not torch.allclose(full(batch), full(other))


def test_config_validation_and_defaults():
    cfg = ItinConfig()
    assert (cfg.m, cfg.lam, cfg.lr, cfg.weight_decay, cfg.batch_size) == (2, 0.2, 1e-3, 1e-5, 64)
    with pytest.raises(ValueError):
        ItinConfig(lam=1.5)
    with pytest.raises(ValueError):
        ItinConfig(m=0)
    with pytest.raises(ValueError):
        ItinConfig(context=False, context_only=True)
    with pytest.raises(ValueError):
        ItinConfig(text="words/vocab")
    assert tiny(context_only=True).inputs == ("tokens", "text_mask", "label", "global")
    assert tiny(context=False).inputs == ("tokens", "text_mask", "label", "regions")
