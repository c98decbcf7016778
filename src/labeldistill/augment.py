"""Augmentation whose sampled parameters are explicit, compact and replayable.

Parameters are *sampled* here from a seeded :class:`torch.Generator` (so one stored step is a pure function
of ``(seed, step id)`` — the property sharding, resuming and generate-only-kept relabelling rely on) and
quantised to small integers; they are *applied* with kornia's ``crop_and_resize`` and ``Tensor.flip``. What is stored
is exactly what is applied, so a replay rebuilds the batch the teacher saw bit for bit.

Conventions: a crop box is ``(x0, y0, w, h)`` in integer pixels of the source image; images are float
``(N, C, H, W)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from kornia.geometry.transform import crop_and_resize

_MASK = (1 << 63) - 1


class Stream(enum.IntEnum):
    """The first key of every seeded random stream, in one place so two stages never share a stream.

    ``step_generator(seed, Stream.RELABEL_AUG, step_id)`` is relabel's augmentation of one step, and so on.
    Recover's streams are keyed by the mode instead (:func:`mode_stream`); a test checks that no built-in mode
    maps onto one of these values. The numbers are part of every stored result: changing one
    changes every number downstream.
    """

    RELABEL_ORDER = 11  # relabel: the image order of stored epoch e      (seed, 11, e)
    RELABEL_AUG = 12  # relabel: crops, flips, CutMix of stored step g   (seed, 12, g)
    PRUNE = 21  # prune: the random step order (seed, 21) and epoch order (seed, 21, 1)
    VALIDATE_POOL = 31  # validate: the steps drawn in training epoch e   (seed, 31, e)
    CLASS_STATS = 41  # class-stats: augmentation of batch i (seed, 41, i); ema mode's image order (seed, 41)


def mode_stream(mode: str) -> int:
    """Recover's stream key of a mode: the little-endian integer of its first 7 bytes (any name of two or more
    bytes gives at least 256, above every :class:`Stream` value)."""
    return int.from_bytes(mode.encode()[:7].ljust(7, b"\0"), "little")


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A generator seeded from ``seed`` and integer keys (e.g. epoch, step) by a fixed integer hash."""
    h = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK
    for k in keys:
        h = ((h ^ (k + 0x94D049BB133111EB)) * 0xBF58476D1CE4E5B9) & _MASK
        h ^= h >> 31
    return torch.Generator().manual_seed(h)


