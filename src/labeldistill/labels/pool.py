"""Which stored steps a pruned label pool keeps (LPLD §4, spec §6): the counting rule and the selection.

A pruning factor ``f`` keeps ``max(1, round(S / f))`` of the ``S`` stored steps (granularity ``batch``) or
of the ``E`` stored epochs, whole (granularity ``epoch``). Used by the prune stage, by relabel's
``only_kept`` route (generate only what pruning keeps) and by the dry-run's storage estimate.
"""

from __future__ import annotations

import torch

from ..augment import Stream, step_generator
from ..errors import ConfigError
from ..layout import LabelVariant
from ..variants import parse_strategy


def num_kept(total: int, factor: float) -> int:
    """Units (steps or epochs) kept out of ``total`` at pruning factor ``factor`` (>= 1).

    Raises:
        ConfigError: factor < 1.
    """
    if factor < 1:
        raise ConfigError(f"prune factor must be >= 1 (1 keeps everything), got {factor}")
    return max(1, min(total, round(total / factor)))


def select_steps(step_ids: list[int], factor: float, strategy: str = "random", seed: int = 0,
                 scores: dict[int, float] | None = None) -> list[int]:
    """The step ids kept at ``factor`` (granularity ``batch``), sorted.

    Args:
        step_ids: the stored step ids.
        factor: pruning factor >= 1.
        strategy: ``random`` or ``<metric>-easy|hard``.
        seed: seed of the random permutation.
        scores: step id → score, required by metric strategies (see :func:`step_score`).

    Raises:
        ConfigError: factor < 1, unknown strategy, or missing scores.
    """
    k = num_kept(len(step_ids), factor)
    metric, keep = parse_strategy(strategy)
    ids = sorted(step_ids)
    if metric == "random":
        order = torch.randperm(len(ids), generator=step_generator(seed, Stream.PRUNE))
        return sorted(ids[i] for i in order[:k].tolist())
    if scores is None:
        raise ConfigError(f"prune strategy '{strategy}' needs step scores")
    sign = -1.0 if keep == "easy" else 1.0
    ranked = sorted(ids, key=lambda g: (sign * scores[g], g))
    return sorted(ranked[:k])


def select_epochs(num_epochs: int, factor: float, seed: int = 0) -> list[int]:
    """Whole stored epochs kept at ``factor`` (granularity ``epoch``, random), sorted."""
    k = num_kept(num_epochs, factor)
    order = torch.randperm(num_epochs, generator=step_generator(seed, Stream.PRUNE, 1))
    return sorted(order[:k].tolist())


def kept_steps(step_ids: list[int], variant: LabelVariant, seed: int, steps_per_epoch: int, epochs: int,
               scores: dict[int, float] | None = None) -> list[int]:
    """The stored steps a label variant keeps, sorted: whole epochs (granularity ``epoch``, random only) or
    single steps (granularity ``batch``, by :func:`select_steps`).

    Raises:
        ConfigError: bad factor, strategy or granularity, or a metric strategy without ``scores``.
    """
    metric, _ = parse_strategy(variant.strategy)
    if variant.granularity == "epoch":
        if metric != "random":
            raise ConfigError("granularity 'epoch' supports only the random strategy")
        keep = set(select_epochs(epochs, variant.factor, seed))
        return [g for g in sorted(step_ids) if g // steps_per_epoch in keep]
    if variant.granularity == "batch":
        return select_steps(step_ids, variant.factor, variant.strategy, seed, scores)
    raise ConfigError(f"unknown granularity '{variant.granularity}'; known: batch, epoch")
