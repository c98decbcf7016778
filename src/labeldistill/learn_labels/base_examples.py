"""Base-example selection (Bohdal et al. 2020, spec §2): the N fixed real images whose labels are learned.

Two modes:

- ``balanced``: N / C images drawn uniformly at random from each source class (no herding or coreset rule).
  The reference walks a shuffled training set and keeps the first N / C images of each class, which is the same
  distribution.
- ``unbalanced``: one random batch of N source images, whatever their classes (cross-dataset runs: the
  source labels are ignored and the labels are learned over the target classes).

Both draw from a seeded :class:`torch.Generator`, so a seed always gives the same indices; the indices are
saved with the labels.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, DataError


def candidate_pool(num_images: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``0..num_images-1`` not in ``exclude`` (e.g. the held-out validation images), ascending.

    Args:
        num_images: size of the source split.
        exclude: int64 indices to leave out, or ``None``.

    Returns:
        int64 tensor ``(M,)``.
    """
    keep = torch.ones(num_images, dtype=torch.bool)
    if exclude is not None and exclude.numel():
        keep[exclude] = False
    return torch.nonzero(keep).flatten()


def select_balanced(labels: torch.Tensor, n: int, num_classes: int, generator: torch.Generator,
                    pool: torch.Tensor | None = None) -> torch.Tensor:
    """``n / num_classes`` random images of every class.

    Args:
        labels: int64 source labels ``(M_total,)``.
        n: number of base examples N; must be a multiple of ``num_classes``.
        num_classes: number of source classes C.
        generator: seeded generator; the same seed gives the same indices.
        pool: indices allowed to be chosen (default: all).

    Returns:
        int64 indices ``(n,)`` into ``labels``, grouped by class (class 0 first), ascending within a class.

    Raises:
        ConfigError: ``n`` is not a positive multiple of ``num_classes``.
        DataError: a class has fewer than ``n / num_classes`` images in the pool.
    """
    if n < num_classes or n % num_classes:
        raise ConfigError(f"balanced base examples need base.n to be a multiple of the {num_classes} source "
                          f"classes, got {n}; change base.n or use base.mode=unbalanced")
    per_class = n // num_classes
    pool = torch.arange(len(labels)) if pool is None else pool
    pool_labels = labels[pool]
    chosen = []
    for c in range(num_classes):
        members = pool[pool_labels == c]
        if len(members) < per_class:
            raise DataError(f"class {c} has only {len(members)} images available, {per_class} needed for "
                            f"base.n={n}; lower base.n")
        pick = members[torch.randperm(len(members), generator=generator)[:per_class]]
        chosen.append(pick.sort().values)
    return torch.cat(chosen)


def select_unbalanced(num_images: int, n: int, generator: torch.Generator,
                      pool: torch.Tensor | None = None) -> torch.Tensor:
    """One random batch of ``n`` images, whatever their classes.

    Args:
        num_images: size of the source split.
        n: number of base examples N.
        generator: seeded generator.
        pool: indices allowed to be chosen (default: all).

    Returns:
        int64 indices ``(n,)``, ascending.

    Raises:
        DataError: fewer than ``n`` images are available.
    """
    pool = torch.arange(num_images) if pool is None else pool
    if len(pool) < n:
        raise DataError(f"only {len(pool)} source images are available, base.n={n} requested; lower base.n")
    return pool[torch.randperm(len(pool), generator=generator)[:n]].sort().values


def select_base_examples(labels: torch.Tensor, n: int, mode: str, num_classes: int, seed: int,
                         exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Choose the N base examples of a source split.

    Args:
        labels: int64 source labels ``(M,)``.
        n: number of base examples N.
        mode: ``balanced`` or ``unbalanced``.
        num_classes: number of source classes (balanced mode).
        seed: seed of the :class:`torch.Generator` used for the draw.
        exclude: indices that must not be chosen (the validation images of a within-dataset run).

    Returns:
        int64 indices ``(n,)`` into the source split.

    Raises:
        ConfigError: unknown mode, or N incompatible with balanced selection.
        DataError: not enough images.
    """
    g = torch.Generator().manual_seed(seed)
    pool = candidate_pool(len(labels), exclude)
    if mode == "balanced":
        return select_balanced(labels, n, num_classes, g, pool)
    if mode == "unbalanced":
        return select_unbalanced(len(labels), n, g, pool)
    raise ConfigError(f"unknown base.mode '{mode}'; known: balanced, unbalanced")
