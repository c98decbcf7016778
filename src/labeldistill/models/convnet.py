"""The DC "ConvNet" (Zhao et al., Dataset Condensation, ICLR 2021): depth × [conv3×3 → norm → ReLU → avgpool2]."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import RegistryError
from .registry import register_model


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":  # DC's instancenorm: per-channel GroupNorm with affine parameters
        return nn.GroupNorm(ch, ch, affine=True)
    if kind == "none":
        return nn.Identity()
    raise RegistryError(f"unknown convnet norm '{kind}'; known: batch, instance, none")


class ConvNet(nn.Module):
    """``features`` (depth conv blocks) then a linear ``classifier``.

    Input ``(N, in_channels, S, S)``; output logits ``(N, num_classes)``. ``dc_padding``: pad the first conv by
    3 pixels when ``in_channels == 1``, as DC's ``networks.py`` does (28 px inputs become 32 px feature maps:
    ``VICO-UoE/DatasetCondensation`` at 306245d, ``ConvNet._make_layers``); otherwise every conv pads by 1.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 128, depth: int = 3,
                 norm: str = "batch", dc_padding: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        ch, size = in_channels, image_size
        for d in range(depth):
            pad = 3 if dc_padding and d == 0 and in_channels == 1 else 1
            layers += [nn.Conv2d(ch, width, 3, padding=pad), _norm(norm, width), nn.ReLU(inplace=True),
                       nn.AvgPool2d(2)]
            ch, size = width, (size + 2 * pad - 2) // 2
        if size < 1:
            raise RegistryError(f"convnet depth {depth} is too deep for {image_size}px images")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)
        self.feature_dim = width * size * size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(N, feature_dim)``."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@register_model("convnet")
def convnet(num_classes: int, in_channels: int, image_size: int, width: int = 128, depth: int = 3,
            norm: str = "batch", dc_padding: bool = False) -> nn.Module:
    return ConvNet(num_classes, in_channels, image_size, width, depth, norm, dc_padding)
