"""Which stored steps a pruned label pool keeps (LPLD §4, spec §6): the counting rule and the selection.

A pruning factor ``f`` is the prune ratio ``r = 1 − 1/f`` (10× ↔ r = 0.9, 40× ↔ r = 0.975). ``S`` is the number
of stored steps, ``E`` of stored epochs, ``B_e = S / E`` the steps per stored epoch. Two pools:

* ``prefix`` (the default; the reference code, he-y/soft-label-pruning-for-dataset-distillation,
  ``relabel_and_validate/train_FKD_label_pruning_batch.py``: ``pool = pool[:int((1-args.prune_ratio)*total_steps)]``;
  spec §6.2): keep the **first** ``max(1, int((1 − r) · S))`` stored steps in generation order (global step ids
  ``0, 1, …``). Truncation, evaluated in floating point exactly as the reference does, so 10× of 600 steps keeps
  ``int(0.09999999999999998 · 600) = 59``; the published ratios 0.9, 0.95, 0.975, 0.98 and 0.99 are bit-equal to
  ``1 − 1/f`` for f = 10, 20, 40, 50, 100. Every stored step was drawn at random (its epoch's image permutation,
  crops, flips, CutMix), so the prefix *is* a random pruning. It holds ``⌊kept / B_e⌋`` whole stored epochs plus
  the start of the next one, and each stored epoch is a permutation of the images, so every image keeps at least
  ``⌊kept / B_e⌋`` views. Granularity ``epoch`` keeps the first ``max(1, int((1 − r) · E))`` stored epochs, whole
  (the reference's epoch granularity: the same expression over epochs). That is the largest number of whole epochs
  inside the batch granularity's step budget (``⌊int((1 − r)·S) / B_e⌋``, up to the float rounding of the two
  expressions), and at least one epoch.
* ``subset`` (this project's earlier rule): a seeded uniform random subset of ``max(1, round(S / f))`` steps
  (granularity ``batch``) or ``max(1, round(E / f))`` whole epochs (granularity ``epoch``). For one seed a larger
  factor's subset lies inside a smaller factor's. An image may keep no view at all (at 100×, most likely some do).

Metric strategies (``<metric>-easy|hard``, :mod:`labeldistill.labels.prune`) rank **all** stored steps by their
score and keep the best or worst ones; the pool only sets how many (the counting rule above). They promise no
coverage: an image whose steps all score badly keeps no view, and easy or hard images can take most of the budget.

Used by the prune stage, by relabel's ``only_kept`` route (generate only what pruning keeps: under ``prefix``
exactly the first steps) and by the dry run's storage estimate; this module is the only place the selection is made.
"""

from __future__ import annotations

import math

import torch

from ..augment import Stream, step_generator
from ..config.checks import one_of
from ..errors import ConfigError
from ..layout import LabelVariant
from ..variants import POOLS, parse_strategy

LEGACY_POOL = "subset"  # what a store or result that records no pool used (written before pools existed)
LEGACY_REPLAY = "pool"  # what a validate result that records no replay used


def num_kept(total: int, factor: float, pool: str = "prefix") -> int:
    """Units (steps or epochs) kept out of ``total`` at pruning factor ``factor`` (>= 1) under ``pool``.

    ``prefix``: ``max(1, ⌊(1 − r) · total⌋)`` with ``r = 1 − 1/factor``, the reference's truncation
    (``int((1 - prune_ratio) * total_steps)``), computed exactly as ``⌊total / factor⌋``. Departure: the
    reference evaluates ``1 - r`` in floating point, which lands just below ``1/factor`` for some factors and then
    keeps one unit fewer (59 of 600 steps at 10×, 1 of 6 epochs at 3×); we keep the count the formula means.
    ``subset``: ``max(1, round(total / factor))`` (the earlier behaviour).

    Raises:
        ConfigError: factor < 1, or an unknown pool.
    """
    if factor < 1:
        raise ConfigError(f"prune factor must be >= 1 (1 keeps everything), got {factor}")
    one_of(pool, POOLS, "prune.pool")
    if pool == "prefix":
        return max(1, min(total, math.floor(total / factor + 1e-9)))
    return max(1, min(total, round(total / factor)))


