"""Rebuilding the batch of a stored step from its compact parameters (FKD-style replay, spec §5).

Relabel builds each step's augmented batch with :func:`build_batch` before the teacher sees it, and validate
rebuilds it with the same function from the store, so the student trains on exactly the inputs whose teacher
logits were stored.
"""

from __future__ import annotations

import torch

from ..augment import apply_crops_flips, apply_cutmix
from ..data import normalize
from .store import StepRecord


def build_batch(images: torch.Tensor, rec: StepRecord, out_hw: tuple[int, int], mean: tuple[float, ...],
                std: tuple[float, ...]) -> torch.Tensor:
    """The normalised augmented batch ``(B, C, H', W')`` of a step, from float images ``(N, C, H, W)`` in [0, 1].

    The stored crop boxes and flips are applied to the step's images, then the stored CutMix (if any).
    """
    x = apply_crops_flips(images[rec.sample_idx], rec.boxes, rec.flips, out_hw)
    if rec.mix is not None:
        x = apply_cutmix(x, rec.mix)
    return normalize(x, mean, std)
