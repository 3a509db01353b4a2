"""Global image features: pooled ImageNet ResNets and thumbnails."""

from lighthead.extract.global_cnn.resnet import (
    RESNETS,
    GlobalCNN,
    GlobalCNNConfig,
    ResNetSpec,
    build_global_cnn,
    default_weights,
    read_state_dict,
)
from lighthead.extract.global_cnn.thumbs import ThumbConfig, ThumbTransform

__all__ = [
    "RESNETS",
    "GlobalCNN",
    "GlobalCNNConfig",
    "ResNetSpec",
    "ThumbConfig",
    "ThumbTransform",
    "build_global_cnn",
    "default_weights",
    "read_state_dict",
]
