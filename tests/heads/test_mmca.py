"""MMCA head: the batched score against the paper's equations written out with loops."""

from __future__ import annotations

import math

import pytest
import torch

from lighthead.heads.base import HEADS
from lighthead.heads.mmca import MMCA, MMCAConfig, pair_cat

REGION_DIM, TOKEN_DIM = 40, 24
TINY = dict(embed_dim=32, heads=4, layers=2, filters=8, dropout=0.0)


def tiny_model(**kw) -> MMCA:
    torch.manual_seed(0)
    return MMCA(MMCAConfig(**{**TINY, **kw}), region_dim=REGION_DIM, token_dim=TOKEN_DIM)


def tiny_batch(
    n: int, lengths: list[int], k: int = 4, max_len: int = 6, seed: int = 1, regions: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """n images with k regions (or `regions[i]` real ones, the rest padding), captions of `lengths`."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]
    tokens = torch.randn(len(lengths), max_len, TOKEN_DIM, generator=g)
    tokens[~mask] = 7.0  # padding content must not matter
    batch = {
        "regions": torch.randn(n, k, REGION_DIM, generator=g),
        "tokens": tokens,
        "text_mask": mask,
        "text_len": mask.sum(1),
    }
    if regions is not None:
        batch["region_mask"] = torch.arange(k)[None, :] < torch.tensor(regions)[:, None]
        batch["regions"][~batch["region_mask"]] = -5.0
    return batch


# ---- the paper's equations, one position at a time ---------------------------------------


def layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = sum(x[i] for i in range(len(x))) / len(x)
    var = sum((x[i] - mean) ** 2 for i in range(len(x))) / len(x)
    return (x - mean) / math.sqrt(var + norm.eps) * norm.weight + norm.bias


def transformer_unit_loops(layer, seq: list[torch.Tensor], heads: int) -> list[torch.Tensor]:
    """Eqs. 1-4 (and 8-11 for the joint sequence): multi-head scaled dot-product attention,
    then residual + LayerNorm, FFN, residual + LayerNorm; loops over positions and heads."""
    d = seq[0].shape[0]
    dh = d // heads
    w, b = layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias
    q = [w[:d] @ y + b[:d] for y in seq]
    k = [w[d : 2 * d] @ y + b[d : 2 * d] for y in seq]
    v = [w[2 * d :] @ y + b[2 * d :] for y in seq]
    out = []
    for p in range(len(seq)):
        head_outs = []
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            logits = torch.stack([q[p][sl] @ k[r][sl] / math.sqrt(dh) for r in range(len(seq))])
            a = torch.exp(logits - logits.max())
            a = a / a.sum()
            head_outs.append(sum(a[r] * v[r][sl] for r in range(len(seq))))
        att = layer.self_attn.out_proj.weight @ torch.cat(head_outs) + layer.self_attn.out_proj.bias
        x1 = layer_norm(seq[p] + att, layer.norm1)
        ffn = layer.linear2.weight @ torch.relu(layer.linear1.weight @ x1 + layer.linear1.bias) + layer.linear2.bias
        out.append(layer_norm(x1 + ffn, layer.norm2))
    return out


def text_cnn_loops(cnn, seq: list[torch.Tensor]) -> torch.Tensor:
    """Eqs. 6-7: p_{l,k} = ReLU(W_l e_{k:k+l-1} + b_l) for k = 1..n (zeros past the end),
    q_l = max_k p_{l,k}, LayerNorm(W_e [q_1; q_2; q_3] + b_e), then L2."""
    n = len(seq)
    zero = torch.zeros_like(seq[0])
    qs = []
    for w, conv in zip(cnn.windows, cnn.convs):
        ps = []
        for k in range(n):
            acc = conv.bias.clone()
            for j in range(w):
                e = seq[k + j] if k + j < n else zero
                acc = acc + conv.weight[:, :, j] @ e
            ps.append(torch.relu(acc))
        qs.append(torch.stack(ps).max(dim=0).values)
    c = layer_norm(cnn.fc.weight @ torch.cat(qs) + cnn.fc.bias, cnn.norm)
    return c / c.norm()


def mmca_score_loops(model: MMCA, regions: torch.Tensor, tokens: torch.Tensor, n_tok: int) -> torch.Tensor:
    """S(I, T) = i0.c0 + alpha i1.c1 for one pair, from the paper's Secs. 3.3-3.5."""
    heads = model.cfg.heads
    r = [model.region_proj.weight @ x + model.region_proj.bias for x in regions]  # R
    e = [tokens[j] for j in range(n_tok)]  # BERT outputs E (real tokens only)
    rs = r
    for layer in model.image_self:
        rs = transformer_unit_loops(layer, rs, heads)
    i0 = sum(rs) / len(rs)  # Eq. 5
    i0 = i0 / i0.norm()
    c0 = text_cnn_loops(model.text_self, e)
    y = r + [model.token_proj.weight @ x + model.token_proj.bias for x in e]  # Y = (R; E)
    for layer in model.cross:
        y = transformer_unit_loops(layer, y, heads)
    rc, ec = y[: len(r)], y[len(r) :]
    i1 = sum(rc) / len(rc)
    i1 = i1 / i1.norm()
    c1 = text_cnn_loops(model.text_cross, ec)
    return i0 @ c0 + model.cfg.alpha * (i1 @ c1)


# ---- tests ------------------------------------------------------------------------------


def test_registered():
    assert HEADS.get("mmca") is MMCA
    assert MMCA.config_class is MMCAConfig
    assert set(MMCA.inputs) <= {"regions", "tokens", "text_mask", "image_index"}


@pytest.mark.parametrize("regions", [None, [4, 2, 3]])  # fixed K; padded (adaptive boxes)
def test_batched_score_equals_equations_with_loops(regions):
    model = tiny_model().eval()
    lengths = [5, 3, 1, 6, 2]
    batch = tiny_batch(3, lengths, regions=regions)
    real = regions or [4, 4, 4]
    with torch.no_grad():
        img, txt = model.encode_image(batch), model.encode_text(batch)
        want = torch.stack(
            [
                torch.stack(
                    [
                        mmca_score_loops(model, batch["regions"][i, : real[i]], batch["tokens"][t], lengths[t])
                        for t in range(len(lengths))
                    ]
                )
                for i in range(3)
            ]
        )
        for budget_mb in (1e-4, 0.05, 1024.0):  # one pair, a few pairs, everything in one block
            got = model.score(img, txt, budget_mb=budget_mb)
            assert got.shape == (3, 5)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_block_shape_follows_budget():
    model = tiny_model()
    per_pair = model._pair_bytes(36, 20)
    nb, mb = model.block_shape(100, 500, 36, 20, budget_mb=50 * per_pair / 2**20)
    assert mb == 50 and nb == 1
    nb, mb = model.block_shape(100, 500, 36, 20, budget_mb=1000 * per_pair / 2**20)
    assert mb == 500 and nb == 2
    assert model.block_shape(3, 4, 36, 20, budget_mb=1e-9) == (1, 1)


def test_training_score_matrix_matches_score():
    """`loss` uses the same pair scores as evaluation: the diagonal holds the positives."""
    model = tiny_model().eval()
    batch = tiny_batch(4, [5, 3, 6, 2])
    with torch.no_grad():
        img, txt = model.encode_image(batch), model.encode_text(batch)
        full = img["i0"] @ txt["c0"].t() + model.cfg.alpha * model.pair_scores(img, txt)
        torch.testing.assert_close(full, model.score(img, txt, budget_mb=1e-4), atol=1e-6, rtol=1e-6)


def test_gradient_reaches_every_parameter():
    model = tiny_model(dropout=0.1).train()
    batch = tiny_batch(4, [5, 3, 6, 2])
    out = model.loss(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def eq15(s, max_violation: bool, image_index=None) -> float:
    """Eq. 15 written out on a score matrix: for each true pair (I, T) the hinge against the
    hardest (or every) other caption y != T and other image x != I of the mini-batch, summed over
    the batch (VSE++'s notation, which masks the pair itself only); with `image_index`, items of
    the same image are skipped instead (our switch)."""
    n, want = len(s), 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i and (image_index is None or image_index[j] != image_index[i])]
        caps = [max(0.0, 0.2 - float(s[i, i]) + float(s[i, j])) for j in others]
        imgs = [max(0.0, 0.2 - float(s[i, i]) + float(s[j, i])) for j in others]
        want += (max(caps) + max(imgs)) if max_violation else (sum(caps) + sum(imgs))
    return want


def repeated_batch() -> dict[str, torch.Tensor]:
    """Four pairs, two of them captions of one image (as a caption-sampled batch holds them);
    the two captions say nearly the same, so the other one can be the hardest negative."""
    batch = tiny_batch(4, [5, 3, 5, 2], seed=7)
    batch["regions"][2] = batch["regions"][0]
    batch["tokens"][2] = batch["tokens"][0] + 0.1 * torch.randn(
        batch["tokens"][0].shape, generator=torch.Generator().manual_seed(5)
    )
    batch["image_index"] = torch.tensor([0, 1, 0, 2])
    return batch


@pytest.mark.parametrize("same_image", [False, True])
@pytest.mark.parametrize("max_violation", [True, False])
def test_loss_is_eq15_on_the_score_matrix(max_violation, same_image):
    """Eq. 15 on the evaluation scores S(I, T) = i0.c0 + alpha i1.c1, on a batch that repeats an
    image: a wrong score combination, reduction or negative rule breaks it."""
    model = tiny_model(max_violation=max_violation, same_image_positive=same_image).eval()  # dropout 0
    batch = repeated_batch()
    with torch.no_grad():
        got = float(model.loss(batch)["loss"])
        s = model.score(model.encode_image(batch), model.encode_text(batch), budget_mb=1e-4).double()
    paper, skipping = eq15(s, max_violation), eq15(s, max_violation, [0, 1, 0, 2])
    assert paper != pytest.approx(skipping, rel=1e-3)  # the batch tells the two rules apart
    want = skipping if same_image else paper
    assert want > 0 and got == pytest.approx(want, rel=1e-5, abs=1e-6)
    ((opt, sched),) = model.optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 2e-4
    assert sched.step_size == 10 and sched.gamma == 0.1  # the paper: x0.1 after 10 epochs
    assert MMCAConfig().same_image_positive is False


def test_config_validation_and_variants():
    with pytest.raises(ValueError):
        MMCAConfig(embed_dim=30, heads=16)
    with pytest.raises(ValueError):
        MMCAConfig(windows=(0, 2))
    assert MMCAConfig().ffn_dim == 256 and MMCAConfig().alpha == 0.2
    assert MMCAConfig.from_name("mmca-self").alpha == 0.0
    self_only = tiny_model(alpha=0.0).eval()
    batch = tiny_batch(2, [3, 4])
    with torch.no_grad():
        img, txt = self_only.encode_image(batch), self_only.encode_text(batch)
        torch.testing.assert_close(self_only.score(img, txt), img["i0"] @ txt["c0"].t())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_score_on_gpu_matches_cpu():
    model = tiny_model().eval()
    batch = tiny_batch(3, [5, 3, 1, 6, 2])
    with torch.no_grad():
        img, txt = model.encode_image(batch), model.encode_text(batch)
        cpu = model.score(img, txt)
        model.cuda()
        gpu = model.score(img, txt, budget_mb=1e-3)  # inputs stay on the CPU; blocks move
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


# ---- eval scoring with the first unit's projections shared between pairs -------------------


def plain_scores(model: MMCA, img: dict, txt: dict) -> torch.Tensor:
    """S from `cross_embed` on every pair (the reference forward), one block."""
    return img["i0"] @ txt["c0"].t() + model.cfg.alpha * model.pair_scores_plain(img, txt)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("regions", [None, [4, 2, 3]])  # fixed K; a padded (masked) region set
def test_fast_eval_scores_equal_cross_embed(layers, regions):
    model = tiny_model(layers=layers, dropout=0.1).eval()  # eval: dropout off on both paths
    lengths = [5, 3, 1, 6, 2]
    batch = tiny_batch(3, lengths, regions=regions)
    with torch.no_grad():
        img, txt = model.encode_image(batch), model.encode_text(batch)
        r_pairs = img["regions"].repeat_interleave(5, 0)  # pair (i, j) at row 5 * i + j
        rm_pairs = img["region_mask"].repeat_interleave(5, 0)
        i1, c1 = model.cross_embed(r_pairs, rm_pairs, txt["tokens"].repeat(3, 1, 1), txt["mask"].repeat(3, 1))
        want_pairs = (i1 * c1).sum(-1).view(3, 5)
        fast = model.pair_scores_fast(img, txt)
        torch.testing.assert_close(fast, want_pairs, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.pair_scores(img, txt), fast, atol=0, rtol=0)  # eval dispatches here
        # projections computed on the untrimmed captions (longer than the block's longest)
        pre_img = {**img, "qkv": model.first_unit_qkv(img["regions"])}
        pre_txt = {**txt, "qkv": model.first_unit_qkv(txt["tokens"])}
        torch.testing.assert_close(model.pair_scores_fast(pre_img, pre_txt), want_pairs, atol=1e-5, rtol=1e-5)
        want = plain_scores(model, img, txt)
        for budget_mb in (1e-4, 0.05, 1024.0):  # one pair per block, a few, everything at once
            torch.testing.assert_close(model.score(img, txt, budget_mb=budget_mb), want, atol=1e-5, rtol=1e-5)


def test_pair_cat_orders_pairs_image_major():
    a = torch.arange(2 * 3).view(2, 3, 1)  # 2 items with 3 rows
    b = 10 + torch.arange(4 * 2).view(4, 2, 1)  # 4 items with 2 rows
    out = pair_cat(a, b, dim=-2)
    assert out.shape == (8, 5, 1)
    for i in range(2):
        for j in range(4):
            assert torch.equal(out[4 * i + j], torch.cat([a[i], b[j]]))
    with pytest.raises(ValueError):
        pair_cat(a, b, dim=1)


def test_training_uses_the_plain_units_and_eval_does_not(monkeypatch):
    model = tiny_model(dropout=0.5)
    batch = tiny_batch(4, [5, 3, 6, 2])
    img, txt = model.encode_image(batch), model.encode_text(batch)
    calls = []
    plain_embed = model.cross_embed

    def counting_embed(*args):
        calls.append(1)
        return plain_embed(*args)

    monkeypatch.setattr(model, "cross_embed", counting_embed)

    def no_fast(*_):
        raise AssertionError("training must not use the shared-projection path")

    with monkeypatch.context() as patch:
        patch.setattr(model, "pair_scores_fast", no_fast)
        model.train()
        first, second = model.pair_scores(img, txt), model.pair_scores(img, txt)
        assert calls and not torch.allclose(first, second)  # dropout is on in training
        model.loss(batch)["loss"].backward()
    model.eval()
    calls.clear()
    with torch.no_grad():
        model.score(model.encode_image(batch), model.encode_text(batch))
        model.loss(batch)
    assert not calls


@pytest.mark.parametrize("layers", [1, 2])
def test_fast_eval_scores_under_bf16_autocast(layers):
    model = tiny_model(layers=layers).eval()
    batch = tiny_batch(3, [5, 3, 1, 6, 2], regions=[4, 2, 3])
    with torch.no_grad():
        img, txt = model.encode_image(batch), model.encode_text(batch)
        want = plain_scores(model, img, txt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model.score(img, txt, budget_mb=0.05)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, atol=5e-3, rtol=0)  # products in bf16
            # encodings already cast to bfloat16 (as the evaluation pipeline does)
            img16 = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in img.items()}
            txt16 = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in txt.items()}
            got16 = model.score(img16, txt16)
            assert got16.dtype == torch.float32
            torch.testing.assert_close(got16, want, atol=5e-3, rtol=0)
