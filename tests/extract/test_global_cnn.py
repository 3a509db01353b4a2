"""Global ResNet features and thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from lighthead.extract.global_cnn import GlobalCNN, GlobalCNNConfig, ThumbConfig, build_global_cnn, read_state_dict
from lighthead.extract.global_cnn.resnet import RESNETS, default_weights


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision ResNet-18 with non-trivial random weights, saved in torchvision's format."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None).eval()
    for m in model.modules():  # move BN statistics off 0/1 so eval-mode BN is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "resnet18-test.pth"
    torch.save(model.state_dict(), path)
    return model, path


def _trunk(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ResNet's pooled feature written out layer by layer (He et al.: stem, 4 stages, global average pool)."""
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
        x = stage(x)
    return x.mean(dim=(2, 3))  # (B, C) global average pool


def test_features_are_the_pooled_trunk(resnet18_file):
    model, path = resnet18_file
    net = build_global_cnn("resnet18", path)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        got = net(x)
        want = _trunk(model, x)
        assert got.shape == (2, 512)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.fc(got), model(x), atol=1e-5, rtol=1e-4)  # just before the classifier


def test_wrapped_state_dicts_and_wrong_files(resnet18_file, tmp_path):
    model, path = resnet18_file
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "wrapped.pth")
    assert read_state_dict(tmp_path / "wrapped.pth").keys() == model.state_dict().keys()
    broken = dict(model.state_dict())
    broken.pop("layer4.1.bn2.weight")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"does not hold resnet18 weights: missing \['layer4.1.bn2.weight'\]"):
        build_global_cnn("resnet18", tmp_path / "broken.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a torch weights file"):
        build_global_cnn("resnet18", tmp_path / "junk.pth")


def test_missing_weights_say_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert default_weights("resnet152") == tmp_path / "checkpoints" / "resnet152-394f9c45.pth"
    with pytest.raises(FileNotFoundError, match=r"resnet152-394f9c45.pth(.|\n)*download.pytorch.org(.|\n)*--weights"):
        build_global_cnn("resnet152", None)


def test_random_weights_are_seeded():
    a, b = (
        build_global_cnn("resnet18", None, random_weights=True),
        build_global_cnn("resnet18", None, random_weights=True),
    )
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


def test_specs_and_preprocessing():
    assert {n: RESNETS.get(n).width for n in RESNETS} == {"resnet18": 512, "resnet152": 2048}
    cfg = GlobalCNNConfig(arch="resnet18")
    mean = tuple(round(255 * m) for m in cfg.mean)
    x = cfg.transform()(Image.new("RGB", (300, 260), mean))  # the ImageNet mean colour normalises to ~0
    assert x.shape == (3, 224, 224)
    assert x.abs().max() < 0.01
    with pytest.raises(KeyError, match="resnet50"):
        GlobalCNNConfig(arch="resnet50")
    with pytest.raises(ValueError):
        GlobalCNNConfig(crop=300)
    assert isinstance(GlobalCNN("resnet18").net.fc, torch.nn.Identity)


def test_thumbnail_is_a_center_crop_of_the_resized_image():
    a = np.zeros((64, 128, 3), dtype=np.uint8)  # (H, W, 3): red | green | blue | white, 32 columns each
    for k, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]):
        a[:, 32 * k : 32 * (k + 1)] = colour
    thumb = ThumbConfig(size=32).transform()(Image.fromarray(a))  # resized to 64x32, center 32 columns kept
    assert thumb.dtype == torch.uint8 and thumb.shape == (3, 32, 32)
    t = thumb.numpy().transpose(1, 2, 0).astype(int)  # (H, W, 3)
    assert (np.abs(t[:, 1:14] - (0, 255, 0)) <= 2).all()  # left half: the green band
    assert (np.abs(t[:, 18:31] - (0, 0, 255)) <= 2).all()  # right half: the blue band
    with pytest.raises(ValueError):
        ThumbConfig(size=4)


def test_random_resnet152_features_fit_float16():
    """Untrained deep ResNets overflow float16 unless their residual branches are damped."""
    import numpy as np
    import torch

    from lighthead.extract.global_cnn.resnet import build_global_cnn

    torch.manual_seed(1)
    images = torch.rand(2, 3, 128, 128)
    with torch.inference_mode():
        feats = build_global_cnn("resnet152", None, random_weights=True)(images)
    stored = feats.numpy().astype(np.float16)
    assert np.isfinite(stored).all()
    assert np.abs(stored[0] - stored[1]).max() > 0  # still depends on the image
