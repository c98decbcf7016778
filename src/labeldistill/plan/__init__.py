"""``labeldistill run CONFIG --dry-run``: check a config and its paths, and plan the work and the storage.

Nothing is trained and nothing is written. The checks are cheap: the data folders are listed (an ImageFolder,
a lazy dataset and a recover ``folder`` source have every file's header read — Pillow mode and size, no
pixels — and one image per ImageFolder split is decoded; in-memory datasets such as Fashion-MNIST are loaded,
which takes about a second), the teacher model is built once on the CPU, and a teacher checkpoint
is read and matched against the model. The plan counts, per stage, the images and steps the run would
process, and estimates the bytes of every artifact:

* **images**: ``C_in · H · W`` bytes of raw uint8 per image, and an upper bound of the PNG file the recover
  stage writes (incompressible pixels: raw bytes + one filter byte per row + zlib block framing + PNG chunk
  headers, about 0.2 % above raw); optimised images compress little, real ones more.
* **labels**: per label store, this project's layout (:mod:`labeldistill.labels.store`): per entry ``2·C``
  bytes of fp16 logits (top-k: ``2·k`` + ``k`` class indices of 1 or 2 bytes), a crop box of 4 uint8 (4 int16
  above 255 pixels), 1/8 byte of flip, a sample index of 1, 2 or 4 bytes and, with CutMix, a partner index of
  1 or 2 bytes; per step 8 bytes of step id and offset, and with CutMix 2 bytes of λ and a 4- or 8-byte box;
  per shard its safetensors header and manifest entry. Next to it the LPLD reference layout
  (:func:`labeldistill.labels.accounting.reference_layout_estimate`, spec §9).
* **class statistics** and **teacher** weights (float32).

``labeldistill run CONFIG --dry-run`` then adds a time estimate (:func:`~labeldistill.plan.timing.add_time_estimate`:
a few real steps of each stage timed on the configured device, × the planned steps); ``--no-probe`` leaves it out.
"""

from __future__ import annotations

import math

from ..config import Config, check_squeeze
from ..data import augmentation_summary, check_dataset_options, data_options
from ..io import human_bytes
from ..labels.relabel import StepPlan
from ..layout import RunLayout
from ..models.checkpoint import untrained_augmentation_warnings
from ..models.geometry import small_input_warnings
from ..resume import check_run_dir
from .estimates import estimate_store_bytes, int_bytes, png_upper_bound, step_size  # noqa: F401
from .probe import probe_data
from ..variants import needs_class_stats
from .timing import add_time_estimate, format_time, human_seconds  # noqa: F401  (add_time_estimate: the CLI's)
from .stages import (declared_stages, early_stages, hard_label_stage, label_rows, late_stages, recover_rows, relabel_plan, student_plan,
                     teacher_plan)


