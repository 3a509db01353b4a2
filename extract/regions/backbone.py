"""ResNet "C4" with the Caffe conventions of the bottom-up-attention model.

- BatchNorm is frozen: an affine `x * scale + shift` from the stored statistics
  (`FrozenBatchNorm2d`), and `fold_frozen_bn` merges it into the preceding conv for speed.
- The stride of a downsampling bottleneck sits on its first 1x1 conv (MSRA/Caffe ResNet).
- The stem max-pool has no padding and rounds its output size up (Caffe ceil mode).
- `Res5` runs per ROI; in the Visual Genome model its first block keeps stride 1 and every
  3x3 conv is dilated by 2, so a 14x14 ROI stays 14x14.

Padding: a batch pads images to a common size. `ValidMask` zeroes everything outside an
image's own extent before each layer that looks at neighbours (3x3/7x7 convs, max-pool), so
the valid part of every map equals what the image alone would give: results do not depend on
the batch. Module names follow detectron2 (`stem.conv1`, `res2.0.conv1.norm`, ...), the
naming the checkpoints use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (eval mode only)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)


class ConvBN(nn.Conv2d):
    """A bias-free conv followed by a frozen BN (`.norm`), as detectron2's Conv2d(norm=...)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1, eps: float = 1e-5
    ):
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.norm: nn.Module = FrozenBatchNorm2d(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class ValidMask:
    """Per-image valid extent of a padded batch, tracked through the strides of the network.

    heights/widths: the valid size of each image at the current resolution (host ints; the
    RPN cuts its maps with them). `shared` maps an extent to its (2, B, 1, 1) copy on the
    device; the masks derived from one another by `after` share it, so that `upload` can copy
    every extent of a forward pass at once: a copy per masked layer would make the host wait
    each time (66 times per ResNet-101 forward on a GPU).
    """

    def __init__(
        self,
        heights: list[int],
        widths: list[int],
        shared: dict[tuple[tuple[int, ...], tuple[int, ...]], torch.Tensor] | None = None,
    ):
        self.heights = list(heights)
        self.widths = list(widths)
        self.shared = {} if shared is None else shared

    def key(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(self.heights), tuple(self.widths)

    def upload(self, masks: list[ValidMask], device: torch.device) -> None:
        """Copy the extents of `masks` (sharing this one's table) to `device` in one copy,
        non-blocking from page-locked memory on a GPU."""
        todo = {m.key(): m for m in masks if m.key() not in self.shared}
        if not todo:
            return
        host = torch.tensor([[m.heights, m.widths] for m in todo.values()], dtype=torch.int64)  # (M, 2, B)
        if device.type == "cuda":
            host = host.pin_memory()
        on_device = host.to(device, non_blocking=True)
        for key, hw in zip(todo, on_device):
            self.shared[key] = hw.reshape(2, -1, 1, 1)  # (2, B, 1, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Zero the padded area of x (B, C, H, W); a no-op when nothing is padded."""
        B, _, H, W = x.shape
        if all(h == H for h in self.heights) and all(w == W for w in self.widths):
            return x
        hw = self.shared.get(self.key())
        if hw is None or hw.device != x.device:  # not uploaded with the others: copy it alone
            self.shared.pop(self.key(), None)
            self.upload([self], x.device)
            hw = self.shared[self.key()]
        rows = torch.arange(H, device=x.device).reshape(1, H, 1)
        cols = torch.arange(W, device=x.device).reshape(1, 1, W)
        mask = ((rows < hw[0]) & (cols < hw[1])).unsqueeze(1)  # (B, 1, H, W)
        return x * mask.to(x.dtype)

    def after(self, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False) -> ValidMask:
        """The valid extent after a conv/pool layer with these parameters."""

        def out(n: int) -> int:
            span = n + 2 * padding - dilation * (kernel - 1) - 1
            if ceil:
                o = -(-span // stride) + 1
                if (o - 1) * stride >= n + padding:  # the last window must start inside the input
                    o -= 1
                return o
            return span // stride + 1

        return ValidMask([out(h) for h in self.heights], [out(w) for w in self.widths], self.shared)


class Bottleneck(nn.Module):
    """1x1 (stride here) -> 3x3 (dilated) -> 1x1, with a projection shortcut when shapes change."""

    def __init__(self, cin: int, bottleneck: int, cout: int, stride: int = 1, dilation: int = 1, eps: float = 1e-5):
        super().__init__()
        self.stride = stride
        self.dilation = dilation
        self.shortcut = ConvBN(cin, cout, 1, stride=stride, eps=eps) if (cin != cout or stride != 1) else None
        self.conv1 = ConvBN(cin, bottleneck, 1, stride=stride, eps=eps)
        self.conv2 = ConvBN(bottleneck, bottleneck, 3, padding=dilation, dilation=dilation, eps=eps)
        self.conv3 = ConvBN(bottleneck, cout, 1, eps=eps)

    def forward(self, x: torch.Tensor, valid: ValidMask | None = None) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        if valid is not None:
            # 1x1 convs read no neighbours; only the 3x3 must see zeros past the image edge.
            valid = valid.after(1, self.stride, 0)
            out = valid.apply(out)
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


def make_stage(n: int, cin: int, bottleneck: int, cout: int, stride: int, dilation: int, eps: float) -> nn.Sequential:
    blocks = [Bottleneck(cin, bottleneck, cout, stride=stride, dilation=dilation, eps=eps)]
    blocks += [Bottleneck(cout, bottleneck, cout, dilation=dilation, eps=eps) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class Stem(nn.Module):
    """7x7/2 conv + frozen BN + ReLU + 3x3/2 max-pool (pad 0, ceil mode: Caffe)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.conv1 = ConvBN(3, channels, 7, stride=2, padding=3, eps=eps)

    def forward(self, x: torch.Tensor, valid: ValidMask | None = None) -> tuple[torch.Tensor, ValidMask | None]:
        x = F.relu(self.conv1(x))
        if valid is not None:
            valid = valid.after(7, 2, 3)
            x = valid.apply(x)  # post-ReLU zeros never win a max, so padding stays neutral
            valid = valid.after(3, 2, 0, ceil=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True), valid


class ResNetC4(nn.Module):
    """Stem + res2..res4 (stride 16): the trunk shared by the RPN and the ROI pooling."""

    def __init__(self, blocks: tuple[int, int, int], width: int, stem_channels: int, res2_out: int, eps: float = 1e-5):
        super().__init__()
        self.stem = Stem(stem_channels, eps)
        self.res2 = make_stage(blocks[0], stem_channels, width, res2_out, 1, 1, eps)
        self.res3 = make_stage(blocks[1], res2_out, width * 2, res2_out * 2, 2, 1, eps)
        self.res4 = make_stage(blocks[2], res2_out * 2, width * 4, res2_out * 4, 2, 1, eps)

    def forward(
        self, x: torch.Tensor, heights: list[int] | None = None, widths: list[int] | None = None
    ) -> tuple[torch.Tensor, ValidMask | None]:
        """x: (B, 3, H, W) padded batch; heights/widths: each image's true size (None: unpadded).

        Returns res4 (B, 4*res2_out, H/16, W/16) and the valid extent of each image in it.
        """
        valid = ValidMask(heights, widths) if heights is not None else None
        if valid is not None:
            valid.upload(self.extents(valid), x.device)  # every extent masked below, in one copy
            x = valid.apply(x)  # the 7x7 stem conv must see zeros past the image edge
        x, valid = self.stem(x, valid)
        for stage in (self.res2, self.res3, self.res4):
            for block in stage:
                x = block(x, valid)
                if valid is not None:
                    valid = valid.after(1, block.stride, 0)
        if valid is not None:
            x = valid.apply(x)  # the RPN 3x3 conv and the ROI max-pool then see zeros past the edge
        return x, valid

    def extents(self, valid: ValidMask) -> list[ValidMask]:
        """The extents `forward` masks at, from the input's: the stem conv's output and each
        block's first conv's (the last one also masks res4), as `Stem` and `Bottleneck` derive them."""
        out = [valid, valid.after(7, 2, 3)]
        v = out[-1].after(3, 2, 0, ceil=True)
        for stage in (self.res2, self.res3, self.res4):
            for block in stage:
                v = v.after(1, block.stride, 0)
                out.append(v)
        return out


class Res5(nn.Module):
    """res5 applied per ROI: (R, 4*res2_out, P, P) -> (R, 8*res2_out, P', P')."""

    def __init__(self, n: int, width: int, res2_out: int, dilation: int = 2, eps: float = 1e-5):
        super().__init__()
        stride = 1 if dilation == 2 else 2  # the VG model trades the stride for a dilation
        self.blocks = make_stage(n, res2_out * 4, width * 8, res2_out * 8, stride, dilation, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def fold_frozen_bn(module: nn.Module) -> nn.Module:
    """Fold every ConvBN's frozen BN into its conv weight and a bias (in place), for speed.

    The result computes the same function up to float rounding; the state dict keys change,
    so fold only after the checkpoint is loaded.
    """
    for m in module.modules():
        if isinstance(m, ConvBN) and isinstance(m.norm, FrozenBatchNorm2d):
            scale, shift = m.norm.scale_shift()
            with torch.no_grad():
                m.weight.mul_(scale.reshape(-1, 1, 1, 1))
                m.bias = nn.Parameter(shift.clone(), requires_grad=False)
            m.norm = nn.Identity()
    return module
