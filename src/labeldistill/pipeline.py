"""The main job: squeeze → class-stats → recover → relabel → prune → validate → report.

Each stage skips work whose output is already complete, so re-running resumes after an interruption.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .bnstats import class_stats
from .config import Config, dump_config
from .distributed import barrier
from .io import atomic_write_json, read_json
from .labels.prune import check_pruned_store, prune_store
from .labels.relabel import relabel
from .layout import RunLayout
from .recover import recover
from .report import results_table, write_report
from .resume import check_run_dir
from .runtime import is_rank0
from .squeeze import squeeze
from .validate import validate
from .variants import label_variants  # noqa: F401  (also the old import path)


def prune_all(cfg: Config, mode: str, force: bool = False) -> list[Path]:
    """Write ``labels/<mode>/<tag>`` for every configured label variant (skipping existing stores made with the
    same pool; one made with another pool is refused, never silently reused)."""
    layout = RunLayout(cfg.run_path)
    out = []
    labels = None
    for v in label_variants(cfg):
        dest = layout.pruned_store(mode, v)
        if force or not (dest / "manifest.json").is_file():
            if labels is None:
                labels = read_json(layout.images_dir(mode) / "images.json")
                labels = torch.arange(len(labels["classes"])).repeat_interleave(labels["ipc"])
            prune_store(layout.full_store(mode), dest, v.factor, v.strategy, cfg.seed, v.logits, v.granularity,
                        image_labels=labels, overwrite=force, pool=v.pool)
        else:
            check_pruned_store(dest, v)
        out.append(dest)
    return out


def run(cfg: Config) -> dict:
    """Run every stage for every configured recover mode and prune factor; write results and report.

    Returns:
        The ``results.json`` content.
    """
    layout = RunLayout(cfg.run_path)
    if is_rank0():
        check_run_dir(layout.root)
        dump_config(cfg, layout.root / "config.yaml")
    barrier()
    t0 = time.time()
    teacher = squeeze(cfg)
    class_stats(cfg)
    rows = []
    for mode in cfg.recover.modes:
        recover(cfg, mode)
        relabel(cfg, mode)
        if cfg.relabel.only_kept is None and is_rank0():
            prune_all(cfg, mode)
        barrier()
        for v in label_variants(cfg):
            rows.append(validate(cfg, mode, v))
    results = {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "teacher": {"model": teacher["model"], "model_args": teacher.get("model_args", {}),
                    "top1": teacher["top1"], "epochs": teacher["epochs"]},
        "rows": rows,
        "seconds": round(time.time() - t0, 2),
    }
    if is_rank0():
        atomic_write_json(layout.root / "results.json", results)
        write_report(layout.root)
        print(results_table(results))
        print(f"teacher top-1 {100 * teacher['top1']:.2f} %; outputs in {layout.root}/ "
              "(results.json, report.md, plots/)")
    barrier()
    return results
