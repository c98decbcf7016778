"""ResNet-18/50: torchvision's ResNet (``torchvision.models.resnet18/50``), registered under the project's
names ``resnet18`` / ``resnet50`` with the small stem as the default.

``stem="small"`` is the SRe2L/CIFAR/Tiny-ImageNet modification: 3×3 stride-1 ``conv1`` without bias and no
max-pool (``maxpool`` becomes an identity, which has no parameters, so keys still match). ``stem="imagenet"``
is torchvision's 7×7 stride-2 conv + max-pool; a torchvision ResNet checkpoint loads with
``model.load_state_dict(sd)``. ``resnet18`` is the same network as ``torchvision:resnet18`` with
``stem: small`` (and ``resnet18 {stem: imagenet}`` the same as ``torchvision:resnet18``); the ``state_dict``
keys are torchvision's in every case (``conv1``, ``bn1``, ``layer1.0.conv1`` …, ``fc``), exactly the layout the
project's earlier own implementation had, so its checkpoints load unchanged.
"""

from __future__ import annotations

import torch.nn as nn

from .registry import register_model
from .zoo import torchvision_model


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int, image_size: int, stem: str = "small") -> nn.Module:
    return torchvision_model("resnet18", num_classes, in_channels, image_size, stem=stem)


@register_model("resnet50")
def resnet50(num_classes: int, in_channels: int, image_size: int, stem: str = "small") -> nn.Module:
    return torchvision_model("resnet50", num_classes, in_channels, image_size, stem=stem)
