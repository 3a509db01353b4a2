"""ITM against the authors' released code written out (tests/heads/itm_reference.py): the
forward pass and the auxiliary losses for every switch value and every ablation row of Table 6,
the BertAdam update and the warm-up schedule step by step, the defaults pinned to the released
values, and the IoU alignment target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.heads.itm import RECIPES, Itm, ItmConfig, alignment_target
from lighthead.heads.optim import BertAdam, attach_schedule, schedule_factor, schedule_total
from tests.heads import itm_reference as ref

RD, TD, D, HEADS, FF, K = 12, 10, 8, 2, 16, 6


def tiny(train_samples: int = 0, **kw) -> Itm:
    torch.manual_seed(0)
    cfg = ItmConfig(**{"d": D, "heads": HEADS, "ff": FF, "k": K, **kw})
    return Itm(cfg, region_dim=RD, token_dim=TD, train_samples=train_samples).eval()


def shaken(**kw) -> Itm:
    """A tiny head whose every parameter is moved well away from its initialisation (BERT's
    N(0, 0.02) would leave every layer nearly linear), so a wrong formula shows."""
    head = tiny(**kw)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return head


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


def at_half(batch: dict) -> dict:
    """Sample 0 with integer boxes around its target: IoU exactly 1, 0.5 (kept by the release's
    >= 0.5, dropped by the paper's > 0.5) and 100 / 190."""
    batch = dict(batch, boxes=batch["boxes"].clone(), target_box=batch["target_box"].clone())
    batch["target_box"][0] = torch.tensor([0.0, 0.0, 10.0, 10.0])
    batch["boxes"][0, :3] = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 19.0]])
    return batch


@pytest.mark.parametrize("inclusive", [True, False])
def test_alignment_target_matches_the_released_labels(inclusive):
    batch = at_half(make_batch())
    got, nonzero = alignment_target(batch["boxes"], batch["target_box"], 0.5, inclusive)
    for b in range(5):
        want = ref.box_labels(batch["boxes"][b].double(), [batch["target_box"][b].tolist()], 0.5, inclusive)
        torch.testing.assert_close(got[b].double(), want, atol=1e-6, rtol=1e-5)
        assert bool(nonzero[b]) == bool(want.sum() > 0)
    assert not nonzero[2] and got[2].abs().sum() == 0  # the all-zero row stays zero, flagged
    s = 1.0 + (0.5 if inclusive else 0.0) + 100 / 190
    torch.testing.assert_close(got[0, :3], torch.tensor([1.0, 0.5 if inclusive else 0.0, 100 / 190]) / s)


def test_released_iou_rule_is_the_default_and_the_papers_is_a_switch():
    """boxes_utils.get_attention_label keeps IoU >= 0.5; the paper keeps IoU "larger than 0.5"."""
    batch = at_half(make_batch())
    assert ItmConfig().iou_inclusive is True and ItmConfig(recipe="paper").iou_inclusive is False
    released, _ = tiny().alignment_target(batch)
    paper, _ = tiny(iou_inclusive=False).alignment_target(batch)
    assert float(released[0, 1]) > 0 and float(paper[0, 1]) == 0.0


# -- the forward pass against the released code written out --------------------------------

# One switch at a time away from the released defaults, then the paper's recipe as a whole.
OPTIONS = {
    "released": {},
    "layer_type=transformer": {"layer_type": "transformer"},
    "relevance_head=max_pool": {"relevance_head": "max_pool"},
    "alignment=mean_probs": {"alignment": "mean_probs"},
    "fine_query=first": {"fine_query": "first"},
    "classifier=linear": {"classifier": "linear"},
    "init=torch": {"init": "torch"},
    "region_scale=stored": {"region_scale": "stored"},
    "input_norm=true": {"input_norm": True},
    "recipe=paper": {"recipe": "paper"},
    "recipe=paper, layer_type=bert": {"recipe": "paper", "layer_type": "bert"},
}
TABLE6 = {
    "ITM": {},
    "w/o RE": {"relevance": False},
    "w/o ATT": {"attention": False},
    "w/o RE & ATT": {"relevance": False, "attention": False},
    "w/o Coarse": {"coarse": False},
    "w/o Fine": {"fine": False},
    "w/o Coarse & Fine": {"coarse": False, "fine": False},
}


def check_against_reference(head: Itm, batch: dict) -> dict:
    with torch.no_grad():
        out = head.explain(batch)
        for b in range(len(batch["label"])):
            want = ref.forward(head, batch, b)
            torch.testing.assert_close(out["logits"][b].double(), want["logits"], atol=1e-5, rtol=1e-4)
            assert abs(float(out["relevance"][b]) - want["relevance"]) < 1e-5
            torch.testing.assert_close(out["align"][b].double(), want["align"], atol=1e-5, rtol=1e-4)
    return out


