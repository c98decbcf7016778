"""The main job's stages, declared: squeeze → class-stats → recover → relabel → prune / generator → validate, and
the hard-label baselines (:class:`~labeldistill.runner.Stage`).

Each declaration names the stage's units, its own settings (on top of its upstream stage's), its marker file;
the stage's module binds the function that runs a unit (``@SQUEEZE.runs``). The job (:mod:`labeldistill.pipeline`),
the dry run (:mod:`labeldistill.plan`) and the report (:mod:`labeldistill.report`) all walk the units these declarations give,
so they cannot drift. The declarations live here, below the stage modules, because a stage's settings include
its upstream stages' and no stage module imports another (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import Config, student_specs
from .data.owned import source_fingerprint
from .layout import REAL_TRAIN, RunLayout, label_feed_tag
from .protocols import AUGMENT_REVISIONS, hard_recipe
from .provenance import (StageRef, data_settings, flat_settings, model_tag, student_config, validate_settings)
from .runner import Stage
from .variants import OWN_SOURCES, label_variants, needs_class_stats, resolve_mode


def _modes(stage: str):
    return lambda cfg: [StageRef(stage, m) for m in cfg.recover.modes]


SQUEEZE = Stage("squeeze", own=lambda cfg, ref: {**data_settings(cfg), **flat_settings("squeeze", cfg.squeeze)},
                marker=lambda cfg, ref, lay: lay.teacher_dir / "teacher.json",
                units=lambda cfg: [StageRef("squeeze")])

CLASS_STATS = Stage("class-stats", upstream=SQUEEZE,
                    own=lambda cfg, ref: flat_settings("class_stats", cfg.class_stats),
                    marker=lambda cfg, ref, lay: lay.class_stats_dir / "class_stats.json",
                    units=lambda cfg: [StageRef("class-stats")]
                    if needs_class_stats(cfg.recover.modes, cfg.recover.variants) else [])


def _recover_settings(cfg: Config, ref: StageRef) -> dict[str, Any]:
    """The recover mode, its switches (:class:`~labeldistill.variants.RecoverMode`, recorded as
    ``recover.variant``) and the recover settings its source reads (synthesis: all of them and the
    class statistics'; real-image sources: the few they read; a set made elsewhere: its files' fingerprint)."""
    switches = resolve_mode(ref.mode, cfg.recover.variants)
    recover = flat_settings("recover", cfg.recover)
    out: dict[str, Any] = {}
    if switches.source == "synthesis":
        out.update(CLASS_STATS.own(cfg, ref))
    else:  # real-image sources read only these recover settings; a set made elsewhere none of them
        used = () if switches.source in OWN_SOURCES else ("recover.ipc",) + (
            ("recover.rded_factor", "recover.rded_candidates", "recover.crop_scale")
            if switches.source == "rded" else ())
        recover = {k: v for k, v in recover.items() if k in used}
    if switches.source in OWN_SOURCES:  # the set's files: an edited folder makes recover (and all after) stale
        recover["recover.source_fingerprint"] = source_fingerprint(switches.source, switches.path)
    return {**out, "recover.mode": ref.mode, "recover.variant": switches.as_dict(), **recover}


RECOVER = Stage("recover", upstream=SQUEEZE, own=_recover_settings, units=_modes("recover"),
                marker=lambda cfg, ref, lay: lay.images_dir(ref.mode) / "images.json")


def relabel_ref(cfg: Config, mode: str) -> StageRef:
    """The relabel unit of a mode: the full store, or with ``relabel.only_kept`` the one pruned store it writes
    (a different output, so a different record: ``relabel[cs x40]``)."""
    variants = label_variants(cfg) if cfg.relabel.only_kept is not None else [None]
    return StageRef("relabel", mode, variants[0])


def _relabel_marker(cfg: Config, ref: StageRef, layout: RunLayout) -> Path:
    store = layout.full_store(ref.mode) if ref.variant is None else layout.pruned_store(ref.mode, ref.variant)
    return store / "manifest.json"


RELABEL = Stage("relabel", upstream=RECOVER, own=lambda cfg, ref: flat_settings("relabel", cfg.relabel),
                marker=_relabel_marker, units=lambda cfg: [relabel_ref(cfg, m) for m in cfg.recover.modes])

PRUNE = Stage("prune", upstream=RELABEL, own=lambda cfg, ref: {"prune.variant": ref.variant.tag},
              marker=lambda cfg, ref, lay: lay.pruned_store(ref.mode, ref.variant) / "manifest.json",
              units=lambda cfg: [StageRef("prune", m, v) for m in cfg.recover.modes for v in label_variants(cfg)]
              if cfg.relabel.only_kept is None else [])

GENERATOR = Stage("generator", upstream=RELABEL, own=lambda cfg, ref: flat_settings("generator", cfg.generator),
                  marker=lambda cfg, ref, lay: lay.generator_dir(ref.mode) / "generator.json",
                  units=lambda cfg: _modes("generator")(cfg) if cfg.validate.label_source == "generator" else [])


def label_feed_of(cfg: Config) -> str | None:
    """How validate feeds the labels (:func:`~labeldistill.layout.label_feed_tag`; ``None`` = stored)."""
    tag = label_feed_tag(cfg.validate.label_source, cfg.validate.calibration)
    return None if tag == "stored" else tag


def _validate_refs(cfg: Config) -> list[StageRef]:
    """Every (mode, label variant, student, repeat) validate trains: repeats are units of their own (on the same
    stores), so they run, resume and distribute like any other student."""
    students = [model_tag(s) for s in student_specs(cfg.validate)]
    return [StageRef("validate", m, v, s, label_feed_of(cfg), r) for m in cfg.recover.modes for s in students
            for v in label_variants(cfg) for r in range(cfg.validate.repeats)]


def _validate_own(cfg: Config, ref: StageRef) -> dict[str, Any]:
    """The student's settings (its own recipe included), the replay, and for a repeat after the first its index
    (its student seed is ``seed + repeat``)."""
    return {**validate_settings(student_config(cfg, ref.student)), "validate.replay": ref.variant.replay_mode,
            **({"validate.repeat": ref.repeat} if ref.repeat else {})}


VALIDATE = Stage("validate", upstream=PRUNE, units=_validate_refs, own=_validate_own,
                 marker=lambda cfg, ref, lay: lay.validate_file(ref.mode, ref.variant, student=ref.student,
                                                                labels=ref.labels or "stored", repeat=ref.repeat))

_HARD_PROTOCOL = ("relabel.batch_size", "relabel.crop_scale", "relabel.flip")
_HARD_STUDENT = ("validate.model.name", "validate.model.args", "validate.optimizer", "validate.lr",
                 "validate.weight_decay", "validate.momentum")


def _hard_label_settings(cfg: Config, ref: StageRef) -> dict[str, Any]:
    """For a mode: its images' settings (the recover stage's) and the training protocol; for ``real-train``
    (:data:`REAL_TRAIN`) the seed, data and protocol."""
    one = student_config(cfg, ref.student)
    if ref.mode == REAL_TRAIN:
        out = {**data_settings(one), "hard_label.real_epochs": one.hard_label.real_epochs}
    else:
        out = {**RECOVER.settings(one, StageRef("recover", ref.mode)), "validate.epochs": one.validate.epochs,
               "relabel.epochs": one.relabel.epochs}
    relabel, vc = flat_settings("relabel", one.relabel), flat_settings("validate", one.validate)
    recipe = hard_recipe(one)  # the preset's hard-label batch, augmentation and epochs, by value
    hard = {k: v for k, v in asdict(recipe).items() if v is not None} if recipe else {}  # unset: not fingerprinted
    preset = {"validate.protocol": vc["validate.protocol"], "validate.protocol.hard": hard} if recipe else {}
    if recipe and recipe.augment in AUGMENT_REVISIONS:  # rows made before a change of the augmentation go stale
        preset["validate.protocol.hard_augment_revision"] = AUGMENT_REVISIONS[recipe.augment]
    return {**out, **{k: relabel[k] for k in _HARD_PROTOCOL}, **{k: vc[k] for k in _HARD_STUDENT}, **preset}


def hard_label_names(cfg: Config) -> list[str]:
    """The ``images`` of the hard-label baselines the config asks for (none unless ``hard_label.enabled``)."""
    if not cfg.hard_label.enabled:
        return []
    return list(cfg.recover.modes) + ([REAL_TRAIN] if cfg.hard_label.real else [])


HARD_LABEL = Stage("hard-label", own=_hard_label_settings,
                   marker=lambda cfg, ref, lay: lay.hard_label_file(ref.mode, ref.student),
                   units=lambda cfg: [StageRef("hard-label", m, None, model_tag(s))
                                      for s in student_specs(cfg.validate) for m in hard_label_names(cfg)])

EARLY, PER_MODE, LATE = (SQUEEZE, CLASS_STATS), (RECOVER, RELABEL, PRUNE, GENERATOR, VALIDATE), (HARD_LABEL,)
"""The main job's stages: run once, then mode after mode, then once more at the end (:func:`main_units`)."""
MAIN_JOB = EARLY + PER_MODE + LATE


