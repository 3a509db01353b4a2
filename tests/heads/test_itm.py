"""ITM: the IoU alignment target, the paper's equations per sample with loops vs the batched
head, the auxiliary losses, and every ablation row of Table 6."""

from __future__ import annotations

import math

import pytest
import torch

from lighthead.heads.itm import Itm, ItmConfig, alignment_target

RD, TD, D, HEADS, FF, K = 12, 10, 8, 2, 16, 6


def tiny(**kw) -> Itm:
    torch.manual_seed(0)
    return Itm(ItmConfig(**{"d": D, "heads": HEADS, "ff": FF, "k": K, **kw}), region_dim=RD, token_dim=TD).eval()


def make_batch(b: int = 5, regions: int = 8, length: int = 5, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, regions, 2, generator=g) * 40
    wh = 10 + torch.rand(b, regions, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + wh], -1)  # (B, R, 4)
    lengths = torch.tensor([length, 3, 1, 4, 2][:b])
    target_box = boxes[:, 1].clone()  # region 1 matches exactly: some mass above 0.5
    target_box[2] = torch.tensor([500.0, 500.0, 520.0, 520.0])  # nothing overlaps: all-zero row
    return {
        "regions": torch.randn(b, regions, RD, generator=g),
        "boxes": boxes,
        "tokens": torch.randn(b, length, TD, generator=g),
        "text_mask": torch.arange(length)[None] < lengths[:, None],
        "label": torch.randint(0, 3, (b,), generator=g),
        "relevance": torch.tensor([1, 0, 1, 1, -1][:b]),  # -1: not annotated
        "target_box": target_box,
        "has_box": torch.tensor([True, False, True, True, False][:b]),
    }


# -- the alignment target ------------------------------------------------------------------

def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_alignment_target_matches_loops():
    batch = make_batch()
    got, nonzero = alignment_target(batch["boxes"], batch["target_box"], 0.5)
    for b in range(5):
        ious = [iou(batch["boxes"][b, i].tolist(), batch["target_box"][b].tolist()) for i in range(8)]
        kept = [x if x > 0.5 else 0.0 for x in ious]
        total = sum(kept)
        want = [x / total if total else 0.0 for x in kept]
        torch.testing.assert_close(got[b], torch.tensor(want), atol=1e-6, rtol=1e-5)
        assert bool(nonzero[b]) == (total > 0)
    assert not nonzero[2] and got[2].abs().sum() == 0  # the all-zero row stays zero, flagged


def test_alignment_target_threshold_is_strict():
    target = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 20.0],  # IoU exactly 0.5: dropped
                           [0.0, 0.0, 10.0, 19.0],  # 100 / 190: kept
                           [0.0, 0.0, 10.0, 10.0],  # 1.0: kept
                           [50.0, 50.0, 60.0, 60.0]]])  # 0: dropped
    a, ok = alignment_target(boxes, target, 0.5)
    s = 100 / 190 + 1.0
    torch.testing.assert_close(a[0], torch.tensor([0.0, (100 / 190) / s, 1.0 / s, 0.0]))
    assert ok.tolist() == [True] and abs(float(a.sum()) - 1) < 1e-6


# -- the forward pass, per sample with loops -----------------------------------------------

