"""Text-only baseline: padded batches agree with one unpadded sample at a time; it ignores images."""

from __future__ import annotations

import pytest
import torch

from lighthead.heads.text_only import TextOnly, TextOnlyConfig

TD, D = 10, 8


def tiny(**kw) -> TextOnly:
    torch.manual_seed(0)
    return TextOnly(TextOnlyConfig(d=D, heads=2, ff=16, **kw), token_dim=TD).eval()


def make_batch(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 2, 4])
    return {
        "tokens": torch.randn(3, 6, TD, generator=g),
        "text_mask": torch.arange(6)[None] < lengths[:, None],
        "label": torch.tensor([0, 1, 2]),
        "regions": torch.randn(3, 4, 16, generator=g),
    }


@pytest.mark.parametrize("pool", ["first", "mean"])
def test_batched_matches_one_sample_at_a_time(pool):
    head, batch = tiny(layers=2, pool=pool), make_batch()
    with torch.no_grad():
        logits = head(batch)
        for b in range(3):
            n = int(batch["text_mask"][b].sum())
            h = head.token_proj(batch["tokens"][b : b + 1, :n])  # no padding at all
            for layer in head.encoder:
                h = layer.layer(h)
            pooled = h[0, 0] if pool == "first" else h[0].sum(0) / n
            torch.testing.assert_close(logits[b], head.classifier(pooled), atol=1e-5, rtol=1e-4)


def test_ignores_the_image_and_its_loss_is_the_cross_entropy():
    head, batch = tiny(), make_batch()
    with torch.no_grad():
        logits = head(batch)
        torch.testing.assert_close(logits, head(dict(batch, regions=torch.zeros(3, 4, 16))))
        want = -sum(float(torch.log_softmax(logits[b], -1)[batch["label"][b]]) for b in range(3)) / 3
        assert abs(float(head.loss(batch)["loss"]) - want) < 1e-5  # eval: no dropout
    head.train()
    out = head.loss(batch)
    out["loss"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    ((opt, sched),) = head.optimizers()  # ITM's paper set-up: AdamW 1e-5, decay 0.01, no schedule
    assert isinstance(opt, torch.optim.AdamW) and sched is None
    assert opt.param_groups[0]["lr"] == 1e-5 and opt.param_groups[0]["weight_decay"] == 0.01


def test_config_validation():
    assert TextOnlyConfig().lr == 1e-5
    with pytest.raises(ValueError):
        TextOnlyConfig(pool="max")
    with pytest.raises(ValueError):
        TextOnlyConfig(d=10, heads=4)