def stage_named(name: str) -> Stage:
    """The main-job stage called ``name``."""
    return next(s for s in EARLY + PER_MODE + LATE if s.name == name)


def main_units(cfg: Config) -> list[tuple[Stage, StageRef]]:
    """Every unit of the main job for one seed, in the order it runs: squeeze, class-stats (when some mode
    optimises images), then mode after mode recover, relabel, prune, generator, validate, then the hard-label
    baselines."""
    units = [(s, r) for s in EARLY for r in s.units(cfg)]
    per_mode = [(s, r) for s in PER_MODE for r in s.units(cfg)]
    for mode in cfg.recover.modes:
        units += [(s, r) for s, r in per_mode if r.mode == mode]
    return units + [(s, r) for s in LATE for r in s.units(cfg)]


def stage_settings(cfg: Config, ref: StageRef) -> dict[str, Any]:
    """Every setting the output of ``ref`` (a unit of a main-job stage) depends on: :meth:`Stage.settings`."""
    return stage_named(ref.stage).settings(cfg, ref)


def hard_label_settings(cfg: Config, images: str) -> dict[str, Any]:
    """Every setting the hard-label baseline of ``images`` with ``cfg``'s student depends on."""
    return HARD_LABEL.settings(cfg, StageRef("hard-label", images, None, model_tag(cfg.validate.model)))


def done_marker(cfg: Config, ref: StageRef, layout: RunLayout | None = None) -> Path:
    """The file whose existence means the output of ``ref`` is complete."""
    return stage_named(ref.stage).marker(cfg, ref, layout or RunLayout(cfg.run_path))
