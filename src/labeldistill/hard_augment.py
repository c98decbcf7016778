"""The hard-label augmentations of the evaluation protocols (:mod:`labeldistill.protocols`), through kornia.

Each works on normalised float images ``(N, C, H, W)`` (the reference code augments normalised tensors, so a zero
fill is the dataset's mean colour) and draws from torch's global generator (seeded by the caller per student).

- ``dc_crop_scale_rotate``: DC's ``augment`` with ``get_daparam``'s MNIST strategy (``VICO-UoE/DatasetCondensation``
  at 306245d, ``utils.py``): each image gets one of crop (pad 4 with the batch's channel means, integer shift in
  [-4, 3]), scale (height and width each × U(0.8, 1.2), nearest, zero fill) or rotate (± 45°, mean fill).
  The reference rotates with scipy's cubic spline; kornia's bilinear rotation is used here.
- ``dsa``: DSA's ``DiffAugment`` in ``aug_mode 'S'`` with ``ParamDiffAug``'s values (same file): per batch one of
  color (brightness + U(−0.5, 0.5), saturation × U(0, 2), contrast × U(0.5, 1.5)), crop (integer shift up to
  ``round(0.125 · size)``, zero fill), cutout (a zeroed square of half the side, its centre anywhere, clipped),
  flip (p 0.5), scale (x and y zoom from U(1/1.2, 1.2) by kornia's affine sampler, not DSA's grid factor) or
  rotate (U(−15°, 15°)).
- ``crop_flip``: RandomResizedCrop(``crop_scale``) + horizontal flip (the project's hard-label default).
- ``none``: the images as they are.
"""

from __future__ import annotations

from typing import Callable

import kornia.augmentation as K
import torch
import torch.nn as nn

from .errors import ConfigError

HARD_AUGMENTATIONS = ("none", "dc_crop_scale_rotate", "dsa", "crop_flip")


def _dc_crop(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """DC's ``cropfun`` on every image of ``x``: pad with the channel means, take an ``H × W`` window at an
    integer offset in ``[0, 2 · pad)``."""
    n, c, h, w = x.shape
    canvas = x.mean(dim=(0, 2, 3), keepdim=True).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    canvas[:, :, pad:pad + h, pad:pad + w] = x
    r, s = torch.randint(2 * pad, (n,)).tolist(), torch.randint(2 * pad, (n,)).tolist()
    return torch.stack([canvas[i, :, r[i]:r[i] + h, s[i]:s[i] + w] for i in range(n)])


def _dc_augment(size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    scale = K.RandomAffine(degrees=0.0, scale=(0.8, 1.2, 0.8, 1.2), resample="nearest", padding_mode="zeros", p=1.0)
    rotate = K.RandomRotation(45.0, p=1.0)

    def aug(x: torch.Tensor) -> torch.Tensor:
        choice = torch.randint(3, (len(x),))
        out = x.clone()
        for k, fn in enumerate((_dc_crop, scale, rotate)):
            sel = choice == k
            if sel.any():
                part = x[sel]
                mean = part.mean()
                out[sel] = fn(part - mean) + mean if k == 2 else fn(part)
        return out
    return aug


def _dsa_color(x: torch.Tensor) -> torch.Tensor:
    n = len(x)
    x = x + (torch.rand(n, 1, 1, 1) - 0.5)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (torch.rand(n, 1, 1, 1) * 2.0) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (torch.rand(n, 1, 1, 1) + 0.5) + m


def _dsa_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1))
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1))
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch) & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _dsa_augment(size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    shift = int(size[0] * 0.125 + 0.5)
    ops = [_dsa_color, K.RandomCrop(size, padding=shift, fill=0, p=1.0), _dsa_cutout,
           K.RandomHorizontalFlip(p=0.5),
           K.RandomAffine(degrees=0.0, scale=(1 / 1.2, 1.2, 1 / 1.2, 1.2), padding_mode="zeros", p=1.0),
           K.RandomRotation(15.0, p=1.0)]
    return lambda x: ops[int(torch.randint(len(ops), (1,)))](x)


def hard_augmentation(name: str, size: tuple[int, int], crop_scale: tuple[float, float] = (0.08, 1.0),
                      flip: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """The augmentation ``name`` (:data:`HARD_AUGMENTATIONS`) for ``size = (H, W)`` images.

    Raises:
        ConfigError: an unknown name.
    """
    if name == "none":
        return lambda x: x
    if name == "dc_crop_scale_rotate":
        return _dc_augment(size)
    if name == "dsa":
        return _dsa_augment(size)
    if name == "crop_flip":
        return nn.Sequential(K.RandomResizedCrop(size, scale=tuple(crop_scale)),
                             K.RandomHorizontalFlip() if flip else nn.Identity())
    raise ConfigError(f"unknown hard-label augmentation '{name}'; known: {', '.join(HARD_AUGMENTATIONS)}")