@pytest.mark.parametrize("option", list(OPTIONS))
def test_forward_matches_the_released_code(option):
    out = check_against_reference(shaken(**OPTIONS[option]), make_batch())
    assert out["align"].shape == (5, K)  # only the first k regions are read


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("row", [r for r in TABLE6 if r != "ITM"])
def test_every_ablation_matches_the_reference(row, recipe):
    head = shaken(recipe=recipe, **TABLE6[row])
    out = check_against_reference(head, make_batch())
    if not head.cfg.coarse:
        assert torch.equal(out["relevance"], torch.ones(5)) and not head.cfg.use_relevance_loss
        assert not hasattr(head, "coarse_layer")
    if not head.cfg.fine:
        torch.testing.assert_close(out["align"], torch.full((5, K), 1 / K))
        assert not head.cfg.use_attention_loss and not hasattr(head, "fine_layer")
    parts = head.aux_losses(out, make_batch())
    assert (float(parts["re"]) == 0.0) == (not head.cfg.use_relevance_loss)
    assert (float(parts["att"]) == 0.0) == (not head.cfg.use_attention_loss)


def test_released_forms_differ_from_the_paper_forms():
    """Each switch changes the function (a reference that ignored one would still pass). The
    regions keep their stored scale here: scaled to a unit matrix they move D too little to tell
    the alignment forms apart."""
    batch = make_batch()
    with torch.no_grad():
        base = shaken(region_scale="stored").explain(batch)
        for name in ("layer_type=transformer", "fine_query=first", "classifier=linear"):
            other = shaken(region_scale="stored", **OPTIONS[name]).explain(batch)
            assert (other["logits"] - base["logits"]).abs().max() > 1e-3, name
        probs = shaken(region_scale="stored", alignment="mean_probs").explain(batch)["align"]
        assert (probs - base["align"]).abs().max() > 1e-3
        scaled = shaken().explain(batch)  # the released matrix norm
        assert (scaled["logits"] - base["logits"]).abs().max() > 1e-3


@pytest.mark.parametrize("option", ["released", "recipe=paper"])
def test_padded_regions_are_ignored(option):
    head, batch = tiny(k=12, **OPTIONS[option]), make_batch()  # k above the 8 stored regions: nothing is cut
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


# -- losses ----------------------------------------------------------------------------------


def annotated_batch() -> dict:
    """An auxiliary batch as the released code sees one: every row annotated, a region of row 0
    at IoU exactly 0.5 with its box."""
    batch = at_half(make_batch())
    batch["relevance"] = torch.tensor([1, 0, 1, 1, 0])
    batch["has_box"] = torch.tensor([True, False, True, True, False])
    return batch


@pytest.mark.parametrize("option", [{}, {"att_loss": "related"}, {"recipe": "paper"}, {"relevance_head": "max_pool"}])
def test_aux_losses_match_the_reference(option):
    head, batch = shaken(**option), annotated_batch()
    with torch.no_grad():
        out = head.explain(batch)
        got = head.aux_losses(out, batch)
        # the released box_labels, from the boxes alone: none for a target without a box
        targets = torch.stack(
            [
                ref.box_labels(
                    batch["boxes"][b, :K].double(),
                    [batch["target_box"][b].tolist()] if batch["has_box"][b] else [],
                    0.5,
                    head.cfg.iou_inclusive,
                )
                for b in range(5)
            ]
        )
        want = ref.aux_losses(head, batch, [ref.forward(head, batch, b) for b in range(5)], targets)
    assert int((targets.sum(1) > 0).sum()) == 2  # rows 0 and 3; row 2's box overlaps nothing
    assert abs(float(got["re"]) - want["re"]) < 1e-5
    assert abs(float(got["att"]) - want["att"]) < 1e-5
    assert float(got["att"]) > 0


def test_unannotated_rows_count_in_no_loss():
    head, batch = shaken(), annotated_batch()
    partly = dict(batch, relevance=torch.tensor([1, 0, 1, 1, -1]))  # the last row has no annotation
    with torch.no_grad():
        full = head.aux_losses(head.explain(batch), batch)
        part = head.aux_losses(head.explain(partly), partly)
    # L_ATT: the same KL sum over 4 annotated rows instead of 5
    assert abs(float(part["att"]) - float(full["att"]) * 5 / 4) < 1e-6


def test_loss_phases_and_optimizer_for():
    head, batch = tiny(), make_batch()
    with torch.no_grad():
        main = head.loss(batch)
        aux = head.loss(dict(batch, phase="aux"))
    assert set(main) == {"loss", "ce"} and set(aux) == {"loss", "re", "att"}
    assert abs(aux["loss"].item() - (1.0 * aux["re"].item() + 0.5 * aux["att"].item())) < 1e-6
    assert head.optimizer_for(batch) == 0 and head.optimizer_for(dict(batch, phase="aux")) == 1


