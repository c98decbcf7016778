"""The main job: squeeze → class-stats → recover → relabel → prune → validate → report.

Each stage skips work whose output is already complete, so re-running resumes after an interruption.
"""

from __future__ import annotations

import time

from .bnstats import class_stats
from .common import RunLayout
from .config import Config, dump_config
from .labels.prune import prune_store
from .labels.relabel import relabel
from .recover import recover
from .report import results_table, write_report
from .squeeze import squeeze
from .utils import atomic_write_json
from .validate import validate


def prune_all(cfg: Config, mode: str) -> list:
    """Write ``labels/<mode>/x<f>`` for every configured factor (skipping existing stores)."""
    layout = RunLayout(cfg.run_path)
    out = []
    for f in cfg.prune.factors:
        dest = layout.pruned_store(mode, f)
        if not (dest / "manifest.json").is_file():
            prune_store(layout.full_store(mode), dest, float(f), cfg.prune.strategy, cfg.seed)
        out.append(dest)
    return out


def run(cfg: Config) -> dict:
    """Run every stage for every configured recover mode and prune factor; write results and report.

    Returns:
        The ``results.json`` content.
    """
    layout = RunLayout(cfg.run_path)
    layout.root.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, layout.root / "config.yaml")
    t0 = time.time()
    teacher = squeeze(cfg)
    class_stats(cfg)
    rows = []
    for mode in cfg.recover.modes:
        recover(cfg, mode)
        relabel(cfg, mode)
        prune_all(cfg, mode)
        for f in cfg.prune.factors:
            rows.append(validate(cfg, mode, float(f)))
    results = {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "teacher": {"model": teacher["model"], "model_args": teacher.get("model_args", {}),
                    "top1": teacher["top1"], "epochs": teacher["epochs"]},
        "rows": rows,
        "seconds": round(time.time() - t0, 2),
    }
    atomic_write_json(layout.root / "results.json", results)
    write_report(layout.root)
    print(results_table(results))
    print(f"teacher top-1 {100 * teacher['top1']:.2f} %; outputs in {layout.root}/ "
          "(results.json, report.md, plots/)")
    return results
