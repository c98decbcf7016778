"""The dataset registry and the :class:`ImageSet` every dataset loads as (see the package docstring)."""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ConfigError, RegistryError

_DATASETS: dict[str, Callable[..., "ImageSet"]] = {}
_AUGMENTATION: dict[str, "AugmentationHints"] = {}
_DEFAULT_ROOTS: dict[str, str] = {}
# Options every dataset takes beyond its loader's own: normalisation, and how it may be augmented.
COMMON_OPTIONS = ("mean", "std", "mirror_symmetric")


@dataclass(frozen=True)
class AugmentationHints:
    """What sensible augmentation of a dataset needs (read by :mod:`labeldistill.data.presets`).

    Attributes:
        mirror_symmetric: a horizontally flipped image is still an image of its class (clothes, objects, animals:
            yes; digits and letters: no, a mirrored 2 or 7 is no digit).
        min_crop_scale: smallest sensible RandomResizedCrop area, as a fraction of the image (0.08 is the
            ImageNet recipe's; a crop of 8 % of a 28 px digit is an 8 px patch of one stroke).
    """

    mirror_symmetric: bool = True
    min_crop_scale: float = 0.08


@dataclass
class ImageSet:
    """An image classification split.

    Attributes:
        images: uint8 ``(N, C, H, W)`` with values 0..255: a tensor, or a lazy
            :class:`~labeldistill.data.imagefolder.LazyImages` (indexing by an int, slice, list, LongTensor or
            bool mask decodes the selected files into a tensor).
        labels: int64 tensor ``(N,)`` of class indices.
        classes: class names; index ``i`` is class ``i``.
        mean: per-channel normalisation mean, in [0, 1] pixel units.
        std: per-channel normalisation std, in [0, 1] pixel units.
        name: registry name of the dataset.
        meta: free-form extras; ``workers`` (set by :func:`labeldistill.data.loading.load_split`) is the number
            of DataLoader worker processes used to decode a lazy set.
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

    @property
    def is_lazy(self) -> bool:
        """True if ``images`` decodes files on indexing instead of being an in-memory tensor."""
        return not isinstance(self.images, torch.Tensor)

    def uint8_images(self) -> torch.Tensor:
        """Images as the uint8 tensor ``(N, C, H, W)`` (a lazy set is decoded completely; no float copy)."""
        return self.images[:] if self.is_lazy else self.images

    def float_images(self) -> torch.Tensor:
        """Images as float32 in [0, 1], ``(N, C, H, W)`` (a lazy set is decoded completely)."""
        images = self.images[:] if self.is_lazy else self.images
        return images.float().div_(255.0)

    def subset_indices(self, n: int | None, seed: int = 0) -> torch.Tensor:
        """Ascending int64 indices of the images :meth:`subset` keeps (all of them if ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return torch.arange(len(self))
        g = torch.Generator().manual_seed(seed)
        per_class = [torch.nonzero(self.labels == c).flatten() for c in range(self.num_classes)]
        k = n // self.num_classes
        rest = n - k * self.num_classes
        chosen = []
        for c, idx in enumerate(per_class):
            take = min(len(idx), k + (1 if c < rest else 0))
            chosen.append(idx[torch.randperm(len(idx), generator=g)[:take]])
        return torch.cat(chosen).sort().values

    def subset(self, n: int | None, seed: int = 0) -> "ImageSet":
        """A seeded, class-balanced subset of ``n`` images (all images if ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        return self.select(self.subset_indices(n, seed))

    def select(self, index: torch.Tensor) -> ImageSet:
        """The images at ``index`` (int64 ``(n,)``), in that order (a lazy set selects files, decodes nothing)."""
        images = self.images.take(index) if self.is_lazy else self.images[index]
        return ImageSet(images, self.labels[index], self.classes, self.mean, self.std, self.name, dict(self.meta))


def register_dataset(name: str, mirror_symmetric: bool = True, min_crop_scale: float = 0.08,
                     default_root: str | None = None) -> Callable:
    """Decorator: register ``fn(root, split) -> ImageSet`` under ``name``, with its :class:`AugmentationHints` and
    the folder its loader reads when ``root`` is None (``default_root``; for :func:`data_identity`)."""

    def deco(fn: Callable) -> Callable:
        _DATASETS[name] = fn
        _AUGMENTATION[name] = AugmentationHints(mirror_symmetric, min_crop_scale)
        if default_root is not None:
            _DEFAULT_ROOTS[name] = default_root
        return fn

    return deco


def data_identity(name: str, root: str | None) -> str:
    """The identity of a dataset's files, not of the folder they sit in: 16 hex digits over the name and byte size
    of every file under ``root`` (its path relative to ``root``; hidden files and folders left out), or under the
    dataset's registered default folder when ``root`` is None. ``"none"`` when there is no folder (a dataset that
    ships with a package, such as ``digits``), ``"(missing)"`` when the folder does not exist.

    Moving the files or naming their default folder explicitly keeps the identity; adding, removing, renaming or
    resizing a file changes it. Listed once per process and state of the folder itself (its modification time;
    a folder of 1.3 M ImageNet files takes a while: one ``stat`` per file).
    """
    folder = root if root is not None else _DEFAULT_ROOTS.get(name)
    if folder is None:
        return "none"
    top = Path(folder).expanduser().resolve()
    return _files_digest(str(top), top.stat().st_mtime_ns) if top.exists() else "(missing)"


@functools.lru_cache(maxsize=16)
def _files_digest(folder: str, mtime_ns: int) -> str:
    top = Path(folder)
    if top.is_file():
        entries = [(top.name, top.stat().st_size)]
    else:
        entries = []
        for here, dirs, files in os.walk(top, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(here).relative_to(top)
            entries += [((rel / f).as_posix(), os.stat(os.path.join(here, f)).st_size)
                        for f in sorted(files) if not f.startswith(".")]
    h = hashlib.sha256()
    for f, size in sorted(entries):
        h.update(f"{f}\0{size}\0".encode())
    return h.hexdigest()[:16]


def augmentation_hints(name: str) -> AugmentationHints:
    """The :class:`AugmentationHints` dataset ``name`` was registered with.

    Raises:
        RegistryError: unknown dataset name.
    """
    dataset_options(name)  # the unknown-name error with close matches
    return _AUGMENTATION[name]


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_DATASETS)


def dataset_options(name: str) -> list[str]:
    """Keyword options (beyond ``root`` and ``split``) that dataset ``name``'s loader accepts.

    Raises:
        RegistryError: unknown dataset name.
    """
    if name not in _DATASETS:
        close = difflib.get_close_matches(name, list_datasets(), n=3, cutoff=0.6)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise RegistryError(f"unknown dataset '{name}'{hint}; known datasets: {', '.join(list_datasets())}")
    return [p for p in inspect.signature(_DATASETS[name]).parameters if p not in ("root", "split")]


def check_dataset_options(name: str, options: dict[str, Any]) -> None:
    """Refuse options that are set (not None/False) but not supported by dataset ``name``.

    ``mean`` and ``std`` (they replace its normalisation) and ``mirror_symmetric`` (it replaces the registered
    :class:`AugmentationHints`) are supported by every dataset (:data:`COMMON_OPTIONS`).

    Raises:
        RegistryError: unknown dataset name.
        ConfigError: an option the dataset does not support (names the datasets that do).
    """
    known = dataset_options(name)
    for key, value in options.items():
        if value is None or value is False or key in known or key in COMMON_OPTIONS:
            continue
        users = [d for d in list_datasets() if key in dataset_options(d)]
        raise ConfigError(f"data.{key} is not supported by dataset '{name}' (only by: {', '.join(users) or 'none'}); "
                          f"remove it from the config")


def load_dataset(name: str, split: str, root: str | None = None, **options: Any) -> ImageSet:
    """Load split ``train`` or ``test`` of a registered dataset.

    Args:
        name: registry name.
        split: ``train`` or ``test``.
        root: folder with the files; None = the dataset's default.
        **options: dataset options such as ``image_size``, ``resize``, ``lazy`` (``imagefolder``), and
            ``mean`` / ``std`` (any dataset: per-channel normalisation in [0, 1] units, one value per channel);
            ``mirror_symmetric`` (any dataset) is accepted and not used for loading (:mod:`labeldistill.data.presets`).

    Raises:
        RegistryError: unknown dataset name (the message lists the known ones).
        ConfigError: an option the dataset does not support, or mean/std of the wrong length.
        DataError: missing or corrupt files.
    """
    check_dataset_options(name, options)
    if split not in ("train", "test"):
        raise RegistryError(f"unknown split '{split}'; known: train, test")
    known = dataset_options(name)
    passed = {k: v for k, v in options.items() if k in known and v is not None}
    ds = _DATASETS[name](root=root, split=split, **passed)
    for key in ("mean", "std"):
        value = options.get(key)
        if value is None:
            continue
        if len(value) != ds.shape[0]:
            raise ConfigError(f"data.{key} has {len(value)} values but '{name}' images have {ds.shape[0]} "
                              f"channel(s); give one value per channel")
        setattr(ds, key, tuple(float(v) for v in value))
    ds.name = name
    return ds