def sample_resized_crops(gen: torch.Generator, n: int, height: int, width: int,
                         scale: tuple[float, float] = (0.08, 1.0),
                         ratio: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10) -> torch.Tensor:
    """Sample RandomResizedCrop boxes (the Inception-style rule: up to ``tries`` draws of area and log-aspect).

    Returns:
        int64 ``(n, 4)`` boxes ``(x0, y0, w, h)`` in pixels; a centre crop where no draw fits.
    """
    area = height * width
    s = torch.empty(n, tries).uniform_(scale[0], scale[1], generator=gen) * area
    logr = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(logr)
    w = torch.sqrt(s * r).round().long()
    h = torch.sqrt(s / r).round().long()
    ok = (w >= 1) & (h >= 1) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    # Fallback: whole image clipped to the ratio range (as torchvision does).
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    idx = first.clamp_min(0)
    bw = torch.where(first >= 0, w.gather(1, idx[:, None]).squeeze(1), torch.full((n,), fw))
    bh = torch.where(first >= 0, h.gather(1, idx[:, None]).squeeze(1), torch.full((n,), fh))
    u = torch.rand(n, 2, generator=gen)
    x0 = torch.floor(u[:, 0] * (width - bw + 1).float()).long()
    y0 = torch.floor(u[:, 1] * (height - bh + 1).float()).long()
    centre = first < 0
    x0 = torch.where(centre, (width - bw) // 2, x0)
    y0 = torch.where(centre, (height - bh) // 2, y0)
    return torch.stack([x0, y0, bw, bh], 1)


def sample_flips(gen: torch.Generator, n: int, p: float = 0.5) -> torch.Tensor:
    """Bool ``(n,)``: which images are flipped horizontally."""
    return torch.rand(n, generator=gen) < p


@dataclass
class MixParams:
    """Per-step CutMix parameters (one box for the whole batch, as FKD/SRe2L).

    Attributes:
        perm: int64 ``(B,)`` partner index within the step.
        lam: the sampled λ (before box rounding).
        box: ``(x0, y0, w, h)`` of the pasted region in pixels of the *augmented* image.
    """

    perm: torch.Tensor
    lam: float
    box: tuple[int, int, int, int]


def sample_cutmix(gen: torch.Generator, b: int, height: int, width: int, alpha: float = 1.0) -> MixParams:
    """CutMix (Yun et al. 2019): λ ~ Beta(α, α), a box of side √(1−λ) at a uniform centre, clipped."""
    ga = torch._standard_gamma(torch.full((2,), float(alpha)), generator=gen)  # Beta via two gammas
    lam = float(ga[0] / ga.sum())
    perm = torch.randperm(b, generator=gen)
    cut = math.sqrt(1.0 - lam)
    cw, ch = int(width * cut), int(height * cut)
    c = torch.rand(2, generator=gen)
    cx, cy = int(c[0] * width), int(c[1] * height)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    return MixParams(perm, lam, (x0, y0, x1 - x0, y1 - y0))


def boxes_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """``(n, 4)`` pixel boxes ``(x0, y0, w, h)`` → kornia corner format ``(n, 4, 2)`` (clockwise from top-left)."""
    b = boxes.float()
    x0, y0 = b[:, 0], b[:, 1]
    x1, y1 = x0 + b[:, 2] - 1, y0 + b[:, 3] - 1
    return torch.stack([torch.stack([x0, y0], 1), torch.stack([x1, y0], 1),
                        torch.stack([x1, y1], 1), torch.stack([x0, y1], 1)], 1)


def apply_crops_flips(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor | None,
                      size: tuple[int, int]) -> torch.Tensor:
    """Crop each image to its box, resize bilinearly to ``size`` and flip where asked.

    Args:
        images: float ``(n, C, H, W)``.
        boxes: ``(n, 4)`` pixel boxes ``(x0, y0, w, h)``.
        flips: bool ``(n,)`` or None.
        size: output ``(H', W')`` in pixels.

    Returns:
        float ``(n, C, H', W')``.
    """
    out = crop_and_resize(images, boxes_to_corners(boxes).to(images.device), size, mode="bilinear",
                          align_corners=True)
    if flips is not None and bool(flips.any()):
        # flip only the flagged rows, in place: the same values as torch.where(f, hflip(out), out) without
        # flipping (and then selecting from) the whole batch (a fifth of a 224 px step's replay time)
        rows = flips.to(images.device).nonzero().flatten()
        out[rows] = out[rows].flip(-1)
    return out


def apply_cutmix(x: torch.Tensor, mix: MixParams) -> torch.Tensor:
    """Paste ``x[perm]`` into the mix box of every image of ``x`` ``(B, C, H, W)`` (a new tensor)."""
    x0, y0, w, h = mix.box
    if w == 0 or h == 0:
        return x
    out = x.clone()
    out[:, :, y0:y0 + h, x0:x0 + w] = x[mix.perm.to(x.device), :, y0:y0 + h, x0:x0 + w]
    return out


def random_roll(gen: torch.Generator, x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Jitter: roll the whole batch by one random (dy, dx) in [-max_shift, max_shift] pixels."""
    if max_shift <= 0:
        return x
    d = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen)
    return torch.roll(x, shifts=(int(d[0]), int(d[1])), dims=(2, 3))


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Bool ``(n,)`` → uint8 ``(ceil(n/8),)``, little-endian bit order within each byte."""
    n = bits.numel()
    pad = (-n) % 8
    b = torch.cat([bits.flatten().to(torch.uint8), torch.zeros(pad, dtype=torch.uint8)]).view(-1, 8)
    weights = (2 ** torch.arange(8, dtype=torch.int32)).to(torch.uint8)
    return (b * weights).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``n`` bits as bool ``(n,)``."""
    weights = (2 ** torch.arange(8, dtype=torch.int32))
    return ((packed.to(torch.int32)[:, None] & weights) != 0).flatten()[:n]
