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
    h = torch.zeros(gru.hidden_size, dtype=torch.float64)
    out = []
    for x in xs:
        gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
        r = torch.sigmoid(gi[:D] + gh[:D])
        z = torch.sigmoid(gi[D : 2 * D] + gh[D : 2 * D])
        n = torch.tanh(gi[2 * D :] + r * gh[2 * D :])
        h = (1 - z) * n + z * h
        out.append(h)
    return out


def affine(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """W x + b, one output coordinate at a time."""
    b = layer.bias if layer.bias is not None else torch.zeros(layer.out_features, dtype=x.dtype)
    return torch.stack(
        [sum(layer.weight[o, c] * x[c] for c in range(len(x))) + b[o] for o in range(layer.out_features)]
    )


def paper_mlp(seq: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """recipe=paper's MLP of Eq. 16-17: Linear, ReLU, (dropout: off in eval), Linear."""
    return affine(seq[3], torch.relu(affine(seq[0], x)))


def reference(head: Itin, batch: dict, b: int) -> dict:
    """Eq. 1-19 of the paper for sample b, one region / word / coordinate at a time in float64,
    from the head's weights only (no module is called): r_i = W_r f_i + b_r (Eq. 1); w = the two
    GRU directions averaged (Eq. 2-4); a_ij = (W^_r r_i).(W^_t w_j) / sqrt(k), softmax over the
    words (Eq. 5-6); u_i = sum_j a_ij w_j (Eq. 7); g_i = sigmoid(r_i . u_i) (Eq. 8); c_i = g_i
    [r_i; u_i] (Eq. 9); z_i = ReLU(W_o c_i + b_o) + r_i (Eq. 10-11); alpha = softmax over the
    regions of Tran_z(z_i) = linear, tanh, linear (Eq. 12); C = sum_i alpha_i z_i (Eq. 13);
    S = the mean of w (Eq. 15); F = lambda MLP(V ++ C) + (1 - lambda) MLP(S ++ C) (Eq. 16-18);
    logits W_f F + b_f (Eq. 19). Ablations of Table III: uniform attention (w/o Align), g = 1
    (w/o Gating), F = MLP(C) (w/o Context), F from V and S alone (only Context)."""
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
        r = [affine(head.region_proj, batch["regions"][b, i]) for i in range(M)]  # Eq. 1
        attn, gates, zs = [], [], []
        for i in range(M):
            if cfg.align:
                a = [
                    float(affine(head.aff_r, r[i]) @ affine(head.aff_t, w[j])) / math.sqrt(K) for j in range(n)
                ]  # Eq. 5
            else:
                a = [0.0] * n
            e = [math.exp(x - max(a)) for x in a]
            abar = [x / sum(e) for x in e]  # Eq. 6
            u = sum(abar[j] * w[j] for j in range(n))  # Eq. 7
            g = 1 / (1 + math.exp(-sum(float(r[i][c] * u[c]) for c in range(D)))) if cfg.gating else 1.0  # Eq. 8
            c = g * torch.cat([r[i], u])  # Eq. 9
            zs.append(torch.relu(affine(head.fuse, c)) + r[i])  # Eq. 10-11
            attn.append(abar)
            gates.append(g)
        lin1, lin2 = head.tran_z[0], head.tran_z[2]
        scores = [float(affine(lin2, torch.tanh(affine(lin1, z)))[0]) for z in zs]  # Tran_z
        e = [math.exp(x - max(scores)) for x in scores]
        alpha = [x / sum(e) for x in e]  # Eq. 12
        big_c = sum(alpha[i] * zs[i] for i in range(M))  # Eq. 13
        out.update(attn=attn, gate=gates, alpha=alpha)
    if not cfg.context:
        f = paper_mlp(head.mlp_c, big_c)
    else:
        v_in = [batch["global"][b]] + ([] if big_c is None else [big_c])
        s_in = [s] + ([] if big_c is None else [big_c])
        f1 = paper_mlp(head.mlp_v, torch.cat(v_in))  # Eq. 16
        f2 = paper_mlp(head.mlp_s, torch.cat(s_in))  # Eq. 17
        f = 0.2 * f1 + 0.8 * f2  # Eq. 18, lambda = 0.2
    out["logits"] = affine(head.classifier, f)  # Eq. 19, before the softmax
    return out


ABLATIONS = {
    "ITIN": {},
    "w/o Align": {"align": False},
    "w/o Gating": {"gating": False},
    "w/o Context": {"context": False},
    "only Context": {"context_only": True},
}


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_paper_recipe_is_the_papers_equations(row):
    """recipe=paper, every ablation row, against the equations written out (float64)."""
    head = tiny(**ABLATIONS[row]).double()
    batch = {key: (v.double() if v.is_floating_point() else v) for key, v in make_batch().items()}
    with torch.no_grad():
        out = head.explain(batch)
        for b in range(3):
            ref = reference(head, batch, b)
            torch.testing.assert_close(out["logits"][b], ref["logits"], atol=1e-10, rtol=1e-8)
            if head.cfg.context_only:
                continue
            n = int(batch["text_mask"][b].sum())
            torch.testing.assert_close(out["attn"][b, :, :n], torch.tensor(ref["attn"], dtype=torch.float64))
            assert out["attn"][b, :, n:].abs().sum() == 0  # padding gets no attention
            torch.testing.assert_close(out["gate"][b], torch.tensor(ref["gate"], dtype=torch.float64))
            torch.testing.assert_close(out["alpha"][b], torch.tensor(ref["alpha"], dtype=torch.float64))


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


@pytest.mark.parametrize("recipe", ["paper", "code"])
@pytest.mark.parametrize("row", list(ABLATIONS))
def test_every_ablation_gets_gradients_and_its_loss_is_the_cross_entropy(row, recipe):
    head = tiny(recipe, **ABLATIONS[row]).train()
    head.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, torch.nn.Dropout) else None)  # deterministic
    head.apply(lambda m: setattr(m, "dropout", 0.0) if isinstance(m, torch.nn.GRU) else None)  # between GRU layers
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
    ((opt, sched),) = tiny().optimizers()  # Adam 1e-3, decay 1e-5, x0.1 every 10 epochs
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


