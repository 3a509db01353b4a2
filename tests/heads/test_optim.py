"""The epoch schedule every retrieval head uses (`heads/optim.py`); BertAdam and the per-step
schedules are checked against the ITM code in test_itm.py."""

from __future__ import annotations

import pytest
import torch

from lighthead.heads.optim import step_lr


@pytest.mark.parametrize("every, gamma", [(3, 0.1), (2, 0.8)])
def test_step_lr_multiplies_the_rate_by_gamma_every_n_epochs(every, gamma):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = step_lr(opt, every, gamma)
    rates = []
    for _ in range(7):  # the loop: the epoch's steps, then the scheduler once
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([0.5 * gamma ** (epoch // every) for epoch in range(7)])


def test_step_lr_every_zero_is_no_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    assert step_lr(opt, 0) is None
