"""BatchNorm layers and forward hooks on them: the one owner of hook registration and removal.

Class statistics (``class-stats``) and BN-statistics matching (``recover``) both read the *input* of every
BatchNorm2d layer during a forward pass; both go through :func:`forward_hooks`, so a hook is never left
registered after an exception.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch.nn as nn

from ..errors import LabelDistillError


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The model's BatchNorm2d layers in forward-definition order (order of ``named_modules``)."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def require_bn_layers(model: nn.Module, name: str) -> list[nn.BatchNorm2d]:
    """:func:`bn_layers`, refusing a model that has none.

    Raises:
        LabelDistillError: ``model`` (called ``name`` in the message) has no BatchNorm2d layer.
    """
    bns = bn_layers(model)
    if not bns:
        raise LabelDistillError(f"teacher '{name}' has no BatchNorm2d layer: BN-statistics recovery needs one "
                                "(e.g. convnet with norm=batch, resnet18); models without BatchNorm (ViT, "
                                "ConvNeXt) can relabel and validate but not recover")
    return bns


@contextmanager
def forward_hooks(modules: Sequence[nn.Module], hooks: Sequence[Callable]) -> Iterator[Sequence[Callable]]:
    """Register ``hooks[i]`` as a forward hook of ``modules[i]`` for the duration of the block.

    Yields:
        ``hooks`` (each is called as ``hook(module, inputs, output)`` after every forward of its module).
    """
    handles = [m.register_forward_hook(h) for m, h in zip(modules, hooks)]
    try:
        yield hooks
    finally:
        for h in handles:
            h.remove()