def test_aux_batch_without_annotations_is_zero_not_nan():
    head = tiny().train()
    batch = dict(make_batch(), phase="aux")
    batch["relevance"] = torch.full((5,), -1)
    batch["has_box"] = torch.zeros(5, dtype=torch.bool)
    out = head.loss(batch)
    assert out["loss"].item() == 0.0
    out["loss"].backward()  # still a graph


@pytest.mark.parametrize("row", list(TABLE6))
def test_every_ablation_gets_gradients_where_it_has_parameters(row):
    head = tiny(**TABLE6[row]).train()
    batch = make_batch()
    total = head.loss(batch)["loss"] + head.loss(dict(batch, phase="aux"))["loss"]
    total.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{row}: {name}"
        assert p.grad.abs().sum() > 0, f"{row}: {name} gets no gradient"


# -- optimiser and schedule ------------------------------------------------------------------


def test_schedule_length_is_the_released_count():
    # the released log: 3,179 Twitter-15 targets (more than the 1,176 ITM annotations), batch 32,
    # 9 epochs -> "Num steps = 894"
    assert schedule_total(3179, 1176, 32, 9) == 894
    assert schedule_total(100, 3562, 32, 9) == int(3562 / 32 * 9)
    head = Itm(ItmConfig(d=D, heads=HEADS, ff=FF, k=K), RD, TD, train_samples=3179, aux_train_samples=1176)
    assert head.schedule_steps() == (894, 894)
    head.cfg.aux_every = 2
    assert head.schedule_steps() == (894, 447)
    with pytest.raises(ValueError, match="train_samples"):
        tiny().optimizers()  # a schedule without the training-set size
    assert len(tiny(schedule="constant").optimizers()) == 2


@pytest.mark.parametrize("schedule", ["warmup_linear_twice", "warmup_linear", "constant"])
def test_rate_per_step_matches_the_released_loop(schedule):
    """train_samples 64, batch 32, 5 epochs -> T = 10 steps; two more steps than T as the
    released loop runs (its T truncates, its loader does not)."""
    head = tiny(train_samples=64, epochs=5, schedule=schedule)
    main, aux = head.optimizers()
    seen = {0: [], 1: []}
    for _ in range(12):
        for i, (opt, _) in enumerate((main, aux)):
            for p in head.parameters():
                p.grad = torch.ones_like(p)
            opt.step()
            seen[i].append(opt.param_groups[0]["lr"])
    for i, base in ((0, 1e-5), (1, 1e-6)):
        if schedule == "warmup_linear_twice":
            want = ref.released_lrs(base, 10, 0.1, 12)
        elif schedule == "warmup_linear":
            want = [base * ref.warmup_linear(s / 10, 0.1) for s in range(12)]
        else:
            want = [base] * 12
        np.testing.assert_allclose(seen[i], want, rtol=1e-12, atol=0)
    assert seen[0][0] == 0.0 if schedule != "constant" else seen[0][0] == 1e-5


def test_schedule_resumes_from_the_optimizer_state():
    head = tiny(train_samples=64, epochs=5)
    opt, _ = head.optimizers()[0]
    for _ in range(4):
        for p in head.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
    state = opt.state_dict()
    fresh, _ = head.optimizers()[0]
    fresh.load_state_dict(state)
    for p in head.parameters():
        p.grad = torch.ones_like(p)
    fresh.step()
    assert fresh.param_groups[0]["lr"] == pytest.approx(ref.released_lrs(1e-5, 10, 0.1, 5)[4], rel=1e-12)


def test_bertadam_matches_the_released_update():
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)), rng.normal(size=(4,))]
    grads = [[rng.normal(size=(3, 4)) * (5.0 if s % 2 else 0.1), rng.normal(size=(4,)) * 0.2] for s in range(6)]
    lrs = ref.released_lrs(1e-2, 5, 0.1, 6)
    want = ref.bertadam_run(start, grads, [0.01, 0.0], lrs)
    params = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float32)) for x in start]
    opt = BertAdam(
        [{"params": [params[0]], "weight_decay": 0.01}, {"params": [params[1]], "weight_decay": 0.0}], lr=1e-2
    )
    attach_schedule(opt, schedule_factor("warmup_linear_twice", 0.1), 5)
    for step in range(6):
        for p, g in zip(params, grads[step]):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.detach().double().numpy(), w, atol=1e-6, rtol=1e-5)
    # a torch AdamW (bias correction, eps 1e-8, no per-tensor clip) would not land there
    assert np.abs(params[0].detach().numpy() - start[0]).max() > 1e-4


