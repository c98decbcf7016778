"""The main job: squeeze → class-stats → recover → relabel → prune (→ generator) → validate → report, per seed.

Each stage skips work whose output is complete and was made with the current settings, so re-running
resumes after an interruption; an output made with other settings is refused before any work starts
(``force`` recomputes the stale stages instead). The units come from :func:`labeldistill.main_stages.main_units`
and each runs through :func:`labeldistill.runner.run_unit`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from . import bnstats, recover, squeeze, validate  # noqa: F401  (they bind their stages' run functions)
from .config import Config, dump_config
from .data import load_split, resolve_augmentation
from .distributed import barrier, rank_world
from .io import atomic_write_json
from .labels import generator, prune, relabel  # noqa: F401  (they bind their stages' run functions)
from .layout import RunLayout
from .main_stages import GENERATOR, HARD_LABEL, PRUNE, VALIDATE, hard_label_names, main_units  # noqa: F401
from .models import check_model_spec
from .models.checkpoint import untrained_augmentation_warnings
from .models.geometry import small_input_warnings
from .provenance import StageRef, check_students, machine, stage_seconds
from .report import results_table, summarize, write_report
from .resume import check_run_dir
from .runner import run_spread, stale_units
from .runtime import is_rank0, pick_device


def stage_refs(cfg: Config) -> list[StageRef]:
    """Every unit of work of the main job for one seed, in the order it runs
    (:func:`~labeldistill.main_stages.main_units`)."""
    return [ref for _, ref in main_units(cfg)]


def stale_refs(cfg: Config, force: bool) -> set[str]:
    """Keys of finished units made with other settings or not recorded in ``stages.json``; refused
    (StaleStageError) unless ``force`` (:func:`~labeldistill.runner.stale_units`)."""
    return stale_units(main_units(cfg), cfg, force)


def run(cfg: Config, force: bool = False) -> dict:
    """Run every stage for every configured recover mode and prune factor (per seed when ``seeds`` is set);
    write ``results.json``, ``report.md`` and the plots. First prints one ``warning:`` line on stderr per setting
    too coarse for the input size (:func:`labeldistill.models.geometry.small_input_warnings`) and per relabel
    augmentation a teacher checkpoint was not trained with
    (:func:`labeldistill.models.checkpoint.untrained_augmentation_warnings`), then runs as
    configured.

    Args:
        cfg: the job.
        force: recompute stages whose finished output was made with other settings (default: refuse them).

    Returns:
        The ``results.json`` content.

    Raises:
        StaleStageError: a finished stage made with other settings (before any work starts).
        RegistryError: an unknown teacher or student model (before any work starts).
        ConfigError: two students sharing a result folder.
    """
    resolve_augmentation(cfg)
    check_model_spec(cfg.squeeze.model, "squeeze.model")
    check_students(cfg)
    if is_rank0():
        for line in small_input_warnings(cfg, input_shape(cfg)) + untrained_augmentation_warnings(cfg):
            print(f"warning: {line}", file=sys.stderr, flush=True)
    if not cfg.seeds:
        return _run_one(cfg, force)
    root = RunLayout(cfg.run_path).root
    seed_cfgs = [dataclasses.replace(cfg, seed=s, seeds=None, run_dir=str(root / f"seed{s}")) for s in cfg.seeds]
    for c in seed_cfgs:  # refuse stale work of any seed before training anything
        stale_refs(c, force)
    results = [_run_one(c, force, report=False) for c in seed_cfgs]
    merged = {"name": cfg.name, "dataset": cfg.data.dataset, "seeds": list(cfg.seeds),
              "teacher": results[0]["teacher"], "teachers": [r["teacher"] for r in results],
              "rows": [row for r in results for row in r["rows"]],
              "provenance": {**results[-1]["provenance"], "seconds": round(sum(r["seconds"] for r in results), 2)},
              "seconds": round(sum(r["seconds"] for r in results), 2)}
    if any("hard_label" in r for r in results):
        merged["hard_label"] = [h for r in results for h in r.get("hard_label", [])]
    merged["summary"] = summarize(merged["rows"])
    _finish(cfg, root, merged)
    return merged


def input_shape(cfg: Config) -> tuple[int, ...]:
    """The input shape ``(C, H, W)`` of the configured data, cheaply: ``(None, S, S)`` when ``data.image_size``
    fixes it, else the shape of the (smaller) test split as loaded."""
    if cfg.data.image_size is not None:
        return (None, cfg.data.image_size, cfg.data.image_size)
    return tuple(load_split(cfg, "test").shape)


def _run_one(cfg: Config, force: bool, report: bool = True) -> dict:
    layout = RunLayout(cfg.run_path)
    if is_rank0():
        check_run_dir(layout.root)
    stale = stale_refs(cfg, force)
    if is_rank0():
        dump_config(cfg, layout.root / "config.yaml")
    barrier()
    t0 = time.time()
    prov = machine(pick_device(cfg.device))  # the code and machine at the start of the run
    done = {ref.key: stage.run(cfg, ref, ref.key in stale) for stage, ref in _ordered(cfg)}
    if spread_validate(cfg):  # validate.parallel: students — each rank trains whole students
        done.update(run_spread([(VALIDATE, r) for r in VALIDATE.units(cfg)], cfg, stale))
    teacher = done["squeeze"]
    rows = [done[ref.key] for ref in VALIDATE.units(cfg)]
    hard = [done[ref.key] for ref in HARD_LABEL.units(cfg)]
    results = {
        "name": cfg.name, "dataset": cfg.data.dataset, "seed": cfg.seed,
        "teacher": {"model": teacher["model"], "model_args": teacher.get("model_args", {}),
                    "top1": teacher["top1"], "epochs": teacher["epochs"]},
        "rows": rows, "seconds": round(time.time() - t0, 2),
        "provenance": {**prov, "stage_seconds": stage_seconds(layout)},
        **({"hard_label": hard} if hard else {}),
        **({"summary": summarize(rows)} if cfg.validate.repeats > 1 else {}),  # mean ± std over the repeats
    }
    if report:
        _finish(cfg, layout.root, results)
    barrier()
    return results


def _ordered(cfg: Config):
    """The units of :func:`~labeldistill.main_stages.main_units` as they run: per mode, the stages only rank 0
    runs (prune, generator) then a barrier before validate; yields ``(stage, ref)``."""
    mode, spread = None, spread_validate(cfg)
    for stage, ref in main_units(cfg):
        if stage is VALIDATE and spread:
            continue  # run after the loop by run_spread
        if stage is VALIDATE and mode != ref.mode:
            barrier()  # every rank waits for rank 0's stores and label model
            mode = ref.mode
        if stage in (PRUNE, GENERATOR) and not is_rank0():
            continue
        yield stage, ref


def spread_validate(cfg: Config) -> bool:
    """``validate.parallel: students`` under a process group of more than one rank."""
    return cfg.validate.parallel == "students" and rank_world()[1] > 1


def hard_label_rows(cfg: Config, force: bool = False) -> list[dict]:
    """With ``hard_label.enabled``: the hard-label baselines (HLR) of every recover mode and, with
    ``hard_label.real``, of the real train split, for every student of ``validate.students``
    (:func:`labeldistill.validate.hard_label`); else ``[]``. ``force`` recomputes only rows made with other
    settings or not recorded."""
    stale = stale_units([(HARD_LABEL, r) for r in HARD_LABEL.units(cfg)], cfg, force)
    return [HARD_LABEL.run(cfg, r, r.key in stale) for r in HARD_LABEL.units(cfg)]


def _finish(cfg: Config, root: Path, results: dict) -> None:
    if not is_rank0():
        return
    if cfg.seeds:
        dump_config(cfg, root / "config.yaml")
    atomic_write_json(root / "results.json", results)
    write_report(root)
    print(results_table(results))
    tops = [t["top1"] for t in results.get("teachers", [results["teacher"]])]
    print(f"teacher top-1 {', '.join(f'{100 * t:.2f}' for t in tops)} %; outputs in {root}/ "
          "(results.json, report.md, plots/)")


__all__ = ["run", "hard_label_rows", "stage_refs"]
