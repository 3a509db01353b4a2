"""Triplet and weighted BCE losses against the formulas written out with loops."""

from __future__ import annotations

import math

import pytest
import torch

from lighthead.heads.losses import label_pos_weight, positives_from_index, triplet_loss, weighted_bce


def _loop_triplet(s: torch.Tensor, pos: torch.Tensor, margin: float, hardest: bool) -> float:
    b = s.shape[0]
    total = 0.0
    for i in range(b):  # image i, positive caption i: caption negatives
        costs = [max(0.0, margin - s[i, i].item() + s[i, j].item()) for j in range(b) if not pos[i, j]]
        total += (max(costs) if costs else 0.0) if hardest else sum(costs)
    for j in range(b):  # caption j, positive image j: image negatives
        costs = [max(0.0, margin - s[j, j].item() + s[i, j].item()) for i in range(b) if not pos[i, j]]
        total += (max(costs) if costs else 0.0) if hardest else sum(costs)
    return total


@pytest.mark.parametrize("hardest", [True, False])
def test_triplet_matches_loops(hardest):
    g = torch.Generator().manual_seed(0)
    s = torch.rand(6, 6, generator=g)
    index = torch.tensor([0, 1, 1, 2, 3, 3])  # pairs 1,2 and 4,5 share an image
    pos = positives_from_index(index)
    got = triplet_loss(s, pos, margin=0.2, hardest=hardest)
    assert got.item() == pytest.approx(_loop_triplet(s, pos, 0.2, hardest), rel=1e-6)
    # without the shared-image mask, a sibling caption would count as a negative
    eye = torch.eye(6, dtype=torch.bool)
    assert triplet_loss(s, None, 0.2, hardest).item() == pytest.approx(_loop_triplet(s, eye, 0.2, hardest), rel=1e-6)


def test_triplet_known_value():
    s = torch.tensor([[0.9, 0.8], [0.1, 0.5]])
    # image 0: caption neg 0.8 -> 0.2 - 0.9 + 0.8 = 0.1; image 1: caption neg 0.1 -> 0
    # caption 0: image neg 0.1 -> 0; caption 1: image neg 0.8 -> 0.2 - 0.5 + 0.8 = 0.5
    assert triplet_loss(s).item() == pytest.approx(0.6)


def test_triplet_gradient_only_through_violations():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    triplet_loss(s).backward()
    assert torch.count_nonzero(s.grad) == 0  # margins satisfied: no gradient


def test_weighted_bce_formula():
    logits = torch.tensor([[0.3, -1.2, 2.0], [-0.5, 0.7, 0.1]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    w = torch.tensor([2.0, 3.0, 0.5])
    ref = 0.0
    for i in range(2):
        for c in range(3):
            p = 1 / (1 + math.exp(-logits[i, c].item()))
            ref -= w[c].item() * y[i, c].item() * math.log(p) + (1 - y[i, c].item()) * math.log(1 - p)
    assert weighted_bce(logits, y, w).item() == pytest.approx(ref / 6, rel=1e-6)


def test_label_pos_weight():
    w = label_pos_weight([1, 4, 0], n_samples=5)
    assert w[0].item() == pytest.approx(4.0) and w[1].item() == pytest.approx(0.25)
    assert w[2].item() == pytest.approx(1e4)
