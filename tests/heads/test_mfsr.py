"""mFSR head: its losses against the paper's equations written out, the one-backward GAN
split, every switch, and training on a batch with signal."""

from __future__ import annotations

import math

import pytest
import torch

from lighthead.heads.base import HEADS
from lighthead.heads.build import build_head
from lighthead.heads.mfsr import LOSS_TERMS, MFSR, MFSRConfig, caption_loss, modal_loss, specific_loss

VOCAB, GLOBAL_DIM = 30, 40
TINY = dict(word_dim=16, embed_dim=48, gru_layers=2, part_dim=16, gen_width=8, disc_width=8)
THUMB = 16


def tiny_model(**kw) -> MFSR:
    torch.manual_seed(0)
    return MFSR(MFSRConfig(**{**TINY, **kw}), vocab_size=VOCAB, global_dim=GLOBAL_DIM, thumb_size=THUMB)


def tiny_batch(b: int = 6, max_len: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, max_len + 1, (b,), generator=g)
    lengths[0] = max_len
    ids = torch.randint(1, VOCAB, (b, max_len), generator=g)
    ids[torch.arange(max_len)[None, :] >= lengths[:, None]] = 0
    return {
        "global": torch.randn(b, GLOBAL_DIM, generator=g),
        "thumb": torch.randint(0, 256, (b, 3, 16, 16), generator=g, dtype=torch.uint8),
        "word_ids": ids,
        "text_len": lengths,
        "image_index": torch.arange(b),
    }


def test_registered_and_built_from_data_sizes():
    assert HEADS.get("mfsr") is MFSR and MFSR.config_class is MFSRConfig
    head = build_head(
        "mfsr",
        {"vocab_size": VOCAB, "global_dim": GLOBAL_DIM, "thumb_size": THUMB, "dataset": "coco"},
        {k: str(v) for k, v in TINY.items()} | {"cap_re": "false"},
    )
    assert isinstance(head, MFSR) and head.image_fc.in_features == GLOBAL_DIM and not head.cfg.cap_re
    assert MFSRConfig().part_dim == 1024 and MFSRConfig().batch_size == 24


# ---- the paper's equations, written out ---------------------------------------------------


def test_separation_parts_and_score():
    model = tiny_model().eval()
    batch = tiny_batch()
    with torch.no_grad():
        v = model.image_parts(batch)
        raw = model.sep_v(model.image_fc(batch["global"]))  # MLP_v(v), (B, 3P)
        p = TINY["part_dim"]
        for j, name in enumerate(("mo", "se", "sp")):  # Eq. 3, each part normalised on its own
            part = raw[:, j * p : (j + 1) * p]
            torch.testing.assert_close(v[name], part / part.norm(dim=1, keepdim=True))
        img, txt = model.encode_image(batch), model.encode_text(batch)
        want = torch.tensor([[float(img["se"][i] @ txt["se"][t]) for t in range(6)] for i in range(6)])
        torch.testing.assert_close(model.score(img, txt), want)


def test_text_vector_is_the_last_real_gru_step():
    """Eq. 2: l = GRU output at the last real word, computed here one caption at a time."""
    model = tiny_model().eval()
    batch = tiny_batch()
    with torch.no_grad():
        _, l = model.text(batch["word_ids"], batch["text_len"])
        for b in range(6):
            n = int(batch["text_len"][b])
            out, _ = model.text.gru(model.text.embed(batch["word_ids"][b : b + 1, :n]))
            torch.testing.assert_close(l[b], out[0, n - 1], atol=1e-6, rtol=1e-5)


def test_modal_loss_eq7():
    g = torch.Generator().manual_seed(3)
    v, l = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    v_bar = [sum(float(v[i, k]) for i in range(5)) / 5 for k in range(4)]
    l_bar = [sum(float(l[i, k]) for i in range(5)) / 5 for k in range(4)]
    dist = lambda a, c: math.sqrt(sum((a[k] - c[k]) ** 2 for k in range(4)))  # noqa: E731
    want = sum(dist(v[i].tolist(), v_bar) + dist(l[i].tolist(), l_bar) for i in range(5)) / 5
    want += math.exp(-dist(v_bar, l_bar))
    assert modal_loss(v, l).item() == pytest.approx(want, rel=1e-5)


