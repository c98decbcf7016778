"""CIFAR-10 and CIFAR-100 as distributed (the "python version" pickle batches), read with
``torchvision.datasets.CIFAR10/100(download=False)``.

Layout (``data.root`` is the folder the archive was extracted into, or the extracted folder itself)::

    <root>/cifar-10-batches-py/{data_batch_1 … data_batch_5, test_batch, batches.meta}   # cifar-10-python.tar.gz
    <root>/cifar-100-python/{train, test, meta}                                          # cifar-100-python.tar.gz

Only the files of the requested split (and the meta file) must exist; their MD5 sums are not checked, so a
re-pickled or partial copy in the same format works. Labels: ``labels`` (CIFAR-10) or ``fine_labels``
(CIFAR-100, 100 classes); class names from the meta file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .registry import ImageSet, register_dataset

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# Per-channel mean/std of the training images in [0, 1] units (the values used throughout the literature).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _torchvision_class(which: str) -> type:
    """torchvision's CIFAR10/CIFAR100 with the MD5 checks off (our own check names missing files first)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if which == "cifar10" else CIFAR100

    class Reader(base):  # type: ignore[misc, valid-type]
        meta = {**base.meta, "md5": None}

        def _check_integrity(self) -> bool:
            return True

    return Reader


def _base_root(root: str | None, reader: type, dataset: str) -> Path:
    """The folder holding ``reader.base_folder`` (``root`` itself may be that extracted folder)."""
    if root is None:
        raise DataError(f"dataset '{dataset}' needs data.root: the folder into which {reader.filename} "
                        f"({CIFAR_URL}) was extracted, holding {reader.base_folder}/")
    r = Path(root)
    return r.parent if r.name == reader.base_folder else r


def load_cifar(root: str | None, split: str, which: str) -> ImageSet:
    """Load split ``train``/``test`` of ``cifar10`` or ``cifar100`` as uint8 ``(N, 3, 32, 32)``.

    Raises:
        DataError: no root, a missing batch file (named, with where to put it), an unreadable or corrupt one
            (any failure of the unpickling, e.g. a flipped byte in a pickle opcode), or images, labels and
            class names that do not fit together.
    """
    reader = _torchvision_class(which)
    folder = reader.base_folder
    base = _base_root(root, reader, which)
    files = [n for n, _ in (reader.train_list if split == "train" else reader.test_list)] + [reader.meta["filename"]]
    missing = [f for f in files if not (base / folder / f).is_file()]
    if missing:
        raise DataError(f"{which}: missing {base / folder / missing[0]}; extract {reader.filename} ({CIFAR_URL}) "
                        f"into {base} so that {base / folder}/ holds {', '.join(files)}")
    try:
        ds = reader(str(base), train=split == "train", download=False)
        x = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        y = np.asarray(ds.targets, dtype=np.int64)
        classes = [str(c) for c in ds.classes]
    except Exception as e:  # noqa: BLE001 - a corrupt pickle fails in any way (ImportError, IndexError, ...)
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{which}: cannot read the {split} batches in {base / folder} "
                        f"({type(e).__name__}: {first}); re-extract {reader.filename}") from None
    if len(y) != len(x) or len(x) == 0 or y.min() < 0 or y.max() >= len(classes):
        raise DataError(f"{which}: {base / folder} has {len(x)} images, {len(y)} labels and {len(classes)} "
                        "class names that do not fit together; re-extract it")
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if which == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageSet(torch.from_numpy(x), torch.from_numpy(y), classes, mean, std)


@register_dataset("cifar10")
def cifar10(root: str | None, split: str) -> ImageSet:
    """CIFAR-10 (Krizhevsky 2009): 50k train / 10k test, 3×32×32, 10 classes."""
    return load_cifar(root, split, "cifar10")


@register_dataset("cifar100")
def cifar100(root: str | None, split: str) -> ImageSet:
    """CIFAR-100 (Krizhevsky 2009): 50k train / 10k test, 3×32×32, 100 (fine) classes."""
    return load_cifar(root, split, "cifar100")
