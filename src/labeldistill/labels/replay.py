"""Rebuilding the batch of a stored step from its compact parameters (FKD-style replay, spec §5).

Relabel builds each step's augmented batch with :func:`build_batch` before the teacher sees it, and validate
rebuilds it with the same function from the store, so the student trains on exactly the inputs whose teacher
logits were stored. Both keep the image set as uint8 ``(N, C, H, W)`` (a quarter of a float32 copy) and convert only
a step's rows: ``x.float() / 255`` per row gives exactly the values of converting the whole set at once.
"""

from __future__ import annotations

import torch

from ..augment import apply_crops_flips, apply_cutmix
from ..data import normalize
from .store import StepRecord


def build_batch(images: torch.Tensor, rec: StepRecord, out_hw: tuple[int, int], mean: tuple[float, ...],
                std: tuple[float, ...]) -> torch.Tensor:
    """The normalised augmented batch ``(B, C, H', W')`` of a step.

    Args:
        images: uint8 images ``(N, C, H, W)`` (converted to [0, 1] per step, only the step's rows), or float
            images in [0, 1]; both give bitwise the same batch.

    The stored crop boxes and flips are applied to the step's images, then the stored CutMix (if any).
    """
    x = images[rec.sample_idx]
    if not x.is_floating_point():
        x = x.float().div_(255.0)
    x = apply_crops_flips(x, rec.boxes, rec.flips, out_hw)
    if rec.mix is not None:
        x = apply_cutmix(x, rec.mix)
    return normalize(x, mean, std)