def test_specific_loss_eq10():
    g = torch.Generator().manual_seed(4)
    vse, vsp, lse, lsp = (torch.randn(5, 4, generator=g) for _ in range(4))
    want = (
        sum(
            math.exp(sum(float(vsp[i, k] * vse[i, k]) for k in range(4)))
            + math.exp(sum(float(lsp[i, k] * lse[i, k]) for k in range(4)))
            for i in range(5)
        )
        / 5
    )
    assert specific_loss(vse, vsp, lse, lsp).item() == pytest.approx(want, rel=1e-5)


def test_caption_loss_eq14():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 4, 6, generator=g)
    ids = torch.tensor([[1, 2, 3, 4], [5, 1, 0, 0], [2, 0, 0, 0]])
    lengths = torch.tensor([4, 2, 1])
    total = 0.0
    for b in range(3):
        for t in range(int(lengths[b])):
            row = logits[b, t]
            total -= float(row[ids[b, t]] - torch.logsumexp(row, 0))
    assert caption_loss(logits, ids, lengths).item() == pytest.approx(total / 3, rel=1e-5)
    assert caption_loss(logits, ids, lengths, per_token=True).item() == pytest.approx(total / 7, rel=1e-5)


@pytest.mark.parametrize("same_image", [False, True])
def test_semantic_loss_eqs8_9(same_image):
    """Eqs. 8-9 on a batch whose pairs 0 and 3 share an image: the hardest negative over
    k in B \\ j (every other pair, a caption of the same image included); `same_image_positive`
    skips the pairs of the same image instead."""
    model = tiny_model(modal=False, specific=False, img_re=False, cap_re=False, same_image_positive=same_image).eval()
    batch = tiny_batch()
    image = [0, 1, 2, 0, 3, 4]
    batch["global"][3], batch["thumb"][3] = batch["global"][0], batch["thumb"][0]
    batch["image_index"] = torch.tensor(image)
    with torch.no_grad():
        got = model.loss(batch)["semantic"].item()
        v, l = model.image_parts(batch)["se"], model.text_parts(batch)["se"]
    b, m = 6, 0.2

    def eq8(skip_same_image: bool) -> float:
        total = 0.0
        for j in range(b):
            pos = float(v[j] @ l[j])
            others = [k for k in range(b) if k != j and not (skip_same_image and image[k] == image[j])]
            total += max(max(m - pos + float(v[j] @ l[k]), 0.0) for k in others)
            total += max(max(m - pos + float(l[j] @ v[k]), 0.0) for k in others)
        return total / b

    assert eq8(False) != pytest.approx(eq8(True), rel=1e-3)  # the batch tells the two rules apart
    assert got == pytest.approx(eq8(same_image), rel=1e-5)
    assert MFSRConfig().same_image_positive is False


def test_decoder_is_teacher_forced():
    """Changing word t changes the predictions at steps > t only."""
    model = tiny_model().eval()
    batch = tiny_batch()
    code = torch.randn(6, 3 * TINY["part_dim"])
    with torch.no_grad():
        a = model.decoder(code, batch["word_ids"])
        ids = batch["word_ids"].clone()
        ids[:, 3] = (ids[:, 3] + 1) % VOCAB
        c = model.decoder(code, ids)
    torch.testing.assert_close(a[:, :4], c[:, :4])
    assert not torch.allclose(a[:, 4:], c[:, 4:])


# ---- the GAN inside one backward ---------------------------------------------------------


def test_gan_terms_reach_only_their_player():
    model = tiny_model().train()
    batch = tiny_batch()
    code = torch.randn(6, 3 * TINY["part_dim"], requires_grad=True)
    g_loss, d_loss = model.gan_losses(code, batch)
    d_params = model.discriminator_parameters()
    g_params = list(model.generator.parameters())
    grads = torch.autograd.grad(g_loss, d_params + g_params + [code], allow_unused=True, retain_graph=True)
    assert all(x is None for x in grads[: len(d_params)])
    assert all(x is not None and x.abs().sum() > 0 for x in grads[len(d_params) :])
    grads = torch.autograd.grad(d_loss, d_params + g_params + [code], allow_unused=True)
    assert all(x is not None and x.abs().sum() > 0 for x in grads[: len(d_params)])
    assert all(x is None for x in grads[len(d_params) :])


