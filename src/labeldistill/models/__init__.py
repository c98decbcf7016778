"""Model registry: ``create_model(name, num_classes, in_channels, image_size, **kwargs)``.

Builders register with :func:`register_model`; unknown names and unknown keyword arguments raise
:class:`~labeldistill.errors.RegistryError` listing what is known.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from ..errors import RegistryError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    """Decorator: register ``fn(num_classes, in_channels, image_size, **kw) -> nn.Module``."""

    def deco(fn: Callable) -> Callable:
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, in_channels: int, image_size: int, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        num_classes: output logits ``C``.
        in_channels: input channels of ``(N, C_in, H, W)`` images.
        image_size: input height = width in pixels.
        **kwargs: builder-specific options (e.g. ``width``, ``depth``, ``norm`` for ``convnet``).

    Raises:
        RegistryError: unknown model name or keyword argument.
    """
    if name not in _MODELS:
        raise RegistryError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    fn = _MODELS[name]
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in ("num_classes", "in_channels", "image_size")]
    bad = [k for k in kwargs if k not in allowed]
    if bad:
        raise RegistryError(f"model '{name}' has no option '{bad[0]}'; its options: {', '.join(allowed)}")
    return fn(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The model's BatchNorm2d layers in forward-definition order (order of ``named_modules``)."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


from . import convnet, lenet, mlp, resnet  # noqa: E402,F401
