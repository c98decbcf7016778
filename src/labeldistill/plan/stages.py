"""The dry run's plan, one helper per stage: what each stage would do, how much, and whether it is done."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import Config, student_specs
from ..labels.pool import kept_steps
from ..labels.relabel import StepPlan
from ..errors import DataError
from ..layout import REAL_TRAIN, RunLayout, label_feed_tag
from ..models import build_model, check_model_spec, require_bn_layers
from ..models.checkpoint import load_checkpoint_into
from ..main_stages import GENERATOR, HARD_LABEL, PRUNE, VALIDATE, main_units, relabel_ref, stage_named
from ..provenance import StageRef, check_students, model_tag
from ..runner import Stage, unit_status
from ..data.owned import check_own_folder, list_source, read_tensor_file
from ..variants import OWN_SOURCES, RecoverMode, label_variants, needs_class_stats, plan_batches, resolve_mode
from .estimates import estimate_store_bytes, step_size


def _done(path: Path) -> bool:
    return path.is_file()


def _status(cfg: Config, layout: RunLayout, ref: StageRef, stage: Stage | None = None) -> dict:
    """``{"done": bool, "status": "done" | "to do" | "stale (changed keys)"}`` of one unit of work
    (:func:`~labeldistill.runner.unit_status`)."""
    status = unit_status(stage or stage_named(ref.stage), cfg, ref, layout)
    return {"done": status == "done", "status": status}


def teacher_plan(cfg: Config, num_classes: int, shape: tuple[int, int, int]) -> dict:
    """Build the teacher once on the CPU: parameters, bytes, BN layers; check a checkpoint fits it.

    Raises:
        RegistryError: unknown model; LabelDistillError: no BatchNorm2d layer while some recover mode optimises
        images (source ``synthesis``); DataError: a checkpoint that is missing, unreadable or does not fit.
    """
    sc = cfg.squeeze
    check_model_spec(sc.model, "squeeze.model")
    model = build_model(sc.model, num_classes, shape)
    if needs_class_stats(cfg.recover.modes, cfg.recover.variants):
        bns = require_bn_layers(model, sc.model.name)
    else:
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    teacher_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    if sc.checkpoint:
        load_checkpoint_into(model, sc.checkpoint, sc.model, num_classes)
    return {"model": sc.model.name, "args": dict(sc.model.args), "parameters": sum(p.numel() for p in model.parameters()),
            "bytes": teacher_bytes, "bn_layers": len(bns), "bn_channels": sum(b.num_features for b in bns),
            "checkpoint": sc.checkpoint}


def student_plan(cfg: Config, num_classes: int, shape: tuple[int, int, int]) -> list[dict]:
    """Build each student once on the CPU (a typo in a name fails here, not after hours of work).

    Returns:
        One ``{"model", "args", "tag", "parameters"}`` per student (``validate.students``, or ``validate.model``).

    Raises:
        RegistryError: unknown model or option (with close matches).
        ConfigError: two students sharing a result folder.
    """
    check_students(cfg)
    out = []
    for spec in student_specs(cfg.validate):
        model = build_model(spec, num_classes, shape)
        out.append({"model": spec.name, "args": dict(spec.args), "tag": model_tag(spec),
                    "parameters": sum(p.numel() for p in model.parameters())})
    return out


def early_stages(cfg: Config, layout: RunLayout, n_train: int, n_test: int) -> list[dict]:
    """The squeeze row, and the class-stats row when some recover mode optimises images."""
    sc = cfg.squeeze
    spe_sq = math.ceil(n_train / sc.batch_size)
    squeeze = {
        "stage": "squeeze", **_status(cfg, layout, StageRef("squeeze")),
        "work": (f"load {sc.checkpoint} (no training)" if sc.checkpoint else
                 f"train {sc.model.name} for {sc.epochs} epochs × {spe_sq} steps of {sc.batch_size} "
                 f"({sc.epochs * n_train:,} images" + (f", {sc.warmup_epochs} warm-up epochs" if sc.warmup_epochs else "")
                 + ")") + f"; evaluate on {n_test:,} test images",
        "steps": 0 if sc.checkpoint else sc.epochs * spe_sq,
        "images": (0 if sc.checkpoint else sc.epochs * n_train) + n_test,
    }
    cs_batches = math.ceil(n_train / cfg.class_stats.batch_size)
    stats = {"stage": "class-stats", **_status(cfg, layout, StageRef("class-stats")),
             "work": f"1 eval pass: {cs_batches} batches, {n_train:,} images", "steps": cs_batches, "images": n_train}
    return [squeeze, stats] if needs_class_stats(cfg.recover.modes, cfg.recover.variants) else [squeeze]


def recover_rows(cfg: Config, layout: RunLayout, classes: list[str], shape: tuple[int, int, int]) -> list[dict]:
    """One row per recover mode: its switches, batches and teacher passes (a set made elsewhere: its files,
    listed and checked as recover checks them, short of decoding: :func:`_own_row`)."""
    recover_cfg = cfg.recover
    num_classes = len(classes)
    n_syn = num_classes * recover_cfg.ipc
    rows = []
    for mode in recover_cfg.modes:
        switches = resolve_mode(mode, recover_cfg.variants)
        row: dict[str, Any] = {"mode": mode, "source": switches.source, "images": n_syn,
                               **_status(cfg, layout, StageRef("recover", mode))}
        if switches.source == "synthesis":
            batches = plan_batches(switches.batching, num_classes, recover_cfg.ipc, recover_cfg.batch_size)
            groups = math.ceil(len(batches) / recover_cfg.vectorize)
            biggest = max(len(b) for b in batches)
            iters = recover_cfg.iterations
            row.update(batching=switches.batching, bn_targets=switches.bn_targets,
                       crop_schedule=switches.crop_schedule, batches=len(batches), batch_size=biggest,
                       teacher_passes=groups * iters, image_iterations=n_syn * iters,
                       work=f"{len(batches)} batches of ≤{biggest} ({switches.batching}, "
                            f"{switches.bn_targets} BN targets) × {iters} iterations, {recover_cfg.vectorize} "
                            f"batch(es) per forward: {groups * iters:,} teacher forward+backward passes, "
                            f"{n_syn * iters:,} image-iterations")
        elif switches.source == "rded":
            scored = n_syn * recover_cfg.rded_factor ** 2 * recover_cfg.rded_candidates
            row.update(teacher_passes=math.ceil(scored / 512), image_iterations=scored,
                       work=f"score {scored:,} real crops, stitch {recover_cfg.rded_factor}×"
                            f"{recover_cfg.rded_factor} patches")
        elif switches.source in OWN_SOURCES:
            row.update(_own_row(switches, classes, shape, cfg.validate.label_source == "static"))
        else:
            row.update(teacher_passes=0, image_iterations=0,
                       work=f"pick {recover_cfg.ipc} real training images per class")
        rows.append(row)
    return rows


def _own_row(switches: RecoverMode, classes: list[str], shape: tuple[int, int, int], static: bool = False) -> dict:
    """The plan of a ``folder`` / ``tensor`` source: its image count (a tensor set's from ``labels.pt``, read
    here), whether it brings soft labels, and the work of copying it. A folder set gets recover's checks that need
    no pixel (:func:`~labeldistill.data.owned.check_own_folder`: every file's header, the classes and their
    counts, the size), so what recover would refuse for these reasons is refused here.

    Raises:
        DataError: ``static`` (``validate.label_source: static``) and a tensor set without float soft labels;
        see :func:`~labeldistill.data.owned.check_own_folder`.
    """
    listing = list_source(switches.source, switches.path)
    soft = False
    if switches.source == "tensor":
        y = read_tensor_file(listing.root / "labels.pt")
        n, soft = len(y), isinstance(y, torch.Tensor) and y.dim() == 2 and y.is_floating_point()
        if static and not soft:
            raise DataError(f"validate.label_source: static needs soft labels: {listing.root / 'labels.pt'} holds "
                            "hard labels; give float (N, K) logits or set another validate.label_source")
        how = "as PNG" + (" with their soft labels (logits)" if soft else "")
        bytes_ = {}
    else:
        n = len(listing.names)
        notes = check_own_folder(listing, shape, classes)
        src = f"{notes['source_file_bytes']:,} B"
        how = (f"resized to {shape[1]}x{shape[2]}, as PNG (source files {src})" if "resized" in notes else
               f"as they are ({src}: the run's image bytes)") + (f"; {notes['conversion']}" if "conversion" in notes
                                                                 else "") + f"; class order: {listing.class_order}"
        bytes_ = {"source_file_bytes": notes["source_file_bytes"], "encoding": notes["encoding"]}
    return {"images": n, "teacher_passes": math.ceil(n / 256), "image_iterations": 0, "soft_labels": soft, **bytes_,
            "work": f"copy {n:,} images ({listing.layout} layout, ~{n / len(classes):g} per class) from {listing.root} "
                    f"{how}; check the class mapping (teacher top-1 on the set)"}


def relabel_plan(cfg: Config, layout: RunLayout, plan: StepPlan, hw: tuple[int, int]) -> tuple[dict, list[dict]]:
    """The relabel summary and one relabel stage row per mode."""
    rl = cfg.relabel
    all_steps = list(range(plan.total_steps))
    only = label_variants(cfg)[0] if rl.only_kept is not None else None
    generated = all_steps if only is None else kept_steps(all_steps, only, cfg.seed, plan.steps_per_epoch, rl.epochs)
    summary = {"images": plan.n, "epochs": rl.epochs, "batch_size": rl.batch_size,
               "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps,
               "generated_steps": len(generated), "only_kept": rl.only_kept, "pool": cfg.prune.pool,
               "input_size": list(hw),
               "cutmix": rl.cutmix, "logits": rl.logits}
    gen_entries = sum(step_size(plan, g) for g in generated)
    rows = []
    for mode in cfg.recover.modes:
        rows.append({"stage": f"relabel[{mode}]", **_status(cfg, layout, relabel_ref(cfg, mode)),
                     "work": f"{len(generated):,} steps of {rl.batch_size} ({gen_entries:,} teacher forwards of "
                             f"augmented images)" + (f", only the steps kept at {rl.only_kept:g}×" if rl.only_kept else ""),
                     "steps": len(generated), "images": gen_entries})
    return summary, rows


def label_rows(cfg: Config, plan: StepPlan, num_classes: int, hw: tuple[int, int], names: list[str]) -> list[dict]:
    """One row per label store (the full store, then every variant): kept steps and estimated bytes.

    A metric strategy's kept steps depend on the stored logits: the count is exact, the sizes are those of a
    random choice (``exact_steps: False``). Kept steps come from :func:`~labeldistill.labels.pool.kept_steps`,
    the selection prune and relabel's ``only_kept`` use, with the variant's pool.
    """
    rl = cfg.relabel
    cutmix = rl.cutmix > 0
    all_steps = list(range(plan.total_steps))
    rows = []
    if rl.only_kept is None:
        full = estimate_store_bytes(all_steps, plan, num_classes, hw, cutmix, rl.logits, rl.steps_per_shard, names)
        rows.append({"tag": "full", "factor": 1.0, "strategy": "none", "logits": rl.logits, "granularity": "-",
                     "kept_steps": full["steps"], "exact_steps": True, **full})
    for v in label_variants(cfg):
        if rl.only_kept is not None:
            generated = kept_steps(all_steps, v, cfg.seed, plan.steps_per_epoch, rl.epochs)
            est = estimate_store_bytes(generated, plan, num_classes, hw, cutmix, v.logits, rl.steps_per_shard, names)
            exact = True
        else:
            exact = v.strategy == "random" or v.granularity == "epoch"
            as_random = v if exact else v._replace(strategy="random")
            kept = kept_steps(all_steps, as_random, cfg.seed, plan.steps_per_epoch, rl.epochs)
            est = estimate_store_bytes(kept, plan, num_classes, hw, cutmix, v.logits, rl.steps_per_shard, names,
                                       pruned=True)  # prune_store writes relabel's steps_per_shard
        rows.append({"tag": v.tag, "factor": v.factor, "strategy": v.strategy, "logits": v.logits,
                     "granularity": v.granularity, "pool": v.pool, "replay": v.replay_mode,
                     "kept_steps": est["steps"], "exact_steps": exact, **est})
    return rows


def late_stages(cfg: Config, layout: RunLayout, plan: StepPlan, n_test: int) -> tuple[list[dict], list[dict]]:
    """The validate rows (one per unit of :data:`~labeldistill.main_stages.VALIDATE`) and the prune, generator
    (``validate.label_source: generator``) and validate stage rows."""
    vc = cfg.validate
    epochs = vc.epochs or cfg.relabel.epochs
    variants = label_variants(cfg)
    specs = {model_tag(s): s for s in student_specs(vc)}
    labels = label_feed_tag(vc.label_source, vc.calibration)
    validate = [{"mode": ref.mode, "store": ref.variant.tag, "result": ref.variant.result_tag,
                 "student": specs[ref.student].name, "student_args": dict(specs[ref.student].args),
                 "student_tag": ref.student, "epochs": epochs, "steps": epochs * plan.steps_per_epoch,
                 "images": epochs * plan.n, "eval_images": n_test, "labels": labels, **_status(cfg, layout, ref)}
                for ref in VALIDATE.units(cfg)]
    prunes = [_status(cfg, layout, ref) for ref in PRUNE.units(cfg)] or [{"done": True, "status": "done"}]
    prune = {"stage": "prune", "done": all(p["done"] for p in prunes),
             "status": _worst([p["status"] for p in prunes]),
             "work": f"{len(variants)} store(s) per mode: " + ", ".join(v.tag for v in variants),
             "steps": 0, "images": 0}
    gens = [{"stage": ref.key, **_status(cfg, layout, ref), "steps": cfg.generator.epochs * plan.total_steps,
             "images": 0, "work": f"train a {cfg.generator.model.name} label generator for {cfg.generator.epochs} "
                                  f"passes over the {plan.total_steps:,} stored steps"}
            for ref in GENERATOR.units(cfg)]
    val = {"stage": "validate", "done": all(r["done"] for r in validate),
           "status": _worst([r["status"] for r in validate]),
           "work": f"{len(validate)} student run(s) of {epochs} epochs × {plan.steps_per_epoch} steps "
                   f"({', '.join(specs)}), each evaluated on {n_test:,} test images"
                   + ("" if labels == "stored" else f"; labels: {labels}"),
           "steps": sum(r["steps"] for r in validate), "images": sum(r["images"] for r in validate)}
    return validate, [prune, *gens, val]


def hard_label_stage(cfg: Config, layout: RunLayout, plan: StepPlan, n_train: int, n_test: int) -> list[dict]:
    """The hard-label baselines' stage row (``hard_label.enabled`` only; :func:`labeldistill.validate.hard_label`)."""
    if not cfg.hard_label.enabled:
        return []
    bs, epochs = cfg.relabel.batch_size, cfg.validate.epochs or cfg.relabel.epochs
    specs = student_specs(cfg.validate)
    units = [(m, plan.n, epochs) for m in cfg.recover.modes]
    units += [(REAL_TRAIN, n_train, cfg.hard_label.real_epochs)] if cfg.hard_label.real else []
    statuses = [unit_status(HARD_LABEL, cfg, ref, layout) for ref in HARD_LABEL.units(cfg)]
    steps = len(specs) * sum(e * math.ceil(n / bs) for _, n, e in units)
    return [{"stage": "hard-label", "done": all(s == "done" for s in statuses), "status": _worst(statuses),
             "work": f"{len(units) * len(specs)} student run(s) with cross-entropy (HLR baselines): "
                     + ", ".join(f"{name} {e} epochs" for name, _, e in units)
                     + (f" for each of {len(specs)} students" if len(specs) > 1 else "")
                     + f"; {steps:,} steps of ≤{bs}, each evaluated on {n_test:,} test images",
             "steps": steps, "images": len(specs) * sum(e * n for _, n, e in units)}]


_PLANNED = {"squeeze", "class-stats", "recover", "relabel", "prune", "generator", "validate", "hard-label"}


def declared_stages(cfg: Config, layout: RunLayout) -> list[dict]:
    """A row per unit of a main-job stage that has no plan of its own above (a stage added to
    :data:`~labeldistill.main_stages.MAIN_JOB`): its status, no work counts."""
    return [{"stage": ref.key, **_status(cfg, layout, ref, stage), "work": f"declared stage {stage.name}", "steps": 0,
             "images": 0} for stage, ref in main_units(cfg) if stage.name not in _PLANNED]


def _worst(statuses: list[str]) -> str:
    """One status for several units: any stale one wins, then any to do, else done."""
    stale = [s for s in statuses if s.startswith("stale")]
    if stale:
        return stale[0] + (f" and {len(stale) - 1} more stale" if len(stale) > 1 else "")
    return "to do" if "to do" in statuses else "done"
