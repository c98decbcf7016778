"""Reading a configured split and streaming it in batches: normalisation, the configured subset, and a
stock DataLoader that decodes a lazy set in worker processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError
from .registry import ImageSet, dataset_options, load_dataset


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for float images ``(N, C, H, W)`` in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def data_options(cfg: Any) -> dict[str, Any]:
    """Dataset loader options from a main-job config's ``data`` section (see :func:`load_dataset`)."""
    d = cfg.data
    return {"image_size": d.image_size, "resize": d.resize, "lazy": d.lazy, "mean": d.mean, "std": d.std,
            "class_order": getattr(d, "class_order", None)}


HOLDOUT_SEED = 20_231_129
"""Seed of the ``data.holdout`` draw: fixed, so every run seed holds out the same images."""
TEST_HOLDOUT_SEED = 20_260_101
"""Seed of the ``data.test_holdout`` draw (the test split held out of the train split), fixed like :data:`HOLDOUT_SEED`."""

SPLITS = ("train", "test", "holdout")


def holdout_indices(labels: torch.Tensor, num_classes: int, n: int, seed: int = HOLDOUT_SEED,
                    key: str = "data.holdout") -> torch.Tensor:
    """Indices (sorted, int64 ``(n,)``) of the ``n`` train images that ``key`` holds out.

    ``n / num_classes`` images of every class, drawn with ``seed`` (independent of the run seed).

    Args:
        labels: int64 ``(N,)`` class indices of the whole train split.
        num_classes: number of classes.
        n: the number to hold out (``data.holdout`` or ``data.test_holdout``).
        seed: seed of the draw (:data:`HOLDOUT_SEED` or :data:`TEST_HOLDOUT_SEED`).
        key: the config key, for messages.

    Raises:
        ConfigError: ``n`` not smaller than the train split, not a multiple of ``num_classes``, or leaving a
            class without a training image.
    """
    if n >= len(labels):
        raise ConfigError(f"{key} ({n}) must be smaller than the train split ({len(labels)} images)")
    if n % num_classes:
        raise ConfigError(f"{key} ({n}) must be a multiple of the number of classes ({num_classes}), at least "
                          f"{num_classes} (one image per class), so that the held-out split is class-balanced")
    k = n // num_classes
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if k >= len(idx):
            raise ConfigError(f"{key} ({n}) holds out {k} images per class but class {c} has only {len(idx)} "
                              "train images; hold out fewer so that every class keeps one to train on")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(chosen).sort().values


def hold_out(ds: ImageSet, n: int, seed: int, key: str) -> tuple[ImageSet, ImageSet]:
    """``(the rest, the n held-out images)`` of ``ds`` (:func:`holdout_indices`; a lazy set decodes nothing).

    Raises:
        ConfigError: see :func:`holdout_indices`.
    """
    out = holdout_indices(ds.labels, ds.num_classes, n, seed, key)
    keep = torch.ones(len(ds), dtype=torch.bool)
    keep[out] = False
    return ds.select(torch.nonzero(keep).flatten()), ds.select(out)