def test_gan_losses_match_the_written_out_terms():
    model = tiny_model().train()
    batch = tiny_batch()
    code = torch.randn(6, 3 * TINY["part_dim"])
    with torch.no_grad():
        g_loss, d_loss = model.gan_losses(code, batch)
        real = batch["thumb"].float() / 127.5 - 1
        fake = model.generator(code)
        other = fake.roll(1, 0)
        p_real, p_fake = torch.sigmoid(model.d1(real)), torch.sigmoid(model.d1(fake))
        q_match = torch.sigmoid(model.d2(torch.cat([fake, real], 1)))
        q_mis = torch.sigmoid(model.d2(torch.cat([other, real], 1)))
    mean = lambda x: float(x.mean())  # noqa: E731
    want_d = (
        -mean(torch.log(p_real)) - mean(torch.log(1 - p_fake)) - mean(torch.log(q_match)) - mean(torch.log(1 - q_mis))
    )
    want_g = 0.5 * (-mean(torch.log(p_fake)) - mean(torch.log(q_match)) - mean(torch.log(1 - q_mis)))
    assert d_loss.item() == pytest.approx(want_d, rel=1e-4)
    assert g_loss.item() == pytest.approx(want_g, rel=1e-4)


def test_smaller_recon_size_reconstructs_average_pooled_thumbnails():
    """recon_size=8 on 16x16 thumbnails: G and D1/D2 work at 8x8 against the 2x2 means."""
    model = tiny_model(recon_size=8).train()
    batch = tiny_batch()
    code = torch.randn(6, 3 * TINY["part_dim"])
    with torch.no_grad():
        g_loss, d_loss = model.gan_losses(code, batch)
        fake = model.generator(code)
        assert fake.shape == (6, 3, 8, 8)
        thumb = batch["thumb"].float() / 127.5 - 1  # (B, 3, 16, 16)
        real = thumb.view(6, 3, 8, 2, 8, 2).mean(dim=(3, 5))  # each 2x2 block's mean
        other = fake.roll(1, 0)
        p_real, p_fake = torch.sigmoid(model.d1(real)), torch.sigmoid(model.d1(fake))
        q_match = torch.sigmoid(model.d2(torch.cat([fake, real], 1)))
        q_mis = torch.sigmoid(model.d2(torch.cat([other, real], 1)))
    mean = lambda x: float(x.mean())  # noqa: E731
    want_d = (
        -mean(torch.log(p_real)) - mean(torch.log(1 - p_fake)) - mean(torch.log(q_match)) - mean(torch.log(1 - q_mis))
    )
    assert d_loss.item() == pytest.approx(want_d, rel=1e-4)
    want_g = 0.5 * (-mean(torch.log(p_fake)) - mean(torch.log(q_match)) - mean(torch.log(1 - q_mis)))
    assert g_loss.item() == pytest.approx(want_g, rel=1e-4)
    # the default reconstructs at the stored side; a side that does not divide it is refused
    assert tiny_model().generator(code).shape == (6, 3, THUMB, THUMB)
    for stored in (48, THUMB):  # 32 is not a whole number of 48- or 16-pixel thumbnails' blocks
        with pytest.raises(ValueError, match="does not divide"):
            MFSR(MFSRConfig(**TINY, recon_size=32), vocab_size=VOCAB, global_dim=GLOBAL_DIM, thumb_size=stored)
    MFSR(MFSRConfig(**TINY, recon_size=16), vocab_size=VOCAB, global_dim=GLOBAL_DIM, thumb_size=48)  # 3x3 blocks
    with pytest.raises(ValueError, match="power of two"):
        tiny_model(recon_size=4)
    with pytest.raises(ValueError, match="recon_size"):
        MFSRConfig(**TINY, recon_size=-1)


def test_demo_defaults_keep_the_paper_defaults_elsewhere():
    from lighthead.heads.build import make_config

    demo, coco = make_config(MFSRConfig, {}, "demo"), make_config(MFSRConfig, {}, "coco")
    assert (demo.recon_size, demo.embed_dim, demo.part_dim, demo.gru_layers) == (32, 192, 64, 1)
    assert (coco.recon_size, coco.embed_dim, coco.gru_layers, coco.gen_width) == (0, 3072, 4, 64)


