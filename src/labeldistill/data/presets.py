"""Augmentation defaults that follow the dataset: flips only for mirror-symmetric images, crops no smaller than
the dataset's smallest sensible area.

The config keys ``squeeze.flip``, ``recover.flip``, ``relabel.flip`` and ``relabel.crop_scale`` default to
``None`` ("follow the data"). :func:`resolve_augmentation` replaces each ``None`` by a concrete value from the
dataset's registered :class:`~labeldistill.data.registry.AugmentationHints` (or ``data.mirror_symmetric``), so
that fingerprints, the stored ``config.yaml`` and the dry run all see concrete values. A value the config sets
always wins.

For a mirror-symmetric dataset whose smallest crop is 0.08 (Fashion-MNIST, CIFAR, Tiny-ImageNet, ImageNet,
``imagefolder``) the resolved values are the project's earlier fixed defaults (every flip on, relabel crops
``[0.08, 1.0]``), so run directories made before the defaults followed the data keep their fingerprints.
Digits (``digits``, ``digits28``, ``mnist-5k``) resolve to no flip and relabel crops ``[0.25, 1.0]``
(BENCHMARKS.md section ``mnist_defaults`` measures the change).
"""

from __future__ import annotations

from typing import Any

from .registry import augmentation_hints

FLIP_KEYS = ("squeeze", "recover", "relabel")  # sections whose ``flip`` follows the dataset


def resolve_augmentation(cfg: Any) -> Any:
    """Fill the unset (``None``) augmentation keys of a main-job config in place from its dataset; idempotent.

    Args:
        cfg: a :class:`labeldistill.config.Config`.

    Returns:
        ``cfg`` itself, every ``flip`` a bool and ``relabel.crop_scale`` a ``[low, high]`` list.

    Raises:
        RegistryError: unknown ``data.dataset``.
    """
    hints = augmentation_hints(cfg.data.dataset)
    mirror = hints.mirror_symmetric if cfg.data.mirror_symmetric is None else bool(cfg.data.mirror_symmetric)
    for section in FLIP_KEYS:
        sect = getattr(cfg, section)
        if sect.flip is None:
            sect.flip = mirror
    if cfg.relabel.crop_scale is None:
        cfg.relabel.crop_scale = [hints.min_crop_scale, 1.0]
    return cfg


def augmentation_summary(cfg: Any) -> str:
    """One line of the resolved augmentation keys and where their defaults come from (for the dry run)."""
    resolve_augmentation(cfg)
    hints = augmentation_hints(cfg.data.dataset)
    mirror = hints.mirror_symmetric if cfg.data.mirror_symmetric is None else bool(cfg.data.mirror_symmetric)
    where = "data.mirror_symmetric" if cfg.data.mirror_symmetric is not None else f"dataset '{cfg.data.dataset}'"
    keys = ", ".join(f"{s}.flip {str(getattr(cfg, s).flip).lower()}" for s in FLIP_KEYS)
    return (f"{keys}, relabel.crop_scale {cfg.relabel.crop_scale} (unset keys follow the data: {where} is "
            f"{'' if mirror else 'not '}mirror-symmetric, smallest crop {hints.min_crop_scale:g})")
