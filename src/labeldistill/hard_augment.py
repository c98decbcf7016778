"""The hard-label augmentations of the evaluation protocols (:mod:`labeldistill.protocols`), through torch and kornia.

Each works on normalised float images ``(N, C, H, W)`` (the reference code augments normalised tensors, so a zero
fill is the dataset's mean colour) and draws from torch's global generator (seeded by the caller per student).

- ``dc_crop_scale_rotate``: DC's ``augment`` with ``get_daparam``'s MNIST strategy (``VICO-UoE/DatasetCondensation``
  at 306245d, ``utils.py``): each image gets one of crop (pad 4 with the batch's channel means, integer shift in
  [-4, 3]), scale (height and width each ``int(U(0.8, 1.2) · side)`` pixels, nearest, centred on a zero canvas,
  centre crop) or rotate (an integer angle in [-45, 44]° about the centre, filled with the mean of the batch's
  channel means). The reference rotates with scipy's cubic spline (``reshape`` then a centre crop); kornia's
  bilinear rotation is used here.
- ``dsa`` / ``dsa_no_flip``: DSA's ``DiffAugment`` in ``aug_mode 'S'`` with ``ParamDiffAug``'s values (same file),
  drawn per image (``seed = -1``: not Siamese, as ``evaluate_synset`` calls it): per batch one of color (brightness
  + U(−0.5, 0.5), saturation × U(0, 2), contrast × U(0.5, 1.5)), crop (integer shift up to
  ``int(0.125 · side + 0.5)``, zero fill), cutout (a zeroed square of half the side, its centre anywhere, clipped),
  flip (p 0.5), scale (sampling grid × U(1/1.2, 1.2) on x and on y) or rotate (U(−15°, 15°)), the last two by
  ``F.affine_grid`` + ``F.grid_sample`` (bilinear, zero fill) as the reference does. ``dsa_no_flip`` leaves flip
  out: DSA's readme passes ``color_crop_cutout_scale_rotate`` for digit datasets.
- ``crop_flip``: RandomResizedCrop(``crop_scale``) + horizontal flip (the project's hard-label default).
- ``none``: the images as they are.
"""

from __future__ import annotations

import math
from typing import Callable

import kornia.augmentation as K
import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.geometry.transform import rotate

from .errors import ConfigError

HARD_AUGMENTATIONS = ("none", "dc_crop_scale_rotate", "dsa", "dsa_no_flip", "crop_flip")


def _dc_crop(x: torch.Tensor, fill: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """DC's ``cropfun`` on every image of ``x``: pad with ``fill`` (the batch's channel means, ``(1, C, 1, 1)``),
    take an ``H × W`` window at an integer offset in ``[0, 2 · pad)``."""
    n, c, h, w = x.shape
    canvas = fill.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    canvas[:, :, pad:pad + h, pad:pad + w] = x
    r, s = torch.randint(2 * pad, (n,)).tolist(), torch.randint(2 * pad, (n,)).tolist()
    return torch.stack([canvas[i, :, r[i]:r[i] + h, s[i]:s[i] + w] for i in range(n)])


def _dc_scale_one(img: torch.Tensor, ratio: float = 0.2) -> torch.Tensor:
    """DC's ``scalefun`` on one image ``(C, H, W)``: resize (nearest) to ``int(U(1 ± ratio) · H)`` by
    ``int(U(1 ± ratio) · W)``, centre it on a zero square canvas of the larger side, cut the centre ``H × W``."""
    c, h, w = img.shape
    nh, nw = (int(float(torch.empty(()).uniform_(1 - ratio, 1 + ratio)) * side) for side in (h, w))
    side = max(nh, nw, h, w)
    canvas = img.new_zeros(c, side, side)
    r, s = (side - nh) // 2, (side - nw) // 2
    canvas[:, r:r + nh, s:s + nw] = F.interpolate(img[None], [nh, nw])[0]
    r, s = (side - h) // 2, (side - w) // 2
    return canvas[:, r:r + h, s:s + w]


def _dc_rotate(x: torch.Tensor, fill: float, degrees: int = 45) -> torch.Tensor:
    """DC's ``rotatefun`` on every image: an integer angle in ``[-degrees, degrees)``, outside filled with ``fill``."""
    angle = torch.randint(-degrees, degrees, (len(x),)).to(x.dtype)
    return rotate(x - fill, angle) + fill


def _dc_augment(x: torch.Tensor) -> torch.Tensor:
    """DC's ``augment`` (strategy ``crop_scale_rotate``): one of the three per image; the fills come from the whole
    batch, as the reference computes its channel means once per batch."""
    means = x.mean(dim=(0, 2, 3), keepdim=True)
    choice = torch.randint(3, (len(x),))
    out = x.clone()
    ops = (lambda part: _dc_crop(part, means),
           lambda part: torch.stack([_dc_scale_one(img) for img in part]),
           lambda part: _dc_rotate(part, float(means.mean())))
    for k, fn in enumerate(ops):
        sel = choice == k
        if sel.any():
            out[sel] = fn(x[sel])
    return out


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


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` on the sampling grid ``theta`` ``(N, 2, 3)`` (normalised coordinates, bilinear, zero fill)."""
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def _dsa_scale(x: torch.Tensor, ratio: float = 1.2) -> torch.Tensor:
    """DSA's ``rand_scale``: the sampling grid's x and y each × U(1/ratio, ratio) (above 1 the image shrinks)."""
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = torch.rand(len(x)) * (ratio - 1.0 / ratio) + 1.0 / ratio
    theta[:, 1, 1] = torch.rand(len(x)) * (ratio - 1.0 / ratio) + 1.0 / ratio
    return _affine(x, theta)


def _dsa_rotate(x: torch.Tensor, degrees: float = 15.0) -> torch.Tensor:
    """DSA's ``rand_rotate``: the sampling grid rotated by U(−degrees, degrees)."""
    a = (torch.rand(len(x)) - 0.5) * 2 * degrees / 180 * math.pi
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros(len(x))
    return _affine(x, torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1))


def _dsa_augment(size: tuple[int, int], flip: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    shift = int(size[0] * 0.125 + 0.5)
    ops = [_dsa_color, K.RandomCrop(size, padding=shift, fill=0, p=1.0), _dsa_cutout,
           *([K.RandomHorizontalFlip(p=0.5)] if flip else []), _dsa_scale, _dsa_rotate]
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
        return _dc_augment
    if name in ("dsa", "dsa_no_flip"):
        return _dsa_augment(size, flip=name == "dsa")
    if name == "crop_flip":
        return nn.Sequential(K.RandomResizedCrop(size, scale=tuple(crop_scale)),
                             K.RandomHorizontalFlip() if flip else nn.Identity())
    raise ConfigError(f"unknown hard-label augmentation '{name}'; known: {', '.join(HARD_AUGMENTATIONS)}")