def plan_run(cfg: Config) -> dict:
    """Check ``cfg`` and its paths and plan what ``labeldistill run`` would do; nothing is trained or written.

    Returns:
        A dict with ``data`` (splits, image shape, classes, warnings, ``augmentation``: the resolved flip and
        crop keys), ``teacher`` (model, parameters, bytes,
        checkpoint), ``stages`` (one entry per stage with its work counts and whether its output already
        exists in the run directory), ``recover``, ``relabel``, ``labels`` (one entry per label store:
        kept steps, entries, bytes in this project's layout by component, and the LPLD reference-layout
        estimate), ``validate`` (one entry per student run) and ``storage`` (images, class statistics,
        teacher, labels; all in bytes).

    Raises:
        ConfigError / RegistryError: an option the dataset does not support, unknown model, bad squeeze option.
        DataError: missing data root, split folder, class folder or image; unreadable image; train and test
            classes differ; teacher checkpoint missing, unreadable or not matching the model.
        LabelDistillError: the teacher has no BatchNorm layer while some mode optimises images, or the run
            directory is incompatible.
    """
    check_dataset_options(cfg.data.dataset, data_options(cfg))
    augmentation = augmentation_summary(cfg)  # resolves the keys that follow the data
    check_squeeze(cfg.squeeze)
    layout = RunLayout(cfg.run_path)
    check_run_dir(layout.root, create=False)
    data = probe_data(cfg)
    shape = tuple(int(v) for v in data["shape"])
    data["warnings"] += small_input_warnings(cfg, shape) + untrained_augmentation_warnings(cfg)
    data["augmentation"] = augmentation
    names = data["class_names"]
    C = len(names)
    n_train, n_test = data["splits"]["train"]["used"], data["splits"]["test"]["used"]
    teacher = teacher_plan(cfg, C, shape)
    teacher["students"] = student_plan(cfg, C, shape)
    teacher["student"] = teacher["students"][0]
    recover = recover_rows(cfg, layout, names, shape)
    n_images = max(r["images"] for r in recover)  # modes of sets made elsewhere hold their own number of images
    plan = StepPlan(n_images, cfg.relabel.batch_size, cfg.relabel.epochs, cfg.seed)
    hw = (shape[1], shape[2])
    relabel, relabel_stages = relabel_plan(cfg, layout, plan, hw)
    labels = label_rows(cfg, plan, C, hw, names)
    validate, last_stages = late_stages(cfg, layout, plan, n_test)
    stages = (early_stages(cfg, layout, n_train, n_test)
              + [{"stage": f"recover[{r['mode']}]", "done": r["done"], "status": r["status"], "work": r["work"],
                  "steps": r["teacher_passes"], "images": r["images"]} for r in recover]
              + relabel_stages + last_stages + hard_label_stage(cfg, layout, plan, n_train, n_test)
              + declared_stages(cfg, layout))
    return {"name": cfg.name, "run_dir": str(layout.root), "run_dir_exists": layout.root.exists(),
            "dataset": cfg.data.dataset, "lazy": cfg.data.lazy, "workers": cfg.data.workers, "data": data,
            "image_shape": list(shape), "num_classes": C, "teacher": teacher, "stages": stages,
            "recover": recover, "relabel": relabel, "labels": labels, "validate": validate,
            "storage": storage_plan(cfg, shape, C, teacher, labels, n_images)}


def storage_plan(cfg: Config, shape: tuple[int, int, int], num_classes: int, teacher: dict, labels: list[dict],
                 n_syn: int | None = None) -> dict:
    """Bytes of images (raw and PNG upper bound; ``n_syn`` images per mode, default ``C · recover.ipc``), class
    statistics (0 when no mode optimises images), teacher weights and label stores."""
    n_syn = num_classes * cfg.recover.ipc if n_syn is None else n_syn
    raw = math.prod(shape)
    png = png_upper_bound(*shape)
    return {
        "image_raw_bytes": raw, "image_png_upper_bound": png,
        "images_per_mode_raw": n_syn * raw, "images_per_mode_png_upper_bound": n_syn * png,
        "images_total_png_upper_bound": n_syn * png * len(cfg.recover.modes),
        "class_stats_bytes": 4 * ((2 * num_classes + 4) * teacher["bn_channels"] + num_classes)
        if needs_class_stats(cfg.recover.modes, cfg.recover.variants) else 0,
        "teacher_bytes": teacher["bytes"],
        "labels_per_mode": {r["tag"]: r["total"] for r in labels},
        "labels_total": sum(r["total"] for r in labels) * len(cfg.recover.modes),
    }


