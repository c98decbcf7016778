"""The main job: squeeze → class-stats → recover → relabel → prune (→ generator) → validate → report, per seed.

Each stage skips work whose output is complete and was made with the current settings, so re-running
resumes after an interruption; an output made with other settings is refused before any work starts
(``force`` recomputes the stale stages instead; see :mod:`labeldistill.provenance`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from .bnstats import class_stats
from .config import Config, dump_config, student_specs, with_student
from .data import load_split, resolve_augmentation
from .distributed import barrier
from .io import atomic_write_json
from .labels.generator import train_generator
from .labels.prune import prune_all
from .labels.relabel import relabel
from .layout import REAL_TRAIN, RunLayout, labels_tag
from .models import check_model_spec
from .models.checkpoint import untrained_augmentation_warnings
from .models.geometry import small_input_warnings
from .provenance import (StageRef, check_fresh, check_students, done_marker, machine, model_tag, relabel_ref, stage_seconds,
                         stale_keys)
from .recover import recover
from .report import results_table, summarize, write_report
from .resume import check_run_dir
from .runtime import is_rank0, pick_device
from .squeeze import squeeze
from .validate import check_hard_label_fresh, hard_label, hard_label_stale, validate
from .variants import label_variants, needs_class_stats


def stage_refs(cfg: Config) -> list[StageRef]:
    """Every unit of work of the main job for one seed, in the order it runs (class statistics only when some
    mode optimises images)."""
    refs = [StageRef("squeeze")]
    if needs_class_stats(cfg.recover.modes, cfg.recover.variants):
        refs.append(StageRef("class-stats"))
    students = [model_tag(s) for s in student_specs(cfg.validate)]
    for mode in cfg.recover.modes:
        refs += [StageRef("recover", mode), relabel_ref(cfg, mode)]
        if cfg.relabel.only_kept is None:
            refs += [StageRef("prune", mode, v) for v in label_variants(cfg)]
        if cfg.validate.label_source == "generator":
            refs.append(StageRef("generator", mode))
        refs += [StageRef("validate", mode, v, student, _labels(cfg)) for student in students
                 for v in label_variants(cfg)]
    return refs


def _labels(cfg: Config) -> str | None:
    """How the validate refs feed the labels (:func:`~labeldistill.layout.labels_tag`; ``None`` = stored)."""
    tag = labels_tag(cfg.validate.label_source, cfg.validate.calibration)
    return None if tag == "stored" else tag


def stale_refs(cfg: Config, force: bool) -> set[str]:
    """Keys of finished stages made with other settings; refused (StaleStageError) unless ``force``."""
    layout = RunLayout(cfg.run_path)
    stale = set()
    for ref in stage_refs(cfg):
        if done_marker(cfg, ref, layout).is_file() and stale_keys(cfg, ref, layout):
            if not force:
                check_fresh(cfg, ref, layout)
            stale.add(ref.key)
    if not force:
        for one, m in hard_label_units(cfg):
            check_hard_label_fresh(one, m)
    return stale


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
    teacher = squeeze(cfg, force="squeeze" in stale)
    if needs_class_stats(cfg.recover.modes, cfg.recover.variants):  # only synthesis reads them
        class_stats(cfg, force="class-stats" in stale)
    rows = []
    for mode in cfg.recover.modes:
        recover(cfg, mode, force=StageRef("recover", mode).key in stale)
        relabel(cfg, mode, force=relabel_ref(cfg, mode).key in stale)
        if cfg.relabel.only_kept is None and is_rank0():
            prune_all(cfg, mode, force=stale)
        if cfg.validate.label_source == "generator" and is_rank0():
            train_generator(cfg, mode, force=StageRef("generator", mode).key in stale)
        barrier()
        for spec in student_specs(cfg.validate):  # same images and stores for every student
            one, student = with_student(cfg, spec), model_tag(spec)
            for v in label_variants(cfg):
                ref = StageRef("validate", mode, v, student, _labels(cfg))
                rows.append(validate(one, mode, v, force=ref.key in stale))
    hard = hard_label_rows(cfg, force)
    results = {
        "name": cfg.name, "dataset": cfg.data.dataset, "seed": cfg.seed,
        "teacher": {"model": teacher["model"], "model_args": teacher.get("model_args", {}),
                    "top1": teacher["top1"], "epochs": teacher["epochs"]},
        "rows": rows, "seconds": round(time.time() - t0, 2),
        "provenance": {**prov, "stage_seconds": stage_seconds(layout)},
        **({"hard_label": hard} if hard else {}),
    }
    if report:
        _finish(cfg, layout.root, results)
    barrier()
    return results


def hard_label_rows(cfg: Config, force: bool = False) -> list[dict]:
    """With ``hard_label.enabled``: the hard-label baselines (HLR) of every recover mode and, with
    ``hard_label.real``, of the real train split, for every student of ``validate.students``
    (:func:`labeldistill.validate.hard_label`); else ``[]``. ``force`` recomputes only rows made with other
    settings."""
    return [hard_label(one, m, force=force and hard_label_stale(one, m)) for one, m in hard_label_units(cfg)]


def hard_label_units(cfg: Config) -> list[tuple[Config, str]]:
    """(config with one student, images) of every hard-label baseline the config asks for, student-major: each
    student of ``validate.students`` gets its own rows, as each gets its own validate rows."""
    return [(with_student(cfg, spec), m) for spec in student_specs(cfg.validate) for m in hard_label_names(cfg)]


def hard_label_names(cfg: Config) -> list[str]:
    """The ``images`` of the hard-label baselines the config asks for (none unless ``hard_label.enabled``)."""
    if not cfg.hard_label.enabled:
        return []
    return list(cfg.recover.modes) + ([REAL_TRAIN] if cfg.hard_label.real else [])


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