def ref_cross(block, q: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-attention block written out: per head softmax(q_h k_h^T / sqrt(d_h)) v_h,
    residual + LayerNorm, feed-forward, residual + LayerNorm. q (Q, D), kv (S, D)."""
    mha = block.attn
    wq, wk, wv = mha.in_proj_weight.split(D)
    bq, bk, bv = mha.in_proj_bias.split(D)
    dh = D // HEADS
    heads_out, weights = [], torch.zeros(q.shape[0], kv.shape[0])
    for h in range(HEADS):
        sl = slice(h * dh, (h + 1) * dh)
        qh, kh, vh = (q @ wq.T + bq)[:, sl], (kv @ wk.T + bk)[:, sl], (kv @ wv.T + bv)[:, sl]
        w = torch.zeros(q.shape[0], kv.shape[0])
        for i in range(q.shape[0]):
            s = [float(qh[i] @ kh[j]) / math.sqrt(dh) for j in range(kv.shape[0])]
            e = [math.exp(x - max(s)) for x in s]
            w[i] = torch.tensor([x / sum(e) for x in e])
        heads_out.append(w @ vh)
        weights += w / HEADS  # D: the average over heads
    attended = torch.cat(heads_out, -1) @ mha.out_proj.weight.T + mha.out_proj.bias
    x = block.norm1(q + attended)
    return block.norm2(x + block.ff(x)), weights


def ln(x: torch.Tensor, norm) -> torch.Tensor:
    """The input LayerNorm written out (identity when `input_norm` is off): per row,
    (x - mean) / sqrt(biased var + eps) * weight + bias."""
    if not isinstance(norm, torch.nn.LayerNorm):
        return x
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def reference(head: Itm, batch: dict, b: int) -> dict:
    n = int(batch["text_mask"][b].sum())
    h_t = ln(head.token_proj(batch["tokens"][b, :n]), head.token_norm)  # (n, D), real tokens only
    h_v = head.image_layer(ln(head.region_proj(batch["regions"][b, :K]), head.region_norm)[None])[0]  # (K, D)
    h_v1, _ = ref_cross(head.coarse_layer, h_v, h_t)  # Eq. 1
    pooled = torch.stack([h_v1[:, c].max() for c in range(D)])  # max-pooling over regions
    p = 1 / (1 + math.exp(-float(head.relevance_out.weight[0] @ pooled + head.relevance_out.bias)))  # Eq. 2
    h_v2 = p * h_v1  # Eq. 4
    h_t1, dist = ref_cross(head.fine_layer, h_t[:1], h_v2)  # Eq. 5, first token as the query
    h = head.fusion_layer(torch.cat([h_t1, h_t])[None])[0]  # Eq. 7
    return {"logits": head.classifier(h[0]), "relevance": p, "align": dist[0]}


@pytest.mark.parametrize("input_norm", [True, False])
def test_equations_match_loops(input_norm):
    head, batch = tiny(input_norm=input_norm), make_batch()
    if input_norm:  # non-trivial affine parameters, so the reference must apply them
        with torch.no_grad():
            for norm in (head.region_norm, head.token_norm):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    else:
        assert isinstance(head.region_norm, torch.nn.Identity) and isinstance(head.token_norm, torch.nn.Identity)
    with torch.no_grad():
        out = head.explain(batch)
        for b in range(5):
            ref = reference(head, batch, b)
            torch.testing.assert_close(out["logits"][b], ref["logits"], atol=1e-5, rtol=1e-4)
            assert abs(float(out["relevance"][b]) - ref["relevance"]) < 1e-5
            torch.testing.assert_close(out["align"][b], ref["align"], atol=1e-5, rtol=1e-4)
    assert out["align"].shape == (5, K)  # only the first k regions are read


def test_padded_regions_are_ignored():
    head, batch = tiny(k=12), make_batch()  # k above the 8 stored regions: nothing is cut
    padded = dict(batch, region_mask=torch.ones(5, 10, dtype=torch.bool))
    padded["regions"] = torch.cat([batch["regions"], 50 * torch.randn(5, 2, RD)], 1)  # padding rows hold junk
    padded["boxes"] = torch.cat([batch["boxes"], torch.zeros(5, 2, 4)], 1)
    padded["region_mask"][:, 8:] = False
    with torch.no_grad():
        base, pad = head.explain(batch), head.explain(padded)
    torch.testing.assert_close(pad["logits"], base["logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pad["relevance"], base["relevance"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pad["align"][:, :8], base["align"], atol=1e-5, rtol=1e-4)
    assert pad["align"][:, 8:].abs().max() == 0


def test_aux_losses_match_loops():
    head, batch = tiny(), make_batch()
    with torch.no_grad():
        out = head.explain(batch)
        got = head.aux_losses(out, batch)
        a, _ = alignment_target(batch["boxes"][:, :K], batch["target_box"], 0.5)
    # relevance: binary cross-entropy over annotated samples (relevance >= 0)
    terms = []
    for b in range(5):
        y, p = int(batch["relevance"][b]), float(out["relevance"][b])
        if y >= 0:
            terms.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    assert abs(float(got["re"]) - sum(terms) / len(terms)) < 1e-5
    # alignment: KL(A || D) averaged over related samples with a box and a nonzero target row
    kls = []
    for b in range(5):
        if batch["has_box"][b] and a[b].sum() > 0:
            kls.append(sum(float(a[b, i]) * math.log(float(a[b, i]) / float(out["align"][b, i]))
                           for i in range(K) if a[b, i] > 0))
    assert len(kls) == 2  # samples 0 and 3: 1 and 4 have no box, 2 has an all-zero row
    assert abs(float(got["att"]) - sum(kls) / len(kls)) < 1e-5


def test_loss_phases_and_optimizers():
    head, batch = tiny(), make_batch()
    with torch.no_grad():
        main = head.loss(batch)
        aux = head.loss(dict(batch, phase="aux"))
    assert set(main) == {"loss", "ce"} and set(aux) == {"loss", "re", "att"}
    assert abs(aux["loss"].item() - (1.0 * aux["re"].item() + 0.5 * aux["att"].item())) < 1e-6
    opts = head.optimizers()
    assert [o.param_groups[0]["lr"] for o, _ in opts] == [1e-5, 1e-6]
    assert head.optimizer_index(batch) == 0 and head.optimizer_index(dict(batch, phase="aux")) == 1


def test_aux_batch_without_annotations_is_zero_not_nan():
    head = tiny().train()
    batch = dict(make_batch(), phase="aux")
    batch["relevance"] = torch.full((5,), -1)
    batch["has_box"] = torch.zeros(5, dtype=torch.bool)
    out = head.loss(batch)
    assert out["loss"].item() == 0.0
    out["loss"].backward()  # still a graph


TABLE6 = {
    "ITM": {},
    "w/o RE": {"relevance": False},
    "w/o ATT": {"attention": False},
    "w/o RE & ATT": {"relevance": False, "attention": False},
    "w/o Coarse": {"coarse": False},
    "w/o Fine": {"fine": False},
    "w/o Coarse & Fine": {"coarse": False, "fine": False},
}


@pytest.mark.parametrize("row", list(TABLE6))
def test_every_ablation_trains(row):
    head = tiny(**TABLE6[row]).train()
    batch = make_batch()
    total = head.loss(batch)["loss"] + head.loss(dict(batch, phase="aux"))["loss"]
    assert torch.isfinite(total)
    total.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{row}: {name}"
        assert p.grad.abs().sum() > 0, f"{row}: {name} gets no gradient"
    with torch.no_grad():
        out = head.eval().explain(batch)
    if not head.cfg.coarse:
        assert torch.equal(out["relevance"], torch.ones(5))
        assert not head.cfg.use_relevance_loss
    if not head.cfg.fine:
        torch.testing.assert_close(out["align"], torch.full((5, K), 1 / K))
        assert not head.cfg.use_attention_loss


def test_config_defaults_and_validation():
    cfg = ItmConfig()
    got = (cfg.k, cfg.lambda_re, cfg.lambda_att, cfg.batch_size, cfg.epochs, cfg.iou_threshold)
    assert got == (100, 1.0, 0.5, 32, 10, 0.5)
    assert (cfg.lr, cfg.aux_lr) == (1e-5, 1e-6)
    assert cfg.input_norm  # the LayerNorm on the projected inputs is on by default
    assert not ItmConfig(coarse=False).use_relevance_loss and not ItmConfig(fine=False).use_attention_loss
    with pytest.raises(ValueError):
        ItmConfig(d=10, heads=3)
    with pytest.raises(ValueError):
        ItmConfig(iou_threshold=1.0)
    assert ItmConfig.DATASET_DEFAULTS["demo"]["text"].startswith("text/")
