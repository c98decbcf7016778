"""Rebuilding the batch of a stored step from its compact parameters (FKD-style replay, spec §5).

Relabel builds each step's augmented batch with :func:`build_batch` before the teacher sees it, and validate
rebuilds it with the same function from the store, so the student trains on exactly the inputs whose teacher
logits were stored. Both keep the image set as uint8 ``(N, C, H, W)`` (a quarter of a float32 copy) and convert only
a step's rows: ``x.float() / 255`` per row gives exactly the values of converting the whole set at once.
"""

from __future__ import annotations

import torch

from ..augment import apply_crops_flips, apply_cutmix
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
        x = torch.div(x, 255.0)  # one pass, float32 result: bitwise x.float() / 255 (tests/test_memory.py)
    x = apply_crops_flips(x, rec.boxes, rec.flips, out_hw)
    if rec.mix is not None:
        x = apply_cutmix(x, rec.mix)
    # x is this step's own tensor: normalise it in place, the same arithmetic as normalize() (x - m) / s
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)
