"""``labeldistill run CONFIG --dry-run``: check a config and its paths, and plan the work and the storage.

Nothing is trained and nothing is written. The checks are cheap: the data folders are listed (an ImageFolder
is scanned for its file names and one image per split is decoded; in-memory datasets such as Fashion-MNIST
are loaded, which takes about a second), the teacher model is built once on the CPU, and a teacher checkpoint
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
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image

from .common import RunLayout, build_model, data_options, label_tag, load_split
from .config import Config
from .data import check_dataset_options
from .data.imagefolder import decode_image, scan_imagefolder, split_folder, target_mode
from .errors import DataError, LabelDistillError
from .labels.accounting import reference_layout_estimate
from .labels.prune import num_kept, parse_strategy, select_epochs, select_steps
from .labels.relabel import StepPlan
from .labels.store import COMPONENTS, parse_logits_format
from .models import bn_layers
from .pipeline import label_variants
from .recover import plan_batches, resolve_variant
from .resume import RUN_LAYOUT_VERSION
from .squeeze import check_squeeze_options, load_state_dict_file


def int_bytes(limit: int) -> int:
    """Bytes of the narrowest store integer (uint8 / int16 / int32) holding values in ``[0, limit]``."""
    return 1 if limit <= 255 else 2 if limit <= 32767 else 4


def png_upper_bound(channels: int, height: int, width: int) -> int:
    """Upper bound in bytes of a PNG of one uint8 ``(C, H, W)`` image whose pixels do not compress.

    Raw ``C·H·W`` bytes + one filter byte per row; zlib framing (6 bytes) and block headers (5 bytes per
    4 KiB, more than zlib spends on incompressible data); IDAT chunk headers (12 bytes per 64 KiB chunk, as
    Pillow writes them); signature, IHDR and IEND (45 bytes).
    """
    raw = channels * height * width + height
    stream = raw + 6 + 5 * max(1, math.ceil(raw / 4096))
    return stream + 12 * max(1, math.ceil(stream / 65536)) + 45


def _safetensors_header(tensors: dict[str, tuple[str, list[int], int]]) -> int:
    """Bytes of a safetensors header (length prefix + JSON padded to 8) for ``name → (dtype, shape, nbytes)``."""
    off, entries = 0, {}
    for name, (dtype, shape, nbytes) in sorted(tensors.items()):
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    n = len(json.dumps(entries, separators=(",", ":")))
    return 8 + n + (-n) % 8


def estimate_store_bytes(step_ids: list[int], plan: StepPlan, num_classes: int, image_hw: tuple[int, int],
                         cutmix: bool, logits: str = "fp16", steps_per_shard: int | None = None,
                         class_names: list[str] | None = None) -> dict[str, Any]:
    """Bytes a label store holding ``step_ids`` of ``plan`` takes in this project's layout.

    Args:
        step_ids: the stored global step ids.
        plan: the relabel plan (images, batch size, epochs) the steps belong to.
        num_classes: ``C``.
        image_hw: ``(H, W)`` of the images in pixels (crop and CutMix boxes are stored in these units).
        cutmix: whether the store has the CutMix tensors (``relabel.cutmix > 0``).
        logits: ``fp16`` or ``top<k>``.
        steps_per_shard: steps per shard; None = one shard (how :func:`~labeldistill.labels.prune.prune_store`
            writes a pruned store).
        class_names: names in ``class_to_idx`` (manifest size); default ``"class_<i>"``-like names.

    Returns:
        ``{"entries", "steps", "shards", "components": {component: bytes}, "floor", "metadata", "total",
        "reference_layout"}``; ``floor`` is the sum of the components, ``metadata`` the estimated safetensors
        headers + manifest, ``total`` their sum (what ``bytes_on_disk`` would report, to within a few hundred
        bytes), ``reference_layout`` the LPLD reference-layout estimate of the same steps.

    Raises:
        ConfigError: unknown logits format.
    """
    topk = parse_logits_format(logits)
    ids = sorted(step_ids)
    n = plan.n
    sps = len(ids) if steps_per_shard is None else steps_per_shard
    shards = [ids[i:i + sps] for i in range(0, len(ids), max(sps, 1))]
    ib_img, ib_box = int_bytes(n - 1), int_bytes(max(image_hw))
    comps = dict.fromkeys(("logits", "logits_index", "sample_idx", "crop", "flip", "mix_index", "mix_lambda",
                           "mix_box", "step_index"), 0)
    header = 0
    shard_entries = []
    for sh in shards:
        m = sum(_step_size(plan, g) for g in sh)
        k = len(sh)
        t: dict[str, tuple[str, list[int], int]] = {
            "step_ids": ("I32", [k], 4 * k), "step_offsets": ("I32", [k + 1], 4 * (k + 1)),
            "sample_idx": (_dt(ib_img), [m], ib_img * m), "crop": (_dt(ib_box), [m, 4], 4 * ib_box * m),
            "flip": ("U8", [(m + 7) // 8], (m + 7) // 8),
        }
        if topk is None:
            t["logits"] = ("F16", [m, num_classes], 2 * num_classes * m)
        else:
            ib_cls = int_bytes(num_classes - 1)
            t["topk_values"] = ("F16", [m, topk], 2 * topk * m)
            t["topk_indices"] = (_dt(ib_cls), [m, topk], ib_cls * topk * m)
        if cutmix:
            ib_perm = int_bytes(max(_step_size(plan, g) for g in sh) - 1)
            t["mix_perm"] = (_dt(ib_perm), [m], ib_perm * m)
            t["mix_lam"] = ("F16", [k], 2 * k)
            t["mix_box"] = (_dt(ib_box), [k, 4], 4 * ib_box * k)
        for name, (_, _, nbytes) in t.items():
            comps[COMPONENTS[name]] += nbytes
        hb = _safetensors_header(t)
        header += hb
        shard_entries.append({"file": "shard_00000.safetensors", "num_steps": k, "num_entries": m,
                              "first_step": sh[0], "bytes": hb + sum(v[2] for v in t.values()), "sha256": "0" * 64})
    floor = sum(comps.values())
    names = class_names or [f"class_{i:04d}" for i in range(num_classes)]
    entries = sum(_step_size(plan, g) for g in ids)
    manifest = _manifest_size(names, shard_entries, comps, n, image_hw, plan, entries, len(ids), logits,
                              steps_per_shard)
    return {
        "entries": entries, "steps": len(ids), "shards": len(shards), "components": comps, "floor": floor,
        "metadata": header + manifest, "total": floor + header + manifest,
        "reference_layout": reference_layout_estimate({"num_entries": entries, "num_steps": len(ids),
                                                       "num_classes": num_classes, "cutmix": cutmix}),
    }


def _dt(nbytes: int) -> str:
    return {1: "U8", 2: "I16", 4: "I32"}[nbytes]


def _manifest_size(names: list[str], shards: list[dict], comps: dict, n: int, hw: tuple[int, int], plan: StepPlan,
                   entries: int, steps: int, logits: str, steps_per_shard: int | None) -> int:
    """Bytes of a manifest.json shaped like the one :class:`~labeldistill.labels.store.LabelStoreWriter` writes."""
    manifest = {
        "format": "labeldistill.label_store", "schema_version": 1, "num_images": n, "image_hw": list(hw),
        "input_size": list(hw), "channels": 3, "num_classes": len(names),
        "class_to_idx": {c: i for i, c in enumerate(names)}, "image_fingerprint": "0" * 16,
        "teacher_fingerprint": "0" * 16, "normalization": {"mean": [0.4567] * 3, "std": [0.2345] * 3},
        "augmentation": {"crop": "random_resized_crop", "crop_scale": [0.08, 1.0], "crop_ratio": [0.75, 4 / 3],
                         "flip": True, "cutmix": 0.0, "cutmix_alpha": 1.0, "interpolation": "bilinear"},
        "cutmix": False, "seed": 0, "batch_size": plan.b, "epochs": plan.epochs,
        "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps,
        "prune": ({"factor": 1.0, "strategy": "none"} if steps_per_shard is not None else
                  {"factor": 40.0, "strategy": "random", "granularity": "batch", "seed": 0,
                   "source_steps": plan.total_steps, "kept_steps": steps}),
        "logits_format": logits, "num_steps": steps, "num_entries": entries,
        "component_bytes": {k: v for k, v in comps.items() if v}, "shards": shards,
    }
    return len((json.dumps(manifest, indent=2) + "\n").encode())


def _check_run_dir(root: Path) -> None:
    """The read-only half of :func:`labeldistill.resume.check_run_dir`: refuse an incompatible run directory."""
    f = root / "run.json"
    if not f.is_file():
        return
    try:
        info = json.loads(f.read_text())
    except ValueError:
        raise LabelDistillError(f"{f} is not valid JSON; use a fresh run_dir") from None
    if info.get("layout_version") != RUN_LAYOUT_VERSION:
        raise LabelDistillError(f"run directory {root} was made with layout {info.get('layout_version')} (this "
                                f"version uses layout {RUN_LAYOUT_VERSION}; incompatible): use a new run_dir")


def _probe_imagefolder(cfg: Config) -> dict:
    """List both splits of an ImageFolder and decode one image of each with the configured settings."""
    d = cfg.data
    if d.root is None:
        raise DataError("dataset 'imagefolder' needs data.root=/path/to/folder")
    root = Path(d.root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}; set data.root to a folder with class sub-folders")
    out: dict[str, Any] = {"splits": {}, "warnings": []}
    shapes, mappings = {}, {}
    for split in ("train", "test"):
        folder = split_folder(root, split)
        c2i, names, labels = scan_imagefolder(folder)
        first = folder / names[0]
        try:
            with Image.open(first) as im:
                mode = im.mode
        except OSError as e:
            raise DataError(f"cannot read image {first}: {e}") from None
        a = decode_image(first, target_mode(mode) if d.lazy else None, d.image_size, d.resize)
        shapes[split], mappings[split] = tuple(a.shape), c2i
        limit = d.train_subset if split == "train" else d.test_subset
        out["splits"][split] = {
            "folder": str(folder), "images": len(names), "used": len(names) if limit is None else min(limit, len(names)),
            "classes": len(c2i), "class_to_idx": "class_to_idx.json" if (folder / "class_to_idx.json").is_file()
            else "sorted folder names", "probe": str(first), "probe_mode": mode,
        }
    if mappings["train"] != mappings["test"]:
        raise DataError(f"the train split ({out['splits']['train']['folder']}) and the test split "
                        f"({out['splits']['test']['folder']}) have different classes or class indices; give both "
                        "the same class folders (or the same class_to_idx.json)")
    if shapes["train"] != shapes["test"]:
        raise DataError(f"train images decode to {shapes['train']} but test images to {shapes['test']}; set "
                        "data.image_size so both splits are resized to one size")
    if out["splits"]["train"]["folder"] == out["splits"]["test"]["folder"]:
        out["warnings"].append(f"no train/ and test/ (or val/) folders in {root}: the same images serve as the "
                               "training and the test split")
    if d.image_size is None:
        out["warnings"].append("data.image_size is not set: every image must have the size of the probed one "
                               f"({shapes['train'][2]}x{shapes['train'][1]})"
                               + ("; a different one stops the run when it is decoded" if d.lazy else ""))
    if not d.lazy:
        gb = out["splits"]["train"]["used"] * math.prod(shapes["train"]) / 1e9
        if gb > 8:
            out["warnings"].append(f"the training split needs about {gb:.1f} GB in memory; set data.lazy: true")
    out["shape"] = shapes["train"]
    out["class_names"] = [c for c, _ in sorted(mappings["train"].items(), key=lambda kv: kv[1])]
    return out


def _probe_in_memory(cfg: Config) -> dict:
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    if train.classes != test.classes:
        raise DataError("the train and test splits have different classes")
    return {"splits": {s: {"folder": cfg.data.root or "(default location)", "images": len(ds), "used": len(ds),
                           "classes": ds.num_classes} for s, ds in (("train", train), ("test", test))},
            "warnings": [], "shape": train.shape, "class_names": list(train.classes)}


def _done(path: Path) -> bool:
    return path.is_file()


def plan_run(cfg: Config) -> dict:
    """Check ``cfg`` and its paths and plan what ``labeldistill run`` would do; nothing is trained or written.

    Returns:
        A dict with ``data`` (splits, image shape, classes, warnings), ``teacher`` (model, parameters, bytes,
        checkpoint), ``stages`` (one entry per stage with its work counts and whether its output already
        exists in the run directory), ``recover``, ``relabel``, ``labels`` (one entry per label store:
        kept steps, entries, bytes in this project's layout by component, and the LPLD reference-layout
        estimate), ``validate`` (one entry per student run) and ``storage`` (images, class statistics,
        teacher, labels; all in bytes).

    Raises:
        ConfigError / RegistryError: an option the dataset does not support, unknown model, bad squeeze option.
        DataError: missing data root, split folder, class folder or image; unreadable image; train and test
            classes differ; teacher checkpoint missing, unreadable or not matching the model.
        LabelDistillError: the teacher has no BatchNorm layer, or the run directory is incompatible.
    """
    check_dataset_options(cfg.data.dataset, data_options(cfg))
    check_squeeze_options(cfg.squeeze)
    layout = RunLayout(cfg.run_path)
    _check_run_dir(layout.root)
    data = _probe_imagefolder(cfg) if cfg.data.dataset == "imagefolder" else _probe_in_memory(cfg)
    shape = tuple(int(v) for v in data["shape"])
    names = data["class_names"]
    C = len(names)
    n_train, n_test = data["splits"]["train"]["used"], data["splits"]["test"]["used"]

    sc = cfg.squeeze
    model = build_model(sc.model, C, shape)
    bns = bn_layers(model)
    if not bns:
        raise LabelDistillError(f"teacher '{sc.model.name}' has no BatchNorm2d layer: BN-statistics recovery "
                                "needs one (e.g. convnet with norm=batch, resnet18)")
    sd = model.state_dict()
    teacher_bytes = sum(v.numel() * v.element_size() for v in sd.values())
    teacher = {"model": sc.model.name, "args": dict(sc.model.args), "parameters": sum(p.numel() for p in model.parameters()),
               "bytes": teacher_bytes, "bn_layers": len(bns), "bn_channels": sum(b.num_features for b in bns),
               "checkpoint": sc.checkpoint}
    if sc.checkpoint:
        try:
            model.load_state_dict(load_state_dict_file(sc.checkpoint))
        except RuntimeError as e:
            lines = str(e).splitlines()
            raise DataError(f"teacher checkpoint {sc.checkpoint} does not fit model '{sc.model.name}' {sc.model.args} "
                            f"with {C} classes: {lines[1].strip() if len(lines) > 1 else e}") from None
    del model, sd

    stages = []
    spe_sq = math.ceil(n_train / sc.batch_size)
    stages.append({
        "stage": "squeeze", "done": _done(layout.teacher_dir / "teacher.json"),
        "work": (f"load {sc.checkpoint} (no training)" if sc.checkpoint else
                 f"train {sc.model.name} for {sc.epochs} epochs × {spe_sq} steps of {sc.batch_size} "
                 f"({sc.epochs * n_train:,} images" + (f", {sc.warmup_epochs} warm-up epochs" if sc.warmup_epochs else "")
                 + ")") + f"; evaluate on {n_test:,} test images",
        "steps": 0 if sc.checkpoint else sc.epochs * spe_sq,
        "images": (0 if sc.checkpoint else sc.epochs * n_train) + n_test,
    })
    cs_batches = math.ceil(n_train / cfg.class_stats.batch_size)
    stages.append({"stage": "class-stats", "done": _done(layout.class_stats_dir / "class_stats.json"),
                   "work": f"1 eval pass: {cs_batches} batches, {n_train:,} images", "steps": cs_batches,
                   "images": n_train})

    rc = cfg.recover
    n_syn = C * rc.ipc
    recover_rows = []
    for mode in rc.modes:
        v = resolve_variant(mode, rc.variants)
        row: dict[str, Any] = {"mode": mode, "source": v["source"], "images": n_syn,
                               "done": _done(layout.images_dir(mode) / "images.json")}
        if v["source"] == "synthesis":
            batches = plan_batches(v["batching"], C, rc.ipc, rc.batch_size)
            groups = math.ceil(len(batches) / rc.vectorize)
            row.update(batching=v["batching"], bn_targets=v["bn_targets"], crop_schedule=v["crop_schedule"],
                       batches=len(batches), batch_size=max(len(b) for b in batches), teacher_passes=groups * rc.iterations,
                       image_iterations=n_syn * rc.iterations,
                       work=f"{len(batches)} batches of ≤{max(len(b) for b in batches)} ({v['batching']}, "
                            f"{v['bn_targets']} BN targets) × {rc.iterations} iterations, {rc.vectorize} batch(es) "
                            f"per forward: {groups * rc.iterations:,} teacher forward+backward passes, "
                            f"{n_syn * rc.iterations:,} image-iterations")
        elif v["source"] == "rded":
            scored = n_syn * rc.rded_factor ** 2 * rc.rded_candidates
            row.update(teacher_passes=math.ceil(scored / 512), image_iterations=scored,
                       work=f"score {scored:,} real crops, stitch {rc.rded_factor}×{rc.rded_factor} patches")
        else:
            row.update(teacher_passes=0, image_iterations=0, work=f"pick {rc.ipc} real training images per class")
        recover_rows.append(row)
        stages.append({"stage": f"recover[{mode}]", "done": row["done"], "work": row["work"],
                       "steps": row["teacher_passes"], "images": n_syn})

    rl = cfg.relabel
    plan = StepPlan(n_syn, rl.batch_size, rl.epochs, cfg.seed)
    all_steps = list(range(plan.total_steps))
    generated = all_steps if rl.only_kept is None else select_steps(all_steps, rl.only_kept, "random", cfg.seed)
    hw = (shape[1], shape[2])
    cutmix = rl.cutmix > 0
    relabel = {"images": n_syn, "epochs": rl.epochs, "batch_size": rl.batch_size,
               "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps,
               "generated_steps": len(generated), "only_kept": rl.only_kept, "input_size": list(hw),
               "cutmix": rl.cutmix, "logits": rl.logits}
    gen_entries = sum(_step_size(plan, g) for g in generated)
    for mode in rc.modes:
        store = layout.full_store(mode) if rl.only_kept is None else layout.pruned_store(mode, rl.only_kept,
                                                                                        logits=rl.logits)
        stages.append({"stage": f"relabel[{mode}]", "done": _done(store / "manifest.json"),
                       "work": f"{len(generated):,} steps of {rl.batch_size} ({gen_entries:,} teacher forwards of "
                               f"augmented images)" + (f", only the steps kept at {rl.only_kept:g}×" if rl.only_kept else ""),
                       "steps": len(generated), "images": gen_entries})

    labels = []
    if rl.only_kept is None:
        full = estimate_store_bytes(all_steps, plan, C, hw, cutmix, rl.logits, rl.steps_per_shard, names)
        labels.append({"tag": "full", "factor": 1.0, "strategy": "none", "logits": rl.logits, "granularity": "-",
                       "kept_steps": full["steps"], "exact_steps": True, **full})
    for f, st, lg, gr in label_variants(cfg):
        if rl.only_kept is not None:
            est = estimate_store_bytes(generated, plan, C, hw, cutmix, lg, rl.steps_per_shard, names)
            exact = True
        else:
            metric, _ = parse_strategy(st)
            if gr == "epoch":
                keep_e = set(select_epochs(rl.epochs, f, cfg.seed))
                kept = [g for g in all_steps if g // plan.steps_per_epoch in keep_e]
                exact = True
            elif metric == "random":
                kept = select_steps(all_steps, f, "random", cfg.seed)
                exact = True
            else:  # which steps a metric keeps depends on the logits: same count, sizes as a random choice
                kept = select_steps(all_steps, f, "random", cfg.seed)
                exact = False
            est = estimate_store_bytes(kept, plan, C, hw, cutmix, lg, None, names)
        labels.append({"tag": label_tag(f, st, lg, gr), "factor": f, "strategy": st, "logits": lg, "granularity": gr,
                       "kept_steps": est["steps"], "exact_steps": exact, **est})

    validate = []
    vc = cfg.validate
    epochs = vc.epochs or rl.epochs
    for mode in rc.modes:
        for f, st, lg, gr in label_variants(cfg):
            tag = label_tag(f, st, lg, gr)
            steps = epochs * plan.steps_per_epoch
            validate.append({"mode": mode, "store": tag, "student": vc.model.name, "epochs": epochs, "steps": steps,
                             "images": epochs * n_syn, "eval_images": n_test,
                             "done": _done(layout.validate_file(mode, f, st, lg, gr))})
    stages.append({"stage": "prune", "done": all(_done(layout.pruned_store(m, f, st, lg, gr) / "manifest.json")
                                                 for m in rc.modes for f, st, lg, gr in label_variants(cfg)),
                   "work": f"{len(label_variants(cfg))} store(s) per mode: "
                           + ", ".join(label_tag(*v) for v in label_variants(cfg)),
                   "steps": 0, "images": 0})
    stages.append({"stage": "validate", "done": all(r["done"] for r in validate),
                   "work": f"{len(validate)} student run(s) of {epochs} epochs × {plan.steps_per_epoch} steps "
                           f"({vc.model.name}), each evaluated on {n_test:,} test images",
                   "steps": sum(r["steps"] for r in validate), "images": sum(r["images"] for r in validate)})

    raw = math.prod(shape)
    png = png_upper_bound(*shape)
    ch = teacher["bn_channels"]
    class_stats_bytes = 4 * ((2 * C + 4) * ch + C)
    storage = {
        "image_raw_bytes": raw, "image_png_upper_bound": png,
        "images_per_mode_raw": n_syn * raw, "images_per_mode_png_upper_bound": n_syn * png,
        "images_total_png_upper_bound": n_syn * png * len(rc.modes),
        "class_stats_bytes": class_stats_bytes, "teacher_bytes": teacher_bytes,
        "labels_per_mode": {r["tag"]: r["total"] for r in labels},
        "labels_total": sum(r["total"] for r in labels) * len(rc.modes),
    }
    return {"name": cfg.name, "run_dir": str(layout.root), "run_dir_exists": layout.root.exists(),
            "dataset": cfg.data.dataset, "lazy": cfg.data.lazy, "workers": cfg.data.workers, "data": data,
            "image_shape": list(shape), "num_classes": C, "teacher": teacher, "stages": stages,
            "recover": recover_rows, "relabel": relabel, "labels": labels, "validate": validate, "storage": storage}


def _step_size(plan: StepPlan, g: int) -> int:
    """Images in global step ``g`` (the last step of an epoch holds the remainder)."""
    if g % plan.steps_per_epoch == plan.steps_per_epoch - 1:
        return plan.n - (plan.steps_per_epoch - 1) * plan.b
    return plan.b


def format_plan(p: dict) -> str:
    """Human-readable text of :func:`plan_run`'s dict."""
    from .report import human_bytes

    d = p["data"]
    c, h, w = p["image_shape"]
    lines = [f"dry run of '{p['name']}': nothing trained, nothing written",
             f"run directory: {p['run_dir']}" + (" (exists; finished stages are skipped)" if p["run_dir_exists"] else
                                                 " (not created yet)"),
             f"data: {p['dataset']}" + (" (lazy: decoded on the fly by "
                                        f"{p['workers']} DataLoader worker(s))" if p["lazy"] else " (in memory)")
             + f", {p['num_classes']} classes, images {c}×{h}×{w}"]
    for split, s in d["splits"].items():
        extra = f", class order from {s['class_to_idx']}, probed {s['probe']} ({s['probe_mode']})" if "probe" in s else ""
        lines.append(f"  {split}: {s['folder']}: {s['images']:,} images, {s['used']:,} used{extra}")
    for wmsg in d["warnings"]:
        lines.append(f"  warning: {wmsg}")
    t = p["teacher"]
    lines.append(f"teacher: {t['model']} {t['args']}, {t['parameters']:,} parameters ({human_bytes(t['bytes'])}), "
                 f"{t['bn_layers']} BN layers / {t['bn_channels']:,} channels"
                 + (f"; checkpoint {t['checkpoint']} fits" if t["checkpoint"] else "; trained from scratch"))
    lines.append("")
    lines.append("planned work:")
    for s in p["stages"]:
        lines.append(f"  {'[done] ' if s['done'] else ''}{s['stage']}: {s['work']}")
    rl = p["relabel"]
    lines.append(f"  relabel plan: {rl['images']:,} images × {rl['epochs']} epochs, batch {rl['batch_size']} → "
                 f"{rl['steps_per_epoch']:,} steps/epoch, {rl['total_steps']:,} steps, "
                 f"{rl['generated_steps']:,} generated; input {rl['input_size'][0]}×{rl['input_size'][1]}, "
                 f"CutMix p={rl['cutmix']:g}, logits {rl['logits']}")
    lines.append("")
    st = p["storage"]
    lines.append("storage estimate (per recover mode unless noted):")
    lines.append(f"  images: {human_bytes(st['images_per_mode_png_upper_bound'])} as PNG (upper bound: incompressible "
                 f"pixels, {st['image_png_upper_bound']:,} B per image; raw uint8 {st['image_raw_bytes']:,} B per image "
                 f"= {human_bytes(st['images_per_mode_raw'])})")
    lines.append(f"  class statistics: {human_bytes(st['class_stats_bytes'])} (float32; once per run)")
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