def test_weight_decay_spares_biases_and_layernorms():
    head = tiny(train_samples=64, input_norm=True)
    opt, _ = head.optimizers()[0]
    assert isinstance(opt, BertAdam)
    decay, exempt = opt.param_groups
    names = {id(p): n for n, p in head.named_parameters()}
    exempt_names = {names[id(p)] for p in exempt["params"]}
    assert exempt["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    assert all(n.endswith("bias") or "norm" in n for n in exempt_names)
    assert {"region_norm.weight", "image_layer.layer.norm1.weight", "classifier.bias"} <= exempt_names
    assert "classifier.weight" in {names[id(p)] for p in decay["params"]}
    assert len(decay["params"]) + len(exempt["params"]) == len(list(head.parameters()))
    paper, _ = tiny(recipe="paper").optimizers()[0]
    assert isinstance(paper, torch.optim.AdamW) and paper.param_groups[0]["lr"] == 1e-5


def test_bert_init():
    torch.manual_seed(0)
    head = Itm(ItmConfig(d=64, heads=4, ff=128, k=K), RD, TD)
    w = head.fusion_layer.layer.self_attn.in_proj_weight
    assert abs(float(w.detach().std()) - 0.02) < 0.002 and float(head.classifier.bias.detach().abs().max()) == 0.0
    assert abs(float(head.region_proj.weight.detach().std()) - 0.02) < 0.003
    torch_init = Itm(ItmConfig(d=64, heads=4, ff=128, k=K, init="torch"), RD, TD)
    assert float(torch_init.classifier.bias.detach().abs().max()) > 0


# -- defaults --------------------------------------------------------------------------------

RELEASED = {  # NUSTM/ITM train.py, model.py, modeling_utils.py; TomBERT's BertAdam
    "recipe": "code",
    "layer_type": "bert",
    "relevance_head": "per_region",
    "alignment": "mean_scores",
    "fine_query": "pooler",
    "classifier": "pooler",
    "att_loss": "batch",
    "optimizer": "bertadam",
    "schedule": "warmup_linear_twice",
    "warmup": 0.1,
    "init": "bert",
    "epochs": 9,
    "lr": 1e-5,
    "aux_lr": 1e-6,
    "weight_decay": 0.01,
    "batch_size": 32,
    "lambda_re": 1.0,
    "lambda_att": 0.5,
    "k": 100,
    "d": 768,
    "heads": 12,
    "ff": 3072,
    "dropout": 0.1,
    "relevance_dropout": 0.3,
    "iou_threshold": 0.5,
    "aux_every": 1,
    "region_scale": "matrix_norm",
    "iou_inclusive": True,
    "grad_clip": 0.0,
    "input_norm": False,
    "relevance": True,
    "attention": True,
    "coarse": True,
    "fine": True,
}
PAPER = {
    "layer_type": "transformer",
    "relevance_head": "max_pool",
    "alignment": "mean_probs",
    "fine_query": "first",
    "classifier": "linear",
    "att_loss": "related",
    "optimizer": "adamw",
    "schedule": "constant",
    "init": "torch",
    "epochs": 10,
    "region_scale": "stored",
    "iou_inclusive": False,
}


def test_defaults_are_the_released_values():
    cfg = ItmConfig()
    assert {k: getattr(cfg, k) for k in RELEASED} == RELEASED
    head = Itm(cfg, region_dim=RD, token_dim=TD)
    assert isinstance(head.image_layer.layer.dropout, torch.nn.Identity)  # BERT: no inner FFN dropout
    assert head.image_layer.layer.activation_relu_or_gelu == 2  # GELU
    assert head.relevance_out.in_features == 100 and head.relevance_drop.p == 0.3
    assert head.fine_layer.attn.dropout == 0.1 and head.pooler_drop.p == 0.1


def test_paper_recipe_and_explicit_keys():
    cfg = ItmConfig(recipe="paper")
    assert {k: getattr(cfg, k) for k in PAPER} == PAPER
    mixed = ItmConfig(recipe="paper", optimizer="bertadam", epochs=3)  # an explicit key wins over the recipe
    assert mixed.optimizer == "bertadam" and mixed.epochs == 3 and mixed.schedule == "constant"
    assert ItmConfig.DATASET_DEFAULTS["demo"]["text"].startswith("text/")


@pytest.mark.parametrize(
    "bad",
    [
        {"recipe": "both"},
        {"alignment": "max"},
        {"schedule": "cosine"},
        {"d": 10, "heads": 3},
        {"iou_threshold": 1.0},
        {"warmup": 1.5},
        {"layer_type": "gpt"},
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        ItmConfig(**bad)
    assert not ItmConfig(coarse=False).use_relevance_loss and not ItmConfig(fine=False).use_attention_loss