def test_optimizers_split_the_parameters():
    model = tiny_model()
    (main, _), (disc, _) = model.optimizers()
    ids = lambda opt: {id(p) for grp in opt.param_groups for p in grp["params"]}  # noqa: E731
    assert not ids(main) & ids(disc)
    assert ids(main) | ids(disc) == {id(p) for p in model.parameters()}
    assert ids(disc) == {id(p) for p in model.discriminator_parameters()}
    assert len(tiny_model(img_re=False).optimizers()) == 1


def test_gradient_reaches_every_parameter():
    model = tiny_model().train()
    out = model.loss(tiny_batch())
    assert set(out) == {"loss", "semantic", "modal", "specific", "generator", "discriminator", "caption"}
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


VARIANTS = ["mfsr", "mfsr-base", "mfsr-mo", "mfsr-sp", "mfsr-mo-sp", "mfsr-mo-sp-img", "mfsr-mo-sp-cap"]


@pytest.mark.parametrize(
    "switches",
    [MFSRConfig.from_name(v, **TINY) for v in VARIANTS]
    + [MFSRConfig(**TINY, **{t: False}) for t in LOSS_TERMS]
    + [MFSRConfig(**TINY, **{t: t == on for t in LOSS_TERMS}) for on in LOSS_TERMS],
    ids=VARIANTS + [f"no-{t}" for t in LOSS_TERMS] + [f"only-{t}" for t in LOSS_TERMS],
)
def test_every_switch_runs(switches):
    torch.manual_seed(0)
    model = MFSR(switches, vocab_size=VOCAB, global_dim=GLOBAL_DIM, thumb_size=THUMB).train()
    out = model.loss(tiny_batch())
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is None}
    # switched-off parts are not built at all; only a lone reconstruction term leaves the
    # other modality's encoder untouched
    untouched = {"img_re": {"text", "sep_l"}, "cap_re": {"image_fc", "sep_v"}}
    alone = [t for t in LOSS_TERMS if getattr(switches, t)]
    assert missing == (untouched.get(alone[0], set()) if len(alone) == 1 else set()), missing


def test_invalid_configs():
    with pytest.raises(ValueError):
        MFSRConfig(**TINY, separation=False)  # VSE++ has no parts for the other terms
    with pytest.raises(ValueError):
        MFSRConfig(**TINY, **{t: False for t in LOSS_TERMS})
    with pytest.raises(ValueError):
        MFSR(MFSRConfig(**TINY), vocab_size=VOCAB, global_dim=GLOBAL_DIM, thumb_size=48)
    model = tiny_model()
    batch = tiny_batch()
    batch["thumb"] = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="16x16"):
        model.loss(batch)


def test_loss_goes_down_on_a_batch_with_signal():
    torch.manual_seed(0)
    model = tiny_model(lr=4e-3, disc_lr=4e-3).train()
    b = 8
    ids = torch.randint(1, VOCAB, (b, 5))
    batch = {  # each image's global vector and thumbnail follow its caption's words
        "global": torch.nn.functional.one_hot(ids[:, 0], VOCAB).float() @ torch.randn(VOCAB, GLOBAL_DIM),
        "thumb": (ids[:, :3, None, None].float() * 8).expand(b, 3, 16, 16).to(torch.uint8),
        "word_ids": ids,
        "text_len": torch.full((b,), 5),
        "image_index": torch.arange(b),
    }
    opts = model.optimizers()
    history = []
    for _ in range(20):
        out = model.loss(batch)
        for opt, _ in opts:
            opt.zero_grad()
        out["loss"].backward()
        for opt, _ in opts:
            opt.step()
        history.append({k: v.item() for k, v in out.items()})
    first, last = history[0], history[-1]
    retrieval_terms = ("semantic", "modal", "specific", "caption")  # the GAN terms need not fall
    assert sum(last[t] for t in retrieval_terms) < 0.8 * sum(first[t] for t in retrieval_terms)
    for term, ratio in (("semantic", 0.8), ("caption", 0.9), ("modal", 0.5), ("specific", 0.6)):
        assert last[term] < ratio * first[term], (term, first[term], last[term])
