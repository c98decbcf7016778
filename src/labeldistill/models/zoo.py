"""Models from the torchvision and timm zoos, built through the registry as ``torchvision:<name>`` and
``timm:<name>``, always randomly initialised (nothing is downloaded: trained weights come from a checkpoint,
``squeeze.checkpoint``).

* ``num_classes`` and the input channels come from the data. For ``in_channels != 3`` a torchvision model's
  first ``Conv2d`` is replaced by the same layer with ``in_channels`` inputs; timm gets ``in_chans``.
* ``torchvision:`` ResNets (``resnet*``, ``resnext*``, ``wide_resnet*``) take ``stem: small`` (LPLD's
  Tiny-ImageNet / CIFAR recipe: ``conv1`` → 3×3, stride 1, padding 1, no bias; ``maxpool`` → identity) or
  ``stem: imagenet`` (torchvision's 7×7 stride-2 conv + max-pool, the default). Neither changes a
  ``state_dict`` key. torchvision ViTs (``vit_*``) get ``image_size`` from the data.
* ``timm:`` models get ``img_size`` from the data when they accept it and it is not in the args (ViT-family
  models at 28 or 64 px: add e.g. ``patch_size: 4``).
* Every other argument goes to the zoo's constructor unchanged; one it does not accept is a
  :class:`~labeldistill.errors.RegistryError`, as is ``pretrained``/``weights``.
* Each model gets ``embed(x)`` (the input of its last linear classifier, flattened) and ``feature_dim``, as
  the project's own models have, when it has such a classifier.
"""

from __future__ import annotations

import types

import torch
import torch.nn as nn

from ..errors import RegistryError
from .registry import close_matches, register_family

_NO_DOWNLOAD = ("pretrained", "weights", "weights_backbone")
RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")


def _torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _refuse_downloads(zoo: str, kwargs: dict) -> None:
    bad = [k for k in _NO_DOWNLOAD if kwargs.get(k)]
    if bad:
        raise RegistryError(f"{zoo} option '{bad[0]}': labeldistill never downloads weights; build the model "
                            "untrained and give trained weights as a checkpoint file (squeeze.checkpoint)")


def _conv_like(conv: nn.Conv2d, in_channels: int, **override) -> nn.Conv2d:
    """A new ``Conv2d`` like ``conv`` but with ``in_channels`` inputs (and ``override``), He-initialised."""
    args = dict(out_channels=conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode)
    args.update(override)
    new = nn.Conv2d(in_channels, **args)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give ``model``'s first ``Conv2d`` (module order) ``in_channels`` inputs, keeping every other setting.

    Raises:
        RegistryError: no ``Conv2d``, or a grouped first conv whose groups do not divide ``in_channels``.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels == in_channels:
                return
            if in_channels % m.groups:
                raise RegistryError(f"first conv '{name}' has {m.groups} groups; cannot take {in_channels} channels")
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, _conv_like(m, in_channels))
            return
    raise RegistryError(f"{type(model).__name__} has no Conv2d layer to take {in_channels} input channels")


def apply_stem(model: nn.Module, name: str, stem: str) -> None:
    """``stem="small"``: 3×3 stride-1 ``conv1`` without bias and no max-pool (keys unchanged)."""
    if stem == "imagenet":
        return
    if stem != "small":
        raise RegistryError(f"unknown resnet stem '{stem}'; known: small, imagenet")
    if not (hasattr(model, "conv1") and hasattr(model, "maxpool")):
        raise RegistryError(f"stem: small applies to torchvision ResNets (resnet*, resnext*, wide_resnet*), "
                            f"not '{name}'")
    model.conv1 = _conv_like(model.conv1, model.conv1.in_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def _embed(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features ``(N, feature_dim)``: the input of the classifier ``self._embed_head``."""
    box: list[torch.Tensor] = []
    handle = self.get_submodule(self._embed_head).register_forward_pre_hook(lambda m, args: box.append(args[0]))
    try:
        self(x)
    finally:
        handle.remove()
    return box[0].flatten(1)


def attach_embed(model: nn.Module, head: nn.Module | None = None) -> nn.Module:
    """Give ``model`` ``embed(x)`` and ``feature_dim`` from its classifier ``head`` (default: the last
    ``nn.Linear``); a model without one is returned unchanged."""
    names = {id(m): n for n, m in model.named_modules()}
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if not isinstance(head, nn.Linear) or id(head) not in names or hasattr(model, "embed"):
        return model
    model._embed_head = names[id(head)]
    model.feature_dim = head.in_features
    model.embed = types.MethodType(_embed, model)
    return model


def _unknown(zoo: str, name: str, names: list[str]) -> RegistryError:
    return RegistryError(f"unknown {zoo} model '{name}'{close_matches(name, names)}")


@register_family("torchvision", _torchvision_names)
def torchvision_model(name: str, num_classes: int, in_channels: int, image_size: int, stem: str = "imagenet",
                      **kwargs) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=…, **kwargs)`` adapted to the data."""
    import torchvision.models

    names = _torchvision_names()
    if name not in names:
        raise _unknown("torchvision", name, names)
    _refuse_downloads("torchvision", kwargs)
    if name.startswith("vit_"):
        kwargs.setdefault("image_size", image_size)
    if stem != "imagenet" and not name.startswith(RESNET_PREFIXES):
        raise RegistryError(f"stem: {stem} applies to torchvision ResNets (resnet*, resnext*, wide_resnet*), "
                            f"not '{name}'")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise RegistryError(f"model 'torchvision:{name}' does not accept these args: {e}") from None
    apply_stem(model, name, stem)
    replace_first_conv(model, in_channels)
    return attach_embed(model)


@register_family("timm", _timm_names)
def timm_model(name: str, num_classes: int, in_channels: int, image_size: int, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=…, in_chans=…, [img_size=…,] **kwargs)``."""
    import timm

    if not timm.is_model(name):
        raise _unknown("timm", name, _timm_names())
    _refuse_downloads("timm", kwargs)
    base = dict(pretrained=False, num_classes=num_classes, in_chans=in_channels)
    try:
        if "img_size" not in kwargs:
            try:
                model = timm.create_model(name, **base, img_size=image_size, **kwargs)
            except TypeError as e:
                if "img_size" not in str(e):
                    raise
                model = timm.create_model(name, **base, **kwargs)
        else:
            model = timm.create_model(name, **base, **kwargs)
    except TypeError as e:
        raise RegistryError(f"model 'timm:{name}' does not accept these args: {e}") from None
    return attach_embed(model, model.get_classifier())
