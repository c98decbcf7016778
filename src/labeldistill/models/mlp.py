"""A plain multilayer perceptron on flattened pixels."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


class MLP(nn.Module):
    """Flatten → [Linear(hidden) → ReLU] × depth → Linear(C)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, hidden: int = 256, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_channels * image_size * image_size
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
            d = hidden
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(d, num_classes)
        self.feature_dim = d

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@register_model("mlp")
def mlp(num_classes: int, in_channels: int, image_size: int, hidden: int = 256, depth: int = 2) -> nn.Module:
    return MLP(num_classes, in_channels, image_size, hidden, depth)
