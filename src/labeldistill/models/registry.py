"""The model registry (see the package docstring)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

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
    """Registered model names, sorted."""
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


def build_model(spec: Any, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """Instantiate a model spec (a :class:`~labeldistill.config.ModelConfig`: ``name`` + ``args``) for images
    of ``shape`` = ``(C, H, W)`` with ``num_classes`` outputs. The one way every stage builds a model.

    Raises:
        RegistryError: unknown model name or keyword argument.
    """
    return create_model(spec.name, num_classes=num_classes, in_channels=shape[0], image_size=shape[1],
                        **spec.args)