def format_plan(p: dict) -> str:
    """Human-readable text of :func:`plan_run`'s dict."""
    d = p["data"]
    c, h, w = p["image_shape"]
    lines = [f"dry run of '{p['name']}': nothing trained, nothing written",
             f"run directory: {p['run_dir']}" + (" (exists: done stages are skipped, stale ones refused unless --force)"
                                                 if p["run_dir_exists"] else " (not created yet)"),
             f"data: {p['dataset']}" + (" (lazy: decoded on the fly by "
                                        f"{p['workers']} DataLoader worker(s))" if p["lazy"] else " (in memory)")
             + f", {p['num_classes']} classes, images {c}×{h}×{w}"]
    for split, s in d["splits"].items():
        extra = f", class order from {s['class_to_idx']}, probed {s['probe']} ({s['probe_mode']})" if "probe" in s else ""
        lines.append(f"  {split}: {s['folder']}: {s['images']:,} images, {s['used']:,} used{extra}")
    lines.append(f"  augmentation: {d['augmentation']}")
    for wmsg in d["warnings"]:
        lines.append(f"  warning: {wmsg}")
    t = p["teacher"]
    lines.append(f"teacher: {t['model']} {t['args']}, {t['parameters']:,} parameters ({human_bytes(t['bytes'])}), "
                 f"{t['bn_layers']} BN layers / {t['bn_channels']:,} channels"
                 + (f"; checkpoint {t['checkpoint']} fits" if t["checkpoint"] else "; trained from scratch"))
    lines.append("students: " + "; ".join(f"{s['model']} {s['args']} ({s['parameters']:,} parameters) → "
                                          f"validate/{s['tag']}/" for s in t["students"]))
    lines.append("")
    lines.append("planned work:")
    for s in p["stages"]:
        lines.append(f"  {s['stage']} [{s['status']}]: {s['work']}" + (f" — {human_seconds(s['seconds'])}"
                                                                        if "seconds" in s else ""))
    rl = p["relabel"]
    lines.append(f"  relabel plan: {rl['images']:,} images × {rl['epochs']} epochs, batch {rl['batch_size']} → "
                 f"{rl['steps_per_epoch']:,} steps/epoch, {rl['total_steps']:,} steps, "
                 f"{rl['generated_steps']:,} generated; input {rl['input_size'][0]}×{rl['input_size'][1]}, "
                 f"CutMix p={rl['cutmix']:g}, logits {rl['logits']}")
    lines += format_time(p)
    lines.append("")
    st = p["storage"]
    lines.append("storage estimate (per recover mode unless noted):")
    lines.append(f"  images: {human_bytes(st['images_per_mode_png_upper_bound'])} as PNG (upper bound: incompressible "
                 f"pixels, {st['image_png_upper_bound']:,} B per image; raw uint8 {st['image_raw_bytes']:,} B per image "
                 f"= {human_bytes(st['images_per_mode_raw'])})")
    lines.append(f"  class statistics: {human_bytes(st['class_stats_bytes'])} (float32; once per run)" if
                 st["class_stats_bytes"] else "  class statistics: none (no recover mode optimises images)")
    lines.append(f"  teacher weights: {human_bytes(st['teacher_bytes'])} (float32; once per run)")
    lines.append("  labels (this project's store layout; reference = LPLD layout estimate, spec §9, without per-file "
                 "overhead):")
    lines.append(f"    {'store':<22}{'steps':>10}{'entries':>13}{'bytes':>16}{'':>11}{'reference':>12}"
                 f"{'labels÷images':>15}")
    for r in p["labels"]:
        note = "" if r["exact_steps"] else " (step count exact, sizes as random)"
        lines.append(f"    {r['tag']:<22}{r['steps']:>10,}{r['entries']:>13,}{r['total']:>16,}"
                     f"{human_bytes(r['total']):>11}{human_bytes(r['reference_layout']):>12}"
                     f"{r['total'] / max(st['images_per_mode_png_upper_bound'], 1):>15.2f}{note}")
    if p["labels"]:
        comp = p["labels"][0]["components"]
        per = ", ".join(f"{k} {v:,}" for k, v in comp.items() if v)
        lines.append(f"    components of '{p['labels'][0]['tag']}' (bytes): {per}; metadata {p['labels'][0]['metadata']:,}")
    lines.append(f"  all label stores, all modes: {human_bytes(st['labels_total'])}; "
                 f"all images: {human_bytes(st['images_total_png_upper_bound'])}")
    return "\n".join(lines)