def resize_images(images: torch.Tensor, image_size: int, resize: int | None = None) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` → ``(N, C, image_size, image_size)``: shorter side to ``resize`` (default
    ``image_size``) pixels, bilinear and antialiased, then a centre crop (torchvision's ``Resize`` +
    ``CenterCrop``, the geometry :func:`~labeldistill.data.imagefolder.resize_center_crop` gives an ImageFolder)."""
    from torchvision.transforms.v2 import functional as TF

    if tuple(images.shape[2:]) == (image_size, image_size):
        return images
    out = TF.resize(images, [resize or image_size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(out, [image_size, image_size]).contiguous()


def load_at_size(name: str, split: str, root: str | None, image_size: int | None = None,
                 resize: int | None = None, **options: Any) -> ImageSet:
    """A dataset split at ``image_size`` pixels whatever its native size (for cross-dataset runs).

    A dataset whose loader resizes (``imagefolder``: Pillow, per file) gets ``image_size`` / ``resize``; any other
    is loaded at its native size and its uint8 tensor resized with :func:`resize_images`.

    Raises:
        RegistryError / ConfigError / DataError: see :func:`labeldistill.data.load_dataset`.
    """
    if "image_size" in dataset_options(name):
        return load_dataset(name, split, root, image_size=image_size, resize=resize, **options)
    ds = load_dataset(name, split, root, **options)
    if image_size is not None:
        ds.images = resize_images(ds.uint8_images(), image_size, resize)
    return ds


def load_split(cfg: Any, split: str) -> ImageSet:
    """The configured dataset split, subset as configured (seeded, class-balanced).

    With ``data.test_holdout`` = t > 0, ``test`` is t images held out of the train split (:func:`hold_out`,
    :data:`TEST_HOLDOUT_SEED`) and every other split starts from the train split less them. With
    ``data.holdout`` = n > 0, ``train`` is the train split less the n held-out images
    (:func:`holdout_indices`; ``data.train_subset`` then draws from the rest) and ``holdout`` is those n images
    (never subset). A lazy split keeps only its file list; ``meta["workers"]`` records ``data.workers`` for the
    passes that stream it.

    Args:
        cfg: a :class:`labeldistill.config.Config`.
        split: ``train``, ``test`` or ``holdout``.

    Raises:
        ConfigError: unknown split, ``holdout`` asked with ``data.holdout: 0``, or a bad ``data.holdout`` /
            ``data.test_holdout`` (:func:`holdout_indices`).
        RegistryError / DataError: see :func:`labeldistill.data.load_dataset` (an ImageFolder without a test or
            val folder and no ``data.test_holdout``: :func:`~labeldistill.data.imagefolder.split_folder`).
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
    n_out, n_test = getattr(cfg.data, "holdout", 0), getattr(cfg.data, "test_holdout", 0)
    if split == "holdout" and not n_out:
        raise ConfigError("the holdout split needs data.holdout > 0 (images held out of the train split)")
    own_test = split == "test" and not n_test
    ds = load_dataset(cfg.data.dataset, "test" if own_test else "train", cfg.data.root, **data_options(cfg))
    if n_test:
        rest, test = hold_out(ds, n_test, TEST_HOLDOUT_SEED, "data.test_holdout")
        ds = test if split == "test" else rest
    if split != "test" and n_out:
        ds, held = hold_out(ds, n_out, HOLDOUT_SEED, "data.holdout")
        if split == "holdout":
            held.meta["workers"] = cfg.data.workers
            return held
    n = cfg.data.train_subset if split == "train" else cfg.data.test_subset
    ds = ds.subset(n, seed=cfg.seed)
    ds.meta["workers"] = cfg.data.workers
    return ds


@dataclass
class _DecodeFailure:
    """A DataError raised in a DataLoader worker, sent back as a value so the message stays one line."""

    message: str


class _BatchDecoder(Dataset):
    """``ds[index]`` → (uint8 images ``(n, C, H, W)``, int64 labels ``(n,)``) of one batch of a lazy set."""

    def __init__(self, data: ImageSet):
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Any) -> Any:
        try:
            return self.images[index], self.labels[index]
        except DataError as e:
            return _DecodeFailure(str(e))


def iter_batches(data: ImageSet, batches: Sequence[Any], workers: int | None = None,
                 pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` for each index batch, in the given order.

    An in-memory set is indexed directly (no DataLoader, no copy beyond the indexing). A lazy set is decoded
    by a stock :class:`~torch.utils.data.DataLoader` whose sampler yields the batches (``batch_size=None``),
    with ``workers`` worker processes decoding ahead of the consumer.

    Args:
        data: the split.
        batches: slices, lists or LongTensors of image indices.
        workers: DataLoader worker processes for a lazy set; ``None`` = ``data.meta["workers"]`` (0 if unset).
        pin_memory: pin decoded batches (for asynchronous copies to CUDA).

    Yields:
        uint8 images ``(n, C, H, W)`` and int64 labels ``(n,)``.

    Raises:
        DataError: an image could not be decoded (same message as without workers).
    """
    if not data.is_lazy:
        for b in batches:
            yield data.images[b], data.labels[b]
        return
    workers = data.meta.get("workers", 0) if workers is None else workers
    # A private generator: creating the iterator then draws its worker base seed from it, not from the global
    # RNG, so a lazy run's augmentation (drawn from the global RNG in squeeze) matches an in-memory run.
    loader = DataLoader(_BatchDecoder(data), batch_size=None, sampler=list(batches), num_workers=workers,
                        pin_memory=pin_memory, prefetch_factor=4 if workers > 0 else None,
                        generator=torch.Generator().manual_seed(0))
    for item in loader:
        if isinstance(item, _DecodeFailure):
            raise DataError(item.message)
        yield item
