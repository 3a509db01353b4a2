"""Pooled global image features of an ImageNet ResNet (He et al., CVPR 2016).

ResNet-18 (512-d) is ITIN's visual context; ResNet-152 (2048-d) is mFSR's image input. The
feature is the global average pool before the classifier. Weights come from a local file in
torchvision's state-dict format (what `torchvision.models.resnet152(weights=...)` caches in
`~/.cache/torch/hub/checkpoints/`); nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lighthead.extract.torch_files import load_tensors
from lighthead.store.registry import Registry


@dataclass(frozen=True)
class ResNetSpec:
    """A torchvision ResNet variant."""

    name: str  # "resnet18", "resnet152"
    width: int  # D of the pooled feature
    weights_files: tuple[str, ...]  # torchvision checkpoint names, preferred first
    url: str  # where torchvision publishes the first one

    def build(self) -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, self.name)(weights=None)


RESNETS: Registry[ResNetSpec] = Registry("global CNN")
for _spec in (
    ResNetSpec(
        "resnet18", 512, ("resnet18-f37072fd.pth",), "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    ),
    ResNetSpec(
        "resnet152",
        2048,
        ("resnet152-394f9c45.pth", "resnet152-f82ba261.pth"),
        "https://download.pytorch.org/models/resnet152-394f9c45.pth",
    ),
):
    RESNETS.register(_spec.name)(_spec)


@dataclass
class GlobalCNNConfig:
    """ImageNet preprocessing of torchvision's ResNet weights: resize 256, center crop 224."""

    arch: str = "resnet152"  # a RESNETS name: resnet152 (mFSR) or resnet18 (ITIN)
    resize: int = 256  # shorter image side before the crop
    crop: int = 224  # square center crop fed to the network
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet channel means (RGB, 0-1 scale)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # ImageNet channel standard deviations

    def __post_init__(self) -> None:
        RESNETS.get(self.arch)  # raises, naming the known ones
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop {self.crop}, resize {self.resize}")

    @property
    def width(self) -> int:
        return RESNETS.get(self.arch).width

    def transform(self) -> Callable[[Any], torch.Tensor]:
        """PIL RGB image -> normalised (3, crop, crop) float tensor."""
        from torchvision import transforms as T

        return T.Compose(
            [T.Resize(self.resize), T.CenterCrop(self.crop), T.ToTensor(), T.Normalize(self.mean, self.std)]
        )


def default_weights(arch: str) -> Path:
    """The torchvision cache file for `arch` (the first that exists, else the preferred name)."""
    spec = RESNETS.get(arch)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in spec.weights_files:
        if (folder / name).is_file():
            return folder / name
    return folder / spec.weights_files[0]


def missing_weights_message(arch: str, path: Path) -> str:
    spec = RESNETS.get(arch)
    return (
        f"{arch} weights not found at {path}. Download torchvision's file once ({spec.url}) into "
        f"{path.parent}/, or pass the file with --weights PATH (or --job-option {arch}.weights=PATH); "
        f"--random-weights runs untrained (recorded in the store)"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ResNet state dict from a torchvision-format file (also unwraps {"state_dict": ...} and "module.")."""
    obj = load_tensors(path)  # a refused or damaged file: TorchFileError (a ValueError), one line
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (torchvision format)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


class GlobalCNN(nn.Module):
    """ResNet trunk + global average pool: images (B, 3, H, W) -> features (B, D)."""

    def __init__(self, arch: str):
        super().__init__()
        self.arch = arch
        self.width = RESNETS.get(arch).width  # D
        self.net = RESNETS.get(arch).build()
        self.net.fc = nn.Identity()  # the pooled feature, not the ImageNet logits

    def load_weights(self, path: Path) -> None:
        """Load a torchvision-format file (the classifier weights are checked, then dropped)."""
        state = read_state_dict(path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        result = self.net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{path} does not hold {self.arch} weights: missing {result.missing_keys[:4]}, "
                f"unexpected {result.unexpected_keys[:4]} (pass this job's file with --job-option {self.arch}.weights=PATH)"
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)  # (B, D): avgpool + flatten, fc is the identity


def build_global_cnn(arch: str, weights: Path | None, random_weights: bool = False) -> GlobalCNN:
    """A GlobalCNN in eval mode with weights from `weights` (default: torchvision's cache file).

    random_weights=True keeps the seeded random init instead (tests, demo); otherwise a
    missing file raises FileNotFoundError saying where to put it.
    """
    path = None
    if not random_weights:
        path = Path(weights) if weights else default_weights(arch)
        if not path.is_file():
            raise FileNotFoundError(missing_weights_message(arch, path))
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(0)  # the same random trunk on every run, so a resumed run matches
        model = GlobalCNN(arch)
    if path is not None:
        model.load_weights(path)
    else:
        damp_residuals(model)
    return model.eval().requires_grad_(False)


def damp_residuals(model: nn.Module, gain: float = 0.1) -> None:
    """Scale the last BatchNorm of every residual branch of a randomly initialised ResNet.

    Untrained, every block adds a branch of the same magnitude as its input, so the activations
    of a deep net (ResNet-152: 50 blocks) grow past float16's range and the stored features
    become inf. A small gain on the branch keeps them finite and still image-dependent.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.mul_(gain)
            elif isinstance(m, BasicBlock):
                m.bn2.weight.mul_(gain)
