"""Optimisers and learning-rate schedules that heads declare in `optimizers()`.

The training loop steps an optimiser once per batch and a scheduler once per epoch, so a
schedule that changes the rate every step lives on the optimiser itself: `attach_schedule`
registers a step pre-hook that sets each group's rate from the group's own step counter
before the update, and a post-hook that counts the step. The counter and the base rate are
entries of the param group, so they are saved and restored with the optimiser's state_dict
(a resumed run continues the schedule where it stopped).

- `BertAdam`: the Adam variant of the original BERT code (pytorch-pretrained-bert's
  `optimization.BertAdam`, which the ITM authors' code imports): no bias correction,
  epsilon 1e-6 added to sqrt(v), the gradient of every parameter tensor clipped to norm 1 on
  its own, and weight decay added to the update (decoupled, scaled by the rate).
- `warmup_linear(x, warmup)`: that code's schedule of the training progress x = step / total:
  x / warmup while x < warmup, then 1 - x (it does not renormalise the decay to start at 1).
- `step_lr(opt, every, gamma)`: the rate x gamma every `every` epochs, a torch scheduler the loop
  steps once per epoch (VSE++, SCAN, CASC, MMCA and mFSR).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

SCHEDULES = ("warmup_linear_twice", "warmup_linear", "constant")


def step_lr(opt: torch.optim.Optimizer, every: int, gamma: float = 0.1) -> Any:
    """lr x gamma every `every` epochs, i.e. lr * gamma ** (epoch // every) (None when every == 0);
    the loop steps it once per epoch."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=gamma) if every > 0 else None


def warmup_linear(x: float, warmup: float) -> float:
    """The rate factor at training progress x (steps done / total steps)."""
    if x < warmup:
        return x / warmup
    return 1.0 - x


def schedule_factor(name: str, warmup: float) -> Callable[[float], float]:
    """Factor of the base rate at progress x for a named schedule.

    - "warmup_linear_twice": warmup_linear(x)^2. The ITM authors' loop sets each group's rate to
      base * warmup_linear(step / total) before every step, and their BertAdam multiplies the
      rate it is given by warmup_linear(its own step / total) again; both counters start at 0
      and advance together, so the rate applied is base * warmup_linear(x)^2.
    - "warmup_linear": base * warmup_linear(x), the schedule applied once.
    - "constant": base.
    """
    if name == "warmup_linear_twice":
        return lambda x: warmup_linear(x, warmup) ** 2
    if name == "warmup_linear":
        return lambda x: warmup_linear(x, warmup)
    if name == "constant":
        return lambda x: 1.0
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")


def attach_schedule(opt: torch.optim.Optimizer, factor: Callable[[float], float], total_steps: int) -> None:
    """Before every `opt.step()`, set each group's rate to its base rate times
    factor(steps done / total_steps); the count of steps done is kept in the group."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    for group in opt.param_groups:
        group.setdefault("base_lr", group["lr"])
        group.setdefault("schedule_step", 0)
        group["schedule_total"] = int(total_steps)

    def before(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor(group["schedule_step"] / group["schedule_total"])

    def after(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        for group in optimizer.param_groups:
            group["schedule_step"] += 1

    opt.register_step_pre_hook(before)
    opt.register_step_post_hook(after)


class BertAdam(torch.optim.Optimizer):
    """Adam as in the original BERT code (see the module docstring).

    Per parameter p with gradient g (g first clipped so that ||g|| <= max_grad_norm):
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        p = p - lr (m / (sqrt(v) + eps) + weight_decay p)
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        max_grad_norm: float = 1.0,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"BertAdam: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        super().__init__(
            params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        )

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["max_grad_norm"] > 0:  # each tensor on its own, as the BERT code does
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss


def schedule_total(samples: int, aux_samples: int, batch_size: int, epochs: int) -> int:
    """The ITM authors' count of optimisation steps: int(max(main, auxiliary training samples)
    / batch size * epochs), at least 1 (their log: 3,179 Twitter-15 targets, batch 32,
    9 epochs -> 894)."""
    return max(1, int(max(samples, aux_samples) / batch_size * epochs))
