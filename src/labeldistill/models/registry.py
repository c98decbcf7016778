"""The model registry (see the package docstring)."""

from __future__ import annotations

import difflib
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
    _check(name, kwargs)
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


def _check(name: str, kwargs: dict, where: str = "") -> None:
    at = f"{where}: " if where else ""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise RegistryError(f"{at}unknown model '{name}'{hint} known models: {', '.join(list_models())}")
    params = inspect.signature(_MODELS[name]).parameters
    allowed = [p for p in params if p not in ("num_classes", "in_channels", "image_size")]
    bad = [k for k in kwargs if k not in allowed]
    if bad:
        raise RegistryError(f"{at}model '{name}' has no option '{bad[0]}'; its options: {', '.join(allowed)}")


def check_model_spec(spec: Any, where: str = "") -> None:
    """Check a model spec's name and option names without building it (cheap; run before any work).

    Args:
        spec: a :class:`~labeldistill.config.ModelConfig` (``name`` + ``args``).
        where: the config key, named in the message (e.g. ``validate.model``).

    Raises:
        RegistryError: unknown name (with close matches) or an option the model does not take.
    """
    _check(spec.name, dict(spec.args), where)


def build_model(spec: Any, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """Instantiate a model spec (a :class:`~labeldistill.config.ModelConfig`: ``name`` + ``args``) for images
    of ``shape`` = ``(C, H, W)`` with ``num_classes`` outputs. The one way every stage builds a model.

    Raises:
        RegistryError: unknown model name or keyword argument.
    """
    return create_model(spec.name, num_classes=num_classes, in_channels=shape[0], image_size=shape[1],
                        **spec.args)