# -- the released model (zhutong0219/ITIN, Demo.py), written out from its forward pass --


def gru_layer(w_ih, w_hh, b_ih, b_hh, xs):
    """One GRU direction of one layer, step by step (gate order r, z, n)."""
    h = torch.zeros(w_hh.shape[1], dtype=torch.float64)
    hd = h.shape[0]
    out = []
    for x in xs:
        gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
        r = torch.sigmoid(gi[:hd] + gh[:hd])
        z = torch.sigmoid(gi[hd : 2 * hd] + gh[hd : 2 * hd])
        n = torch.tanh(gi[2 * hd :] + r * gh[2 * hd :])
        h = (1 - z) * n + z * h
        out.append(h)
    return out


def stacked_bigru(gru: torch.nn.GRU, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """BERTGRUSentiment's rnn over every position; the two directions of the top layer averaged."""
    for layer in range(gru.num_layers):
        p = {name: getattr(gru, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        q = {name: getattr(gru, f"{name}_l{layer}_reverse") for name in p}
        fw = gru_layer(p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], xs)
        bw = gru_layer(q["weight_ih"], q["weight_hh"], q["bias_ih"], q["bias_hh"], xs[::-1])[::-1]
        xs = [torch.cat([f, b]) for f, b in zip(fw, bw)]
    return [(x[: len(x) // 2] + x[len(x) // 2 :]) / 2 for x in xs]


def softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x - max(xs)) for x in xs]
    return [x / sum(e) for x in e]


def l2(x: torch.Tensor) -> torch.Tensor:
    return x / (math.sqrt(sum(float(c) ** 2 for c in x)) + 1e-8)


def released_reference(head: Itin, batch: dict, b: int) -> dict:
    """catNet.forward for sample b: EncoderImagePrecomp, two BERTGRUSentiment encoders (words; S),
    GatedFusionNew's image side (qkv attention of regions over words, a second qkv attention among
    the attended vectors, l2norm, gate, fc_1 + residual, SummaryAttn with 4 maps, l2norm), and the
    two 64-wide branches through the shared fc2, mixed 0.2 / 0.8. Ablations: uniform attention
    (w/o Align), g = 1 (w/o Gating)."""
    cfg = head.cfg
    n_real, L = int(batch["text_mask"][b].sum()), cfg.max_len
    xs = [batch["tokens"][b, j] if j < n_real else torch.zeros(TD, dtype=torch.float64) for j in range(L)]
    w = stacked_bigru(head.gru, xs)  # all L positions, no mask
    s = sum(stacked_bigru(head.sentence_gru, xs)) / L  # bertmodel's o: mean over all positions
    r = [l2(head.region_proj.weight @ batch["regions"][b, i] + head.region_proj.bias) for i in range(M)]
    us, gates, zs = [], [], []
    for i in range(M):
        if cfg.align:
            a = softmax(
                [float((head.aff_r.weight @ r[i]) @ (head.aff_t.weight @ w[j])) / math.sqrt(K) for j in range(L)]
            )
        else:
            a = [1.0 / L] * L
        us.append(sum(a[j] * w[j] for j in range(L)))
    fused = []
    for i in range(M):  # weighted_v2 attends over itself
        a = softmax(
            [float((head.second_q.weight @ us[i]) @ (head.second_k.weight @ us[j])) / math.sqrt(D) for j in range(M)]
        )
        fused.append(l2(sum(a[j] * us[j] for j in range(M))))
    for i in range(M):
        g = 1 / (1 + math.exp(-float(r[i] @ fused[i]))) if cfg.gating else 1.0
        co = torch.cat([r[i], fused[i]]) * g
        zs.append(torch.relu(head.fuse.weight @ co) + r[i])  # fc_1 has no bias
        gates.append(g)
    lin1, lin2 = head.tran_z[0], head.tran_z[2]
    maps = [lin2.weight @ torch.relu(lin1.weight @ z + lin1.bias) + lin2.bias for z in zs]  # (4,) per region
    pooled = []
    for h in range(cfg.pool_maps):
        alpha = softmax([float(maps[i][h]) for i in range(M)])
        pooled.append(sum(alpha[i] * zs[i] for i in range(M)))
    big_c = l2(sum(pooled) / cfg.pool_maps)
    fc4, fc1, fc2 = head.mlp_v[0], head.mlp_s[0], head.classifier
    h1 = fc2.weight @ torch.relu(fc4.weight @ torch.cat([batch["global"][b], big_c]) + fc4.bias) + fc2.bias
    h2 = fc2.weight @ torch.relu(fc1.weight @ torch.cat([s, big_c]) + fc1.bias) + fc2.bias
    return {"logits": 0.2 * h1 + 0.8 * h2, "gate": gates}


@pytest.mark.parametrize("row", ["ITIN", "w/o Align", "w/o Gating"])
def test_code_recipe_matches_the_released_forward(row):
    torch.manual_seed(0)
    cfg = ItinConfig(d=D, k=K, m=M, max_len=8, **ABLATIONS[row])  # recipe=code by default
    head = Itin(cfg, region_dim=RD, token_dim=TD, global_dim=GD).double().eval()
    batch = {key: (v.double() if v.is_floating_point() else v) for key, v in make_batch().items()}
    with torch.no_grad():
        out = head.explain(batch)
        for b in range(3):
            ref = released_reference(head, batch, b)
            torch.testing.assert_close(out["logits"][b], ref["logits"], atol=1e-10, rtol=1e-8)
            torch.testing.assert_close(out["gate"][b], torch.tensor(ref["gate"], dtype=torch.float64))
    assert head.gru.num_layers == 2 and head.gru.dropout == 0.25


def test_every_default_is_the_released_value_and_paper_is_the_text():
    released = {
        "recipe": "code",
        "region_norm": True,
        "init": "xavier",
        "gru_layers": 2,
        "gru_dropout": 0.25,
        "text_positions": "padded",
        "max_len": 100,
        "sentence_encoder": "separate",
        "second_attention": True,
        "attended_norm": True,
        "fuse_bias": False,
        "pooling": "summary",
        "pool_maps": 4,
        "pooled_norm": True,
        "mlp": "single",
        "mlp_hidden": 64,
        "d": 1024,
        "k": 1024,
        "lam": 0.2,
        "lr": 1e-3,
        "weight_decay": 1e-5,
    }
    cfg = ItinConfig()
    assert {key: getattr(cfg, key) for key in released} == released
    paper = ItinConfig(recipe="paper")
    assert (
        paper.region_norm,
        paper.init,
        paper.gru_layers,
        paper.text_positions,
        paper.sentence_encoder,
        paper.second_attention,
        paper.attended_norm,
        paper.fuse_bias,
        paper.pooling,
        paper.pooled_norm,
        paper.mlp,
    ) == (False, "torch", 1, "real", "shared", False, False, True, "tanh", False, "double")
    assert ItinConfig(recipe="paper", gru_layers=2).gru_layers == 2  # a key wins over its recipe
    assert ItinConfig(second_attention=False).second_attention is False
    with pytest.raises(ValueError, match="recipe"):
        ItinConfig(recipe="released")
    with pytest.raises(ValueError, match="pooling"):
        ItinConfig(pooling="max")
    head = Itin(ItinConfig(d=D, k=K, m=M), region_dim=RD, token_dim=TD, global_dim=GD)
    bound = math.sqrt(6 / (RD + D))  # Xavier-uniform, zero bias
    assert head.region_proj.weight.abs().max() <= bound and not head.region_proj.bias.any()
    assert head.fuse.bias is None and head.classifier.in_features == 64


def test_code_recipe_reads_padding_as_the_release_does():
    torch.manual_seed(0)
    head = Itin(ItinConfig(d=D, k=K, m=M, max_len=8), region_dim=RD, token_dim=TD, global_dim=GD).eval()
    batch = make_batch()
    with torch.no_grad():
        base = head(batch)
        noisy = dict(batch, tokens=torch.where(batch["text_mask"][..., None], batch["tokens"], 9.0))
        torch.testing.assert_close(head(noisy), base)  # padded positions are zeros, whatever the store holds
        head.cfg.max_len = 9
        assert not torch.allclose(head(batch), base)  # one more zero position changes the GRU, S and attention
