"""scikit-learn's handwritten digits (8×8, 1,797 images), natively or resized to 28×28."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .registry import ImageSet, register_dataset

# Handwritten digits are not mirror-symmetric (a flipped 2, 3, 7 is no digit) and a crop of under a quarter of
# the area is a piece of one stroke: configs/digits_lpld.yaml's relabel crop_scale [0.25, 1.0] and no flip, which
# BENCHMARKS.md sections "digits" and "mnist_defaults" measure.
DIGIT_AUGMENTATION = {"mirror_symmetric": False, "min_crop_scale": 0.25}

# A fixed stratified 80/20 split (seed 0) of the 1,797 images: 1,437 train / 360 test.
_TEST_FRACTION = 0.2


def _load(split: str, size: int) -> ImageSet:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    tr, te = train_test_split(idx, test_size=_TEST_FRACTION, stratify=d.target, random_state=0)
    sel = np.sort(tr if split == "train" else te)
    x = torch.from_numpy(d.images[sel].astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8) in [0,1]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    x8 = (x * 255).round().to(torch.uint8)
    y = torch.from_numpy(d.target[sel].astype(np.int64))
    xf = x8.float() / 255
    return ImageSet(x8, y, [str(i) for i in range(10)], (float(xf.mean()),), (float(xf.std()),))


@register_dataset("digits", **DIGIT_AUGMENTATION)
def digits(root: str | None, split: str) -> ImageSet:
    """scikit-learn digits at 8×8 (``root`` is ignored: the data ships with scikit-learn)."""
    return _load(split, 8)


@register_dataset("digits28", **DIGIT_AUGMENTATION)
def digits28(root: str | None, split: str) -> ImageSet:
    """scikit-learn digits resized bilinearly to 28×28, to pair with the MNIST family."""
    return _load(split, 28)
