"""Stage 5, prune: keep a fraction of the stored steps and write a real, smaller store (LPLD §4, spec §6).

A pruning factor ``f`` (prune ratio ``r = 1 − 1/f``) keeps about ``S / f`` of the ``S`` stored steps
(granularity ``batch``) or ``E / f`` of the ``E`` stored epochs, whole (granularity ``epoch``): 1× keeps all, 10×
keeps 10 %, 40× keeps 2.5 %. The exact count and which steps come from the pool (:mod:`labeldistill.labels.pool`):
``prefix`` (default, the reference) keeps the first ``max(1, int((1 − r)·S))`` steps in generation order, ``subset``
a seeded random ``max(1, round(S / f))``. The pruned store's manifest records the pool (``prune.pool``).

Strategies:

* ``random`` — pool ``prefix``: the first stored steps, a random pruning since every stored step was drawn at
  random, and every image keeps at least ``⌊kept / steps_per_epoch⌋`` views. Pool ``subset``: a seeded random
  permutation's first entries. Either way, for one seed the steps kept at a larger factor are a subset of those
  kept at a smaller one. The paper's recommended choice.
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

  They rank every stored step, so they cover images unevenly: an image whose steps all score low (easy) or high
  (hard) keeps no view at all; the pool sets only how many steps are kept.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import Config
from ..errors import ConfigError, LabelDistillError, StoreError
from ..io import read_json
from ..layout import RunLayout
from ..main_stages import PRUNE
from ..provenance import StageRef
from ..runner import run_unit
from ..variants import label_variants
from ..layout import LabelVariant
from ..variants import parse_strategy
from .pool import LEGACY_POOL, recipe_mismatch
from .pool import kept_steps
from .store import LabelStore, LabelStoreWriter, StepRecord


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


def prune_store(source: str | Path, dest: str | Path, factor: float, strategy: str = "random", seed: int = 0,
                logits: str = "fp16", granularity: str = "batch", image_labels: torch.Tensor | None = None,
                overwrite: bool = False, pool: str = "prefix", steps_per_shard: int | None = None) -> LabelStore:
    """Write ``dest``: the steps of ``source`` kept at ``factor``, in label format ``logits``.

    The kept steps are streamed: read one by one and written a shard of ``steps_per_shard`` at a time, so at
    most one shard's records are in memory, whatever the store's size.

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
        pool: ``prefix`` (the first stored steps, the reference) or ``subset`` (a seeded random subset).
        steps_per_shard: steps per shard of ``dest``; None = as many as the source's first shard holds (the
            source's ``relabel.steps_per_shard`` unless the whole source fits in one shard).

    Raises:
        StoreError: the source is not a full label store; ConfigError: bad factor, strategy or format.
    """
    src = LabelStore(source)
    if src.manifest["prune"]["strategy"] != "none":
        raise StoreError(f"{source} is already pruned; prune the full store instead")
    metric, _ = parse_strategy(strategy)
    scores = None
    if metric != "random" and granularity == "batch":
        scores = {g: step_score(src.get(g), metric, image_labels, src.manifest["num_classes"])
                  for g in src.step_ids}
    kept = kept_steps(src.step_ids, LabelVariant(float(factor), strategy, logits, granularity, pool), seed,
                      src.manifest["steps_per_epoch"], src.manifest["epochs"], scores)
    meta = {k: v for k, v in src.manifest.items()
            if k not in ("format", "schema_version", "shards", "component_bytes", "num_steps", "num_entries",
                         "seconds")}
    meta["logits_format"] = logits
    meta["prune"] = {"factor": float(factor), "strategy": strategy, "granularity": granularity, "pool": pool,
                     "seed": seed, "source_steps": len(src), "kept_steps": len(kept)}
    sps = steps_per_shard or src.manifest["shards"][0]["num_steps"]
    writer = LabelStoreWriter(dest, meta, steps_per_shard=sps, overwrite=overwrite)
    try:
        for g in kept:
            writer.add(src.get(g))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def prune_all(cfg: Config, mode: str, force: bool | set[str] = False) -> list[Path]:
    """Write ``labels/<mode>/<tag>`` for every configured label variant.

    An existing store is kept when it was made with the current settings, refused otherwise (``force``
    recomputes it; a set of stage keys recomputes just those, see :class:`labeldistill.provenance.StageRef`).

    Raises:
        LabelDistillError: no full store yet (run relabel first); StaleStageError: a store made with other
        settings (without ``force``).
    """
    keys = None if isinstance(force, bool) else force
    return [prune_one(cfg, mode, v, force=force if keys is None else PRUNE.ref(mode, v).key in keys)
            for v in label_variants(cfg)]


@PRUNE.runs
def _prune_unit(cfg: Config, ref: StageRef, force: bool) -> Path:
    return prune_one(cfg, ref.mode, ref.variant, force=force)


def prune_one(cfg: Config, mode: str, v: LabelVariant, force: bool = False) -> Path:
    """Write (or reuse) ``labels/<mode>/<tag>`` of one label variant (see :func:`prune_all`); returns its path."""
    layout = RunLayout(cfg.run_path)
    dest = layout.pruned_store(mode, v)
    run_unit(PRUNE, cfg, PRUNE.ref(mode, v), lambda: _prune(cfg, mode, v, layout),
             reuse=lambda: check_pruned_store(dest, v), force=force, layout=layout, sync=False)
    return dest


def _prune(cfg: Config, mode: str, v: LabelVariant, layout: RunLayout) -> tuple[None, float]:
    """Write the pruned store of ``v`` from the full store; returns ``(None, seconds)``."""
    if not (layout.full_store(mode) / "manifest.json").is_file():
        raise LabelDistillError(f"no full label store for mode '{mode}' in {layout.full_store(mode)}: run "
                                "'labeldistill relabel CONFIG' first")
    images = read_json(layout.images_dir(mode) / "images.json")
    labels = torch.arange(len(images["classes"])).repeat_interleave(images["ipc"])
    t0 = time.time()
    prune_store(layout.full_store(mode), layout.pruned_store(mode, v), v.factor, v.strategy, cfg.seed, v.logits,
                v.granularity, image_labels=labels, overwrite=True, pool=v.pool,
                steps_per_shard=cfg.relabel.steps_per_shard)
    return None, time.time() - t0


def check_pruned_store(path: str | Path, variant: LabelVariant) -> None:
    """Refuse to reuse the store at ``path`` for ``variant`` when its manifest records another pool (a store
    written before pools existed used ``subset``).

    Raises:
        StoreError: naming the recorded and the asked-for pool, and the fix.
    """
    recorded = LabelStore(path).manifest["prune"]
    diff = recipe_mismatch(recorded, variant)
    if diff:
        raise StoreError(f"label store {path} was made with {diff}: rebuild it (--force, or delete it) or set "
                         f"prune.pool: {recorded.get('pool', LEGACY_POOL)}")