def select_steps(step_ids: list[int], factor: float, strategy: str = "random", seed: int = 0,
                 scores: dict[int, float] | None = None, pool: str = "prefix") -> list[int]:
    """The step ids kept at ``factor`` (granularity ``batch``), sorted.

    Args:
        step_ids: the stored step ids (all of a full store: their sorted order is the generation order).
        factor: pruning factor >= 1.
        strategy: ``random`` or ``<metric>-easy|hard``.
        seed: seed of the random permutation (pool ``subset``).
        scores: step id → score, required by metric strategies (see :func:`~labeldistill.labels.prune.step_score`).
        pool: ``prefix`` (the first ids) or ``subset`` (a seeded random subset); sets the count of every strategy.

    Raises:
        ConfigError: factor < 1, unknown strategy or pool, or missing scores.
    """
    k = num_kept(len(step_ids), factor, pool)
    metric, keep = parse_strategy(strategy)
    ids = sorted(step_ids)
    if metric == "random":
        if pool == "prefix":
            return ids[:k]
        order = torch.randperm(len(ids), generator=step_generator(seed, Stream.PRUNE))
        return sorted(ids[i] for i in order[:k].tolist())
    if scores is None:
        raise ConfigError(f"prune strategy '{strategy}' needs step scores")
    sign = -1.0 if keep == "easy" else 1.0
    ranked = sorted(ids, key=lambda g: (sign * scores[g], g))
    return sorted(ranked[:k])


def select_epochs(num_epochs: int, factor: float, seed: int = 0, pool: str = "prefix") -> list[int]:
    """Whole stored epochs kept at ``factor`` (granularity ``epoch``, random), sorted: the first ones
    (``prefix``) or a seeded random subset (``subset``)."""
    k = num_kept(num_epochs, factor, pool)
    if pool == "prefix":
        return list(range(k))
    order = torch.randperm(num_epochs, generator=step_generator(seed, Stream.PRUNE, 1))
    return sorted(order[:k].tolist())


def kept_steps(step_ids: list[int], variant: LabelVariant, seed: int, steps_per_epoch: int, epochs: int,
               scores: dict[int, float] | None = None) -> list[int]:
    """The stored steps a label variant keeps, sorted: whole epochs (granularity ``epoch``, random only, by
    :func:`select_epochs`) or single steps (granularity ``batch``, by :func:`select_steps`), from its pool.

    Raises:
        ConfigError: bad factor, strategy, pool or granularity, or a metric strategy without ``scores``.
    """
    metric, _ = parse_strategy(variant.strategy)
    if variant.granularity == "epoch":
        if metric != "random":
            raise ConfigError("granularity 'epoch' supports only the random strategy")
        keep = set(select_epochs(epochs, variant.factor, seed, variant.pool))
        return [g for g in sorted(step_ids) if g // steps_per_epoch in keep]
    if variant.granularity == "batch":
        return select_steps(step_ids, variant.factor, variant.strategy, seed, scores, variant.pool)
    raise ConfigError(f"unknown granularity '{variant.granularity}'; known: batch, epoch")


def recipe_mismatch(recorded: dict, variant: LabelVariant, with_replay: bool = False) -> str | None:
    """How a recorded store or result differs from ``variant`` in pool (and replay), or ``None``.

    Args:
        recorded: a store manifest's ``prune`` entry, or a validate result row (``with_replay``).
        variant: what is asked for. At factor 1 every pool keeps every step, so the pool is not compared there.
        with_replay: compare the recorded ``replay`` too.

    Entries that record no pool were written before pools existed and used ``subset``; results that record no
    replay used ``pool``.
    """
    diffs = []
    pool = recorded.get("pool", LEGACY_POOL)
    if float(variant.factor) != 1.0 and pool != variant.pool:
        diffs.append(f"prune.pool '{pool}', not '{variant.pool}'")
    replay = recorded.get("replay", LEGACY_REPLAY)
    if with_replay and replay != variant.replay_mode:
        diffs.append(f"prune.replay '{replay}', not '{variant.replay_mode}'")
    return "; ".join(diffs) or None
