"""Stage 5, prune: keep a fraction of the stored steps and write a real, smaller store (LPLD §4, spec §6).

A pruning factor ``f`` keeps ``max(1, round(S / f))`` of the ``S`` stored steps: 1× keeps all, 10× keeps 10 %,
40× keeps 2.5 %. ``random`` ranks the steps by a seeded random permutation and keeps its first entries, so
for one seed the steps kept at a larger factor are a subset of those kept at a smaller one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..augment import step_generator
from ..errors import ConfigError, StoreError
from .store import LabelStore, LabelStoreWriter

_PRUNE_KEY = 21
STRATEGIES = ("random",)


def num_kept(total: int, factor: float) -> int:
    """Steps kept out of ``total`` at pruning factor ``factor`` (>= 1)."""
    if factor < 1:
        raise ConfigError(f"prune factor must be >= 1 (1 keeps everything), got {factor}")
    return max(1, min(total, round(total / factor)))


def select_steps(step_ids: list[int], factor: float, strategy: str = "random", seed: int = 0) -> list[int]:
    """The step ids kept at ``factor``, sorted.

    Raises:
        ConfigError: factor < 1 or unknown strategy.
    """
    k = num_kept(len(step_ids), factor)
    if strategy != "random":
        raise ConfigError(f"unknown prune strategy '{strategy}'; known: {', '.join(STRATEGIES)}")
    ids = sorted(step_ids)
    order = torch.randperm(len(ids), generator=step_generator(seed, _PRUNE_KEY))
    return sorted(ids[i] for i in order[:k].tolist())


def prune_store(source: str | Path, dest: str | Path, factor: float, strategy: str = "random", seed: int = 0,
                overwrite: bool = False) -> LabelStore:
    """Write ``dest``: the steps of ``source`` kept at ``factor``; the manifest records the pruning.

    Raises:
        StoreError: the source is not a label store; ConfigError: bad factor or strategy.
    """
    src = LabelStore(source)
    if src.manifest["prune"]["strategy"] != "none":
        raise StoreError(f"{source} is already pruned; prune the full store instead")
    kept = select_steps(src.step_ids, factor, strategy, seed)
    meta = {k: v for k, v in src.manifest.items()
            if k not in ("format", "schema_version", "shards", "component_bytes", "num_steps", "num_entries",
                         "num_classes", "logits_dtype", "seconds")}
    meta["prune"] = {"factor": float(factor), "strategy": strategy, "seed": seed,
                     "source_steps": len(src), "kept_steps": len(kept)}
    writer = LabelStoreWriter(dest, meta, steps_per_shard=max(len(kept), 1), overwrite=overwrite)
    try:
        for g in kept:
            writer.add(src.get(g))
    except BaseException:
        writer.abort()
        raise
    return writer.close()
