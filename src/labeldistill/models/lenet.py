"""LeNet-5 style network, as used by Label Distillation (Bohdal et al. 2020) on MNIST-like data."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


class LeNet(nn.Module):
    """conv5(6) → ReLU → maxpool → conv5(16) → ReLU → maxpool → fc120 → fc84 → fc(C).

    Input ``(N, in_channels, S, S)``; the first conv pads by 2 so 28px and 32px inputs both work.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        s = ((image_size // 2) - 4) // 2
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16 * s * s, 120), nn.ReLU(inplace=True),
                                  nn.Linear(120, 84), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(84, num_classes)
        self.feature_dim = 84

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@register_model("lenet")
def lenet(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return LeNet(num_classes, in_channels, image_size)
