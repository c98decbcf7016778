"""IDX reader (the MNIST family file format), gzip or raw, and the ``fashion-mnist`` dataset."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .registry import ImageSet, register_dataset

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
]
# Mean/std of the Fashion-MNIST training images in [0, 1] units (computed over all 60k images).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a numpy array.

    Format: 2 zero bytes, a dtype code, the number of dimensions, then big-endian int32 sizes and data.

    Raises:
        DataError: the file is missing or unreadable, has the wrong magic number or dtype code, or sizes that
            do not give exactly its length (truncated, extra bytes, or a corrupt dimension byte).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (unknown data type code {raw[2]:#04x} in the magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[raw[2]])
    count = math.prod(dims)  # Python ints: corrupt sizes must not wrap around (np.prod is int64)
    need = count * dtype.itemsize
    if len(raw) - header != need:  # an IDX file is exactly header + data: anything else is a corrupt size
        raise DataError(f"{path} is truncated or has a corrupt header: sizes {dims} need {need} data bytes, "
                        f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"missing {stem}[.gz] in {root}; point data.root at a folder with the Fashion-MNIST IDX files "
        "(Debian: apt-get install dataset-fashion-mnist)"
    )


def load_idx_split(root: str | Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte`` as ``(N,1,H,W)`` uint8, ``(N,)``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}; set data.root to a folder with the IDX files")
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{root}: images {images.shape} and labels {labels.shape} do not match")
    if len(images) == 0:
        raise DataError(f"{root}: the {prefix} split is empty")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{root}: {prefix} images and labels must be unsigned bytes (IDX type 0x08), found "
                        f"{images.dtype} and {labels.dtype}; the header is corrupt")
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


@register_dataset("fashion-mnist", default_root=FASHION_MNIST_DEFAULT_ROOT)
def fashion_mnist(root: str | None, split: str) -> ImageSet:
    """Fashion-MNIST (Xiao et al. 2017): 60k train / 10k test, 1×28×28, 10 classes."""
    prefix = "train" if split == "train" else "t10k"
    x, y = load_idx_split(root or FASHION_MNIST_DEFAULT_ROOT, prefix)
    if int(y.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{root or FASHION_MNIST_DEFAULT_ROOT}: {prefix} labels hold class {int(y.max())}, Fashion-MNIST "
                        f"has {len(FASHION_MNIST_CLASSES)} (0..9); the labels file is corrupt")
    return ImageSet(x, y, list(FASHION_MNIST_CLASSES), FASHION_MNIST_MEAN, FASHION_MNIST_STD)
