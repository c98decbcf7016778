"""Dataset registry.

Every dataset loads into memory as a :class:`TensorDataset`-like :class:`ImageSet`: ``images`` as uint8
``(N, C, H, W)``, ``labels`` as int64 ``(N,)``, the class names and per-dataset normalisation. Nothing is
downloaded: users point ``data.root`` at their own files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import RegistryError

_DATASETS: dict[str, Callable[..., "ImageSet"]] = {}


@dataclass
class ImageSet:
    """An in-memory image classification split.

    Attributes:
        images: uint8 tensor ``(N, C, H, W)`` with values 0..255.
        labels: int64 tensor ``(N,)`` of class indices.
        classes: class names; index ``i`` is class ``i``.
        mean: per-channel normalisation mean, in [0, 1] pixel units.
        std: per-channel normalisation std, in [0, 1] pixel units.
        name: registry name of the dataset.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def float_images(self) -> torch.Tensor:
        """Images as float32 in [0, 1], ``(N, C, H, W)``."""
        return self.images.float().div_(255.0)

    def subset(self, n: int | None, seed: int = 0) -> "ImageSet":
        """A seeded, class-balanced subset of ``n`` images (all images if ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        per_class = [torch.nonzero(self.labels == c).flatten() for c in range(self.num_classes)]
        k = n // self.num_classes
        rest = n - k * self.num_classes
        chosen = []
        for c, idx in enumerate(per_class):
            take = min(len(idx), k + (1 if c < rest else 0))
            chosen.append(idx[torch.randperm(len(idx), generator=g)[:take]])
        sel = torch.cat(chosen).sort().values
        return ImageSet(self.images[sel], self.labels[sel], self.classes, self.mean, self.std, self.name,
                        dict(self.meta))


def register_dataset(name: str) -> Callable:
    """Decorator: register ``fn(root, split) -> ImageSet`` under ``name``."""

    def deco(fn: Callable) -> Callable:
        _DATASETS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(name: str, split: str, root: str | None = None) -> ImageSet:
    """Load split ``train`` or ``test`` of a registered dataset.

    Raises:
        RegistryError: unknown dataset name (the message lists the known ones).
        DataError: missing or corrupt files.
    """
    if name not in _DATASETS:
        raise RegistryError(f"unknown dataset '{name}'; known datasets: {', '.join(list_datasets())}")
    if split not in ("train", "test"):
        raise RegistryError(f"unknown split '{split}'; known: train, test")
    ds = _DATASETS[name](root=root, split=split)
    ds.name = name
    return ds


from . import digits, idx, imagefolder  # noqa: E402,F401  (registration side effects)
