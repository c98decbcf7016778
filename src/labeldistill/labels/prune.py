"""Stage 5, prune: keep a fraction of the stored steps and write a real, smaller store (LPLD §4, spec §6).

A pruning factor ``f`` keeps ``max(1, round(S / f))`` of the ``S`` stored steps (granularity ``batch``) or
``max(1, round(E / f))`` of the ``E`` stored epochs, whole (granularity ``epoch``): 1× keeps all, 10× keeps
10 %, 40× keeps 2.5 %.

Strategies:

* ``random`` — a seeded random permutation; its first entries are kept, so for one seed the steps kept at a
  larger factor are a subset of those kept at a smaller one. The paper's recommended choice.
* ``<metric>-easy`` / ``<metric>-hard`` — score every stored step by the mean of a per-entry metric and keep
  the highest-scoring (easy) or lowest-scoring (hard) steps (ties broken by step id). The paper compares
  such metrics with random pruning (LPLD Table 5); its definitions are known only from secondary
  descriptions, so these are **this project's definitions**, with ``p = softmax(stored logits)`` and ``y``
  the class of the entry's own image (its class before any CutMix):

  - ``confidence``: ``max_c p_c`` — the teacher's confidence.
  - ``diff``: ``p_(1) − p_(2)``, the gap between the two largest probabilities (certainty of the label).
  - ``diff_signed``: ``p_y − max_{c≠y} p_c`` — positive when the teacher prefers the image's class.
  - ``correct``: 1 if ``argmax_c p_c = y`` else 0 (the step score is the fraction of correct entries).
  - ``cut_ratio``: the step's CutMix λ (1 for a step without CutMix): high λ = little mixing = easy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..augment import step_generator
from ..errors import ConfigError, StoreError
from .store import LabelStore, LabelStoreWriter, StepRecord

_PRUNE_KEY = 21
METRICS = ("confidence", "diff", "diff_signed", "correct", "cut_ratio")


def parse_strategy(name: str) -> tuple[str, str | None]:
    """``"random"`` → ("random", None); ``"confidence-easy"`` → ("confidence", "easy").

    Raises:
        ConfigError: unknown metric or keep direction.
    """
    if name == "random":
        return "random", None
    metric, _, keep = name.rpartition("-")
    if metric not in METRICS or keep not in ("easy", "hard"):
        raise ConfigError(f"unknown prune strategy '{name}'; known: random, or <metric>-easy|hard with metric "
                          f"in {', '.join(METRICS)}")
    return metric, keep


def num_kept(total: int, factor: float) -> int:
    """Units (steps or epochs) kept out of ``total`` at pruning factor ``factor`` (>= 1).

    Raises:
        ConfigError: factor < 1.
    """
    if factor < 1:
        raise ConfigError(f"prune factor must be >= 1 (1 keeps everything), got {factor}")
    return max(1, min(total, round(total / factor)))


def step_score(rec: StepRecord, metric: str, image_labels: torch.Tensor | None, num_classes: int) -> float:
    """The mean per-entry ``metric`` of one stored step (see the module docstring).

    Raises:
        ConfigError: a metric that needs image labels without them.
    """
    if metric == "cut_ratio":
        return 1.0 if rec.mix is None else float(rec.mix.lam)
    p = rec.soft_targets(num_classes)
    if metric == "confidence":
        return float(p.max(1).values.mean())
    if metric == "diff":
        top2 = p.topk(2, dim=1).values
        return float((top2[:, 0] - top2[:, 1]).mean())
    if image_labels is None:
        raise ConfigError(f"prune metric '{metric}' needs the class of every image")
    y = image_labels[rec.sample_idx]
    if metric == "correct":
        return float((p.argmax(1) == y).float().mean())
    if metric == "diff_signed":
        py = p.gather(1, y[:, None]).squeeze(1)
        other = p.scatter(1, y[:, None], -1.0).max(1).values
        return float((py - other).mean())
    raise ConfigError(f"unknown prune metric '{metric}'")


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
        order = torch.randperm(len(ids), generator=step_generator(seed, _PRUNE_KEY))
        return sorted(ids[i] for i in order[:k].tolist())
    if scores is None:
        raise ConfigError(f"prune strategy '{strategy}' needs step scores")
    sign = -1.0 if keep == "easy" else 1.0
    ranked = sorted(ids, key=lambda g: (sign * scores[g], g))
    return sorted(ranked[:k])


def select_epochs(num_epochs: int, factor: float, seed: int = 0) -> list[int]:
    """Whole stored epochs kept at ``factor`` (granularity ``epoch``, random), sorted."""
    k = num_kept(num_epochs, factor)
    order = torch.randperm(num_epochs, generator=step_generator(seed, _PRUNE_KEY, 1))
    return sorted(order[:k].tolist())


def prune_store(source: str | Path, dest: str | Path, factor: float, strategy: str = "random", seed: int = 0,
                logits: str = "fp16", granularity: str = "batch", image_labels: torch.Tensor | None = None,
                overwrite: bool = False) -> LabelStore:
    """Write ``dest``: the steps of ``source`` kept at ``factor``, in label format ``logits``.

    Args:
        source: a full (unpruned) label store.
        dest: the new store's directory.
        factor: pruning factor >= 1.
        strategy: ``random`` or ``<metric>-easy|hard``.
        seed: pruning seed.
        logits: ``fp16`` or ``top<k>``.
        granularity: ``batch`` (keep steps) or ``epoch`` (keep whole stored epochs; random only).
        image_labels: int64 ``(N,)`` class of every image (needed by ``correct`` and ``diff_signed``).
        overwrite: replace an existing ``dest``.

    Raises:
        StoreError: the source is not a full label store; ConfigError: bad factor, strategy or format.
    """
    src = LabelStore(source)
    if src.manifest["prune"]["strategy"] != "none":
        raise StoreError(f"{source} is already pruned; prune the full store instead")
    metric, _ = parse_strategy(strategy)
    if granularity == "epoch":
        if metric != "random":
            raise ConfigError("granularity 'epoch' supports only the random strategy")
        spe = src.manifest["steps_per_epoch"]
        epochs = set(select_epochs(src.manifest["epochs"], factor, seed))
        kept = [g for g in src.step_ids if g // spe in epochs]
    elif granularity == "batch":
        scores = None
        if metric != "random":
            scores = {g: step_score(src.get(g), metric, image_labels, src.manifest["num_classes"])
                      for g in src.step_ids}
        kept = select_steps(src.step_ids, factor, strategy, seed, scores)
    else:
        raise ConfigError(f"unknown granularity '{granularity}'; known: batch, epoch")
    meta = {k: v for k, v in src.manifest.items()
            if k not in ("format", "schema_version", "shards", "component_bytes", "num_steps", "num_entries",
                         "seconds")}
    meta["logits_format"] = logits
    meta["prune"] = {"factor": float(factor), "strategy": strategy, "granularity": granularity, "seed": seed,
                     "source_steps": len(src), "kept_steps": len(kept)}
    writer = LabelStoreWriter(dest, meta, steps_per_shard=max(len(kept), 1), overwrite=overwrite)
    try:
        for g in kept:
            writer.add(src.get(g))
    except BaseException:
        writer.abort()
        raise
    return writer.close()
